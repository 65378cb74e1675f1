"""Queries on the users table: named statements compiled once from the table, run on the driver.

Users come back as `UserRecord` (what the API may show) or, where the account's own rules need
its credentials, `UserAccount` (core/statements.py runs them; no ORM object is built).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from itertools import combinations
from typing import Any

import asyncpg
from sqlalchemy import (
    BigInteger,
    Table,
    Uuid,
    bindparam,
    delete,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from service.core.statements import (
    Statement,
    bound_columns,
    compile_statement,
    execute,
    execute_standalone,
    fetch,
    fetch_one,
    row_columns,
    rows_affected,
)
from service.core.tables import utcnow
from service.users.models import User, UserAccount, UserRecord, normalize_email

EMAIL_UNIQUE_INDEX = "uq_users_email_lower"
# The transaction-level advisory lock every change that removes an active superuser takes before
# counting the others: two such changes cannot both see "another one is left". A fixed key of its
# own (service.core.migrations uses another one).
SUPERUSERS_LOCK_KEY = 0x6B65656C2D7375  # "keel-su"


class EmailTaken(Exception):
    """The unique email index refused the write (two requests raced, or a plain duplicate)."""


def is_email_conflict(error: IntegrityError) -> bool:
    return EMAIL_UNIQUE_INDEX in str(error.orig)


users: Table = User.metadata.tables["users"]

_PUBLIC = row_columns(users, UserRecord)
_ACCOUNT = row_columns(users, UserAccount)
_USER_ID = bindparam("user_id", type_=Uuid)
_THIS_USER = users.c.id == _USER_ID
# lower() on both sides: the unique index is on lower(email) (see User), so this is its lookup.
_THIS_EMAIL = func.lower(users.c.email) == func.lower(bindparam("email"))


def _record(row: asyncpg.Record) -> UserRecord:
    return UserRecord(**row)  # a row of _PUBLIC columns


def _account(row: asyncpg.Record) -> UserAccount:
    return UserAccount(**row)  # a row of _ACCOUNT columns


# Every authenticated request runs this one: the id is known, so it is not read back. A plain
# read: in a write it runs before the transaction begins, so a write of one statement needs no
# BEGIN (execute_standalone).
_USER_RECORD = compile_statement(
    select(
        users.c.email,
        users.c.full_name,
        users.c.is_active,
        users.c.is_superuser,
        users.c.created_at,
    ).where(_THIS_USER),
    plain_read=True,
)
_ACCOUNT_BY_ID = compile_statement(select(*_ACCOUNT).where(_THIS_USER))
_ACCOUNT_BY_EMAIL = compile_statement(select(*_ACCOUNT).where(_THIS_EMAIL))
# FOR NO KEY UPDATE: serialises with other writers of the row but, unlike FOR UPDATE, not with
# inserts of rows that reference it (their foreign-key check takes KEY SHARE).
_ACCOUNT_BY_EMAIL_LOCKED = compile_statement(
    select(*_ACCOUNT).where(_THIS_EMAIL).with_for_update(key_share=True)
)


async def get_user_record(session: AsyncSession, user_id: uuid.UUID) -> UserRecord | None:
    row = await fetch_one(session, _USER_RECORD, user_id=user_id)
    if row is None:
        return None
    return UserRecord(
        id=user_id,
        email=row[0],
        full_name=row[1],
        is_active=row[2],
        is_superuser=row[3],
        created_at=row[4],
    )


async def get_account(session: AsyncSession, user_id: uuid.UUID) -> UserAccount | None:
    row = await fetch_one(session, _ACCOUNT_BY_ID, user_id=user_id)
    return None if row is None else _account(row)


async def get_account_by_email(
    session: AsyncSession, email: str, *, lock: bool = False
) -> UserAccount | None:
    """The account of this address in any case or Unicode form. lock=True holds the row until
    commit (FOR NO KEY UPDATE)."""
    statement = _ACCOUNT_BY_EMAIL_LOCKED if lock else _ACCOUNT_BY_EMAIL
    row = await fetch_one(session, statement, email=normalize_email(email))
    return None if row is None else _account(row)


_COUNT = compile_statement(select(func.count()).select_from(users))
_PAGE = compile_statement(
    select(*_PUBLIC)
    .order_by(users.c.created_at.desc(), users.c.id.desc())
    .offset(bindparam("skip"))
    .limit(bindparam("limit"))
)


async def list_users(
    session: AsyncSession, *, skip: int, limit: int
) -> tuple[list[UserRecord], int]:
    counted = await fetch_one(session, _COUNT)
    assert counted is not None  # an aggregate always returns its row
    rows = await fetch(session, _PAGE, skip=skip, limit=limit)
    return [_record(row) for row in rows], int(counted[0])


# Every column of a new account, each value named after its column.
_NEW_ACCOUNT_COLUMNS = (
    "id",
    "email",
    "hashed_password",
    "full_name",
    "is_active",
    "is_superuser",
    "created_at",
    "credentials_generation",
)
_INSERT_IF_ABSENT = compile_statement(
    insert(users)
    .values(bound_columns(users, *_NEW_ACCOUNT_COLUMNS))
    .on_conflict_do_nothing(index_elements=[func.lower(users.c.email)])
)


def new_account(
    *,
    email: str,
    hashed_password: str,
    full_name: str | None = None,
    is_active: bool = True,
    is_superuser: bool = False,
) -> UserAccount:
    """An account to store with `add_user`: a fresh id, the email normalised, created now (the
    application's clock, as every timestamp the service writes: accounts created in one
    transaction still sort apart)."""
    return UserAccount(
        id=uuid.uuid4(),
        email=normalize_email(email),
        full_name=full_name,
        is_active=is_active,
        is_superuser=is_superuser,
        created_at=utcnow(),
        hashed_password=hashed_password,
        credentials_generation=0,
    )


async def add_user(session: AsyncSession, account: UserAccount) -> bool:
    """Insert the account unless its email is taken: true when this call inserted the row.
    ON CONFLICT DO NOTHING, so a duplicate, or a race lost to another insert, aborts nothing.
    A whole write by itself (execute_standalone): one round trip in a session with no
    transaction open."""
    values = {column: getattr(account, column) for column in _NEW_ACCOUNT_COLUMNS}
    return rows_affected(await execute_standalone(session, _INSERT_IF_ABSENT, **values)) == 1


# What an account change may set; one statement per combination (31), compiled at import.
SAVED_COLUMNS = ("email", "full_name", "is_active", "is_superuser", "hashed_password")


def _save(columns: tuple[str, ...]) -> Statement:
    changes: dict[str, Any] = {column: bindparam(f"new_{column}") for column in columns}
    return compile_statement(update(users).where(_THIS_USER).values(changes).returning(*_PUBLIC))


_SAVES: dict[tuple[str, ...], Statement] = {
    columns: _save(columns)
    for n in range(1, len(SAVED_COLUMNS) + 1)
    for columns in combinations(SAVED_COLUMNS, n)
}


async def save_user(
    session: AsyncSession, user_id: uuid.UUID, changes: Mapping[str, Any]
) -> UserRecord | None:
    """Store `changes` (columns of SAVED_COLUMNS) and return the account as it now is; None when
    it does not exist. A unique-email violation raises EmailTaken: the transaction is then
    aborted, and the request that made the change fails with it."""
    unknown = changes.keys() - set(SAVED_COLUMNS)
    if unknown:
        raise ValueError(f"not a column an account change sets: {sorted(unknown)}")
    columns = tuple(column for column in SAVED_COLUMNS if column in changes)
    if not columns:
        return await get_user_record(session, user_id)
    values = {f"new_{column}": changes[column] for column in columns}
    if isinstance(values.get("new_email"), str):
        values["new_email"] = normalize_email(values["new_email"])
    try:
        row = await fetch_one(session, _SAVES[columns], user_id=user_id, **values)
    except IntegrityError as error:
        if is_email_conflict(error):
            raise EmailTaken from error
        raise
    return None if row is None else _record(row)


_REPLACE_PASSWORD = compile_statement(
    update(users)
    .where(_THIS_USER, users.c.hashed_password == bindparam("old_hash"))
    .values(hashed_password=bindparam("new_hash"))
    .returning(users.c.id)
)


async def replace_password(
    session: AsyncSession, user_id: uuid.UUID, old_hash: str, new_hash: str
) -> bool:
    """Store new_hash only if old_hash is still the stored one: false when the password changed
    (or the user went) since old_hash was read, so two changes cannot both succeed."""
    row = await fetch_one(
        session, _REPLACE_PASSWORD, user_id=user_id, old_hash=old_hash, new_hash=new_hash
    )
    return row is not None


_BUMP_GENERATION = compile_statement(
    update(users)
    .where(_THIS_USER)
    .values(credentials_generation=users.c.credentials_generation + literal_column("1"))
)


async def bump_credentials_generation(session: AsyncSession, user_id: uuid.UUID) -> None:
    await execute(session, _BUMP_GENERATION, user_id=user_id)


# Not a plain read: taking the lock is the point, and it lasts until the transaction ends.
_LOCK_SUPERUSERS = compile_statement(
    select(func.pg_advisory_xact_lock(bindparam("lock_key", type_=BigInteger)))
)


async def lock_superusers(session: AsyncSession) -> None:
    """Until commit: the only transaction that may remove an active superuser."""
    await execute(session, _LOCK_SUPERUSERS, lock_key=SUPERUSERS_LOCK_KEY)


_COUNT_OTHER_SUPERUSERS = compile_statement(
    select(func.count())
    .select_from(users)
    .where(users.c.is_superuser, users.c.is_active, users.c.id != _USER_ID)
)


async def count_other_active_superusers(session: AsyncSession, user_id: uuid.UUID) -> int:
    row = await fetch_one(session, _COUNT_OTHER_SUPERUSERS, user_id=user_id)
    assert row is not None  # an aggregate always returns its row
    return int(row[0])


_DELETE = compile_statement(delete(users).where(_THIS_USER))


async def delete_user(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Items go with the user through the ON DELETE CASCADE foreign key."""
    await execute(session, _DELETE, user_id=user_id)
