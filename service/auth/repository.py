"""Queries on the auth tables (refresh tokens, password-reset tokens, login-throttle counters):
named statements compiled once from the tables, run on the driver (core/statements.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import (
    DateTime,
    Interval,
    Table,
    Uuid,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql.elements import BindParameter, ColumnClause
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from service.auth.models import (
    LoginThrottle,
    PasswordResetToken,
    RefreshToken,
    RefreshTokenRow,
    ResetTokenRow,
)
from service.core.statements import (
    Statement,
    bound_columns,
    compile_statement,
    execute,
    fetch,
    fetch_one,
    row_columns,
    rows_affected,
)
from service.core.tables import purge_batch

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

refresh_tokens: Table = RefreshToken.metadata.tables["refresh_tokens"]
reset_tokens: Table = PasswordResetToken.metadata.tables["password_reset_tokens"]
login_throttle: Table = LoginThrottle.metadata.tables["login_throttle"]

_USER_ID = bindparam("user_id", type_=Uuid)
_NOW = bindparam("now", type_=DateTime(timezone=True))
_LIMIT: BindParameter[int] = bindparam("limit")
_ONE: ColumnClause[int] = literal_column("1")

# -- refresh tokens

_ADD_REFRESH_TOKEN = compile_statement(
    insert(refresh_tokens).values(
        bound_columns(
            refresh_tokens,
            "id",
            "user_id",
            "family_id",
            "credentials_generation",
            "token_hash",
            "created_at",
            "expires_at",
        )
    )
)


async def add_refresh_token(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    family_id: uuid.UUID,
    credentials_generation: int,
    token_hash: str,
    created_at: datetime,
    expires_at: datetime,
) -> uuid.UUID:
    """Store a new token of the family; its id."""
    token_id = uuid.uuid4()
    await execute(
        session,
        _ADD_REFRESH_TOKEN,
        id=token_id,
        user_id=user_id,
        family_id=family_id,
        credentials_generation=credentials_generation,
        token_hash=token_hash,
        created_at=created_at,
        expires_at=expires_at,
    )
    return token_id


def _lock_by_digest(table: Table, row_type: type[DataclassInstance]) -> Statement:
    """The token row of a digest, locked until commit (FOR UPDATE), as `row_type`."""
    return compile_statement(
        select(*row_columns(table, row_type))
        .where(table.c.token_hash == bindparam("token_hash"))
        .with_for_update()
    )


_LOCK_REFRESH_TOKEN = _lock_by_digest(refresh_tokens, RefreshTokenRow)


async def lock_refresh_token(session: AsyncSession, token_hash: str) -> RefreshTokenRow | None:
    """The row for this digest, locked until commit: two uses of one token are serialised,
    so exactly one of them rotates it and the other is seen as a reuse."""
    row = await fetch_one(session, _LOCK_REFRESH_TOKEN, token_hash=token_hash)
    return None if row is None else RefreshTokenRow(**row)


_MARK_ROTATED = compile_statement(
    update(refresh_tokens)
    .where(refresh_tokens.c.id == bindparam("token_id", type_=Uuid))
    .values(rotated_at=_NOW, replaced_by=bindparam("successor_id", type_=Uuid))
)


async def mark_rotated(
    session: AsyncSession, token_id: uuid.UUID, successor_id: uuid.UUID, now: datetime
) -> None:
    await execute(session, _MARK_ROTATED, token_id=token_id, successor_id=successor_id, now=now)


def _revoke(where: str) -> Statement:
    column = refresh_tokens.c[where]
    return compile_statement(
        update(refresh_tokens)
        .where(column == bindparam(where, type_=Uuid), refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=_NOW)
    )


_REVOKE_FAMILY = _revoke("family_id")
_REVOKE_USER_TOKENS = _revoke("user_id")


async def revoke_family(session: AsyncSession, family_id: uuid.UUID, now: datetime) -> int:
    return rows_affected(await execute(session, _REVOKE_FAMILY, family_id=family_id, now=now))


async def revoke_user_refresh_tokens(
    session: AsyncSession, user_id: uuid.UUID, now: datetime
) -> int:
    return rows_affected(await execute(session, _REVOKE_USER_TOKENS, user_id=user_id, now=now))


def _purge_expired(model: type[SQLModel], table: Table) -> Statement:
    """Up to `limit` tokens that expired before `before` (rows others lock are skipped)."""
    expired = table.c.expires_at < bindparam("before", type_=DateTime(timezone=True))
    return compile_statement(purge_batch(model, (table.c.id,), expired, _LIMIT))


_PURGE_REFRESH_TOKENS = _purge_expired(RefreshToken, refresh_tokens)


async def purge_expired_refresh_tokens(session: AsyncSession, before: datetime, limit: int) -> None:
    """Delete up to `limit` tokens that expired before `before` (rows others lock are skipped)."""
    await execute(session, _PURGE_REFRESH_TOKENS, before=before, limit=limit)


# -- password-reset tokens

_COUNT_LIVE_RESET_TOKENS = compile_statement(
    select(func.count())
    .select_from(reset_tokens)
    .where(
        reset_tokens.c.user_id == _USER_ID,
        reset_tokens.c.used_at.is_(None),
        reset_tokens.c.expires_at > _NOW,
    )
)


async def count_live_reset_tokens(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> int:
    row = await fetch_one(session, _COUNT_LIVE_RESET_TOKENS, user_id=user_id, now=now)
    assert row is not None  # an aggregate always returns its row
    return int(row[0])


_ADD_RESET_TOKEN = compile_statement(
    insert(reset_tokens).values(
        bound_columns(reset_tokens, "id", "user_id", "token_hash", "created_at", "expires_at")
    )
)


async def add_reset_token(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    token_hash: str,
    created_at: datetime,
    expires_at: datetime,
) -> None:
    await execute(
        session,
        _ADD_RESET_TOKEN,
        id=uuid.uuid4(),
        user_id=user_id,
        token_hash=token_hash,
        created_at=created_at,
        expires_at=expires_at,
    )


_LOCK_RESET_TOKEN = _lock_by_digest(reset_tokens, ResetTokenRow)


async def lock_reset_token(session: AsyncSession, token_hash: str) -> ResetTokenRow | None:
    row = await fetch_one(session, _LOCK_RESET_TOKEN, token_hash=token_hash)
    return None if row is None else ResetTokenRow(**row)


_SPEND_USER_RESET_TOKENS = compile_statement(
    update(reset_tokens)
    .where(reset_tokens.c.user_id == _USER_ID, reset_tokens.c.used_at.is_(None))
    .values(used_at=_NOW)
)


async def spend_user_reset_tokens(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> None:
    """Every outstanding reset token of the user stops working (used or cancelled)."""
    await execute(session, _SPEND_USER_RESET_TOKENS, user_id=user_id, now=now)


_PURGE_RESET_TOKENS = _purge_expired(PasswordResetToken, reset_tokens)


async def purge_expired_reset_tokens(session: AsyncSession, before: datetime, limit: int) -> None:
    await execute(session, _PURGE_RESET_TOKENS, before=before, limit=limit)


# -- login throttle


@dataclass(frozen=True, slots=True)
class ThrottleCount:
    scope: str
    key: str
    failures: int
    window_started_at: datetime
    now: datetime


_WINDOW = bindparam("window", type_=Interval)


def _count_attempt(keys: int) -> Statement:
    """The upsert for `keys` counters at once (the statement below, one per number of keys)."""
    now = func.statement_timestamp()
    failures, started = login_throttle.c.failures, login_throttle.c.window_started_at
    ended = started <= now - _WINDOW
    rows = [
        {
            "scope": bindparam(f"scope_{n}"),
            "key": bindparam(f"key_{n}"),
            "failures": _ONE,
            "window_started_at": now,
        }
        for n in range(keys)
    ]
    statement = pg_insert(login_throttle).values(rows)
    return compile_statement(
        statement.on_conflict_do_update(
            index_elements=[login_throttle.c.scope, login_throttle.c.key],
            set_={
                "failures": case((ended, _ONE), else_=failures + _ONE),
                "window_started_at": case((ended, now), else_=started),
            },
        ).returning(login_throttle.c.scope, login_throttle.c.key, failures, started, now)
    )


# A login counts two keys (the account and the client), a current-password check one.
_COUNT_ATTEMPT = {keys: _count_attempt(keys) for keys in (1, 2)}


async def count_attempt(
    session: AsyncSession, keys: Sequence[tuple[str, str]], window: timedelta
) -> list[ThrottleCount]:
    """Count one attempt against every (scope, key) in one atomic upsert, on the database clock.

    A window that has ended starts again at 1. Concurrent attempts on any replica each get their
    own count (the row lock orders them), so N parallel guesses cannot all see "under the limit".
    """
    statement = _COUNT_ATTEMPT.get(len(keys))
    if statement is None:
        raise ValueError(f"counts one or two keys at once, not {len(keys)}")
    values: dict[str, object] = {"window": window}
    for n, (scope, key) in enumerate(keys):
        values[f"scope_{n}"], values[f"key_{n}"] = scope, key
    rows = await fetch(session, statement, **values)
    return [ThrottleCount(*row) for row in rows]


_THIS_COUNTER = (login_throttle.c.scope == bindparam("scope")) & (
    login_throttle.c.key == bindparam("key")
)
_FORGET_ATTEMPT = compile_statement(
    update(login_throttle)
    .where(_THIS_COUNTER, login_throttle.c.failures > literal_column("0"))
    .values(failures=login_throttle.c.failures - _ONE)
)


async def forget_attempt(session: AsyncSession, scope: str, key: str) -> None:
    """Take back one counted attempt (a login that succeeded)."""
    await execute(session, _FORGET_ATTEMPT, scope=scope, key=key)


_RESET_COUNTER = compile_statement(delete(login_throttle).where(_THIS_COUNTER))


async def reset_counter(session: AsyncSession, scope: str, key: str) -> None:
    await execute(session, _RESET_COUNTER, scope=scope, key=key)


_PURGE_ENDED_WINDOWS = compile_statement(
    purge_batch(
        LoginThrottle,
        (login_throttle.c.scope, login_throttle.c.key),
        login_throttle.c.window_started_at < func.statement_timestamp() - _WINDOW,
        _LIMIT,
    )
)


async def purge_ended_windows(session: AsyncSession, window: timedelta, limit: int) -> None:
    """Delete up to `limit` counters whose window ended; bounded work, whatever the table holds."""
    await execute(session, _PURGE_ENDED_WINDOWS, window=window, limit=limit)
