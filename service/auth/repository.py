"""Queries on the auth tables: refresh tokens, password-reset tokens, login-throttle counters."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, literal, update
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.auth.models import LoginThrottle, PasswordResetToken, RefreshToken
from service.core.tables import purge_batch

# -- refresh tokens


async def add_refresh_token(session: AsyncSession, token: RefreshToken) -> RefreshToken:
    session.add(token)
    await session.flush()
    return token


async def lock_refresh_token(session: AsyncSession, token_hash: str) -> RefreshToken | None:
    """The row for this digest, locked until commit: two uses of one token are serialised,
    so exactly one of them rotates it and the other is seen as a reuse."""
    result = await session.exec(
        select(RefreshToken)
        .where(col(RefreshToken.token_hash) == token_hash)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return result.first()


async def mark_rotated(
    session: AsyncSession, token: RefreshToken, successor_id: uuid.UUID, now: datetime
) -> None:
    token.rotated_at = now
    token.replaced_by = successor_id
    session.add(token)
    await session.flush()


async def revoke_family(session: AsyncSession, family_id: uuid.UUID, now: datetime) -> int:
    result = await session.exec(
        update(RefreshToken)
        .where(col(RefreshToken.family_id) == family_id, col(RefreshToken.revoked_at).is_(None))
        .values(revoked_at=now)
    )
    return int(result.rowcount)


async def revoke_user_refresh_tokens(
    session: AsyncSession, user_id: uuid.UUID, now: datetime
) -> int:
    result = await session.exec(
        update(RefreshToken)
        .where(col(RefreshToken.user_id) == user_id, col(RefreshToken.revoked_at).is_(None))
        .values(revoked_at=now)
    )
    return int(result.rowcount)


async def purge_expired_refresh_tokens(session: AsyncSession, before: datetime, limit: int) -> None:
    """Delete up to `limit` tokens that expired before `before` (rows others lock are skipped)."""
    expired = col(RefreshToken.expires_at) < before
    await session.exec(purge_batch(RefreshToken, (col(RefreshToken.id),), expired, limit))


# -- password-reset tokens


async def count_live_reset_tokens(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> int:
    result = await session.exec(
        select(func.count())
        .select_from(PasswordResetToken)
        .where(
            col(PasswordResetToken.user_id) == user_id,
            col(PasswordResetToken.used_at).is_(None),
            col(PasswordResetToken.expires_at) > now,
        )
    )
    return result.one()


async def add_reset_token(session: AsyncSession, token: PasswordResetToken) -> PasswordResetToken:
    session.add(token)
    await session.flush()
    return token


async def lock_reset_token(session: AsyncSession, token_hash: str) -> PasswordResetToken | None:
    result = await session.exec(
        select(PasswordResetToken)
        .where(col(PasswordResetToken.token_hash) == token_hash)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return result.first()


async def spend_user_reset_tokens(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> None:
    """Every outstanding reset token of the user stops working (used or cancelled)."""
    await session.exec(
        update(PasswordResetToken)
        .where(
            col(PasswordResetToken.user_id) == user_id, col(PasswordResetToken.used_at).is_(None)
        )
        .values(used_at=now)
    )


async def purge_expired_reset_tokens(session: AsyncSession, before: datetime, limit: int) -> None:
    expired = col(PasswordResetToken.expires_at) < before
    await session.exec(
        purge_batch(PasswordResetToken, (col(PasswordResetToken.id),), expired, limit)
    )


# -- login throttle


@dataclass(frozen=True, slots=True)
class ThrottleCount:
    scope: str
    key: str
    failures: int
    window_started_at: datetime
    now: datetime


async def count_attempt(
    session: AsyncSession, keys: Sequence[tuple[str, str]], window: timedelta
) -> list[ThrottleCount]:
    """Count one attempt against every (scope, key) in one atomic upsert, on the database clock.

    A window that has ended starts again at 1. Concurrent attempts on any replica each get their
    own count (the row lock orders them), so N parallel guesses cannot all see "under the limit".
    """
    now = func.statement_timestamp()
    failures, started = col(LoginThrottle.failures), col(LoginThrottle.window_started_at)
    ended = started <= now - literal(window)
    rows = [{"scope": s, "key": k, "failures": 1, "window_started_at": now} for s, k in keys]
    statement = (
        insert(LoginThrottle)
        .values(rows)
        .on_conflict_do_update(
            index_elements=[col(LoginThrottle.scope), col(LoginThrottle.key)],
            set_={
                "failures": case((ended, 1), else_=failures + 1),
                "window_started_at": case((ended, now), else_=started),
            },
        )
        .returning(col(LoginThrottle.scope), col(LoginThrottle.key), failures, started, now)
    )
    result = await session.exec(statement)
    return [ThrottleCount(*row) for row in result.all()]


def _this_counter(scope: str, key: str) -> Any:
    return (col(LoginThrottle.scope) == scope) & (col(LoginThrottle.key) == key)


async def forget_attempt(session: AsyncSession, scope: str, key: str) -> None:
    """Take back one counted attempt (a login that succeeded)."""
    failures = col(LoginThrottle.failures)
    await session.exec(
        update(LoginThrottle)
        .where(_this_counter(scope, key), failures > 0)
        .values(failures=failures - 1)
    )


async def reset_counter(session: AsyncSession, scope: str, key: str) -> None:
    await session.exec(delete(LoginThrottle).where(_this_counter(scope, key)))


async def purge_ended_windows(session: AsyncSession, window: timedelta, limit: int) -> None:
    """Delete up to `limit` counters whose window ended; bounded work, whatever the table holds."""
    ended = col(LoginThrottle.window_started_at) < func.statement_timestamp() - literal(window)
    key = (col(LoginThrottle.scope), col(LoginThrottle.key))
    await session.exec(purge_batch(LoginThrottle, key, ended, limit))
