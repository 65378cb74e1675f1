"""Queries on the users table."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Uuid, bindparam, delete, func, update
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.core.statements import compile_statement, fetch_one
from service.users.models import User, UserRecord, normalize_email

EMAIL_UNIQUE_INDEX = "uq_users_email_lower"
# The transaction-level advisory lock every change that removes an active superuser takes before
# counting the others: two such changes cannot both see "another one is left". A fixed key of its
# own (service.core.migrations uses another one).
SUPERUSERS_LOCK_KEY = 0x6B65656C2D7375  # "keel-su"


class EmailTaken(Exception):
    """The unique email index refused the write (two requests raced, or a plain duplicate)."""


def is_email_conflict(error: IntegrityError) -> bool:
    return EMAIL_UNIQUE_INDEX in str(error.orig)


_users = User.metadata.tables["users"]
# Every authenticated request runs this: compiled once, run on the driver connection
# (core/statements.py), no ORM object built. A plain read: in a write it runs before the
# transaction begins, so a write of one statement needs no BEGIN (execute_standalone).
_USER_RECORD = compile_statement(
    sa_select(
        _users.c.email,
        _users.c.full_name,
        _users.c.is_active,
        _users.c.is_superuser,
        _users.c.created_at,
    ).where(_users.c.id == bindparam("user_id", type_=Uuid)),
    plain_read=True,
)


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


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


async def get_user_by_email(
    session: AsyncSession, email: str, *, lock: bool = False
) -> User | None:
    """The account of this address in any case or Unicode form. lock=True holds the row until
    commit with FOR NO KEY UPDATE: it serialises with other writers of the row but, unlike FOR
    UPDATE, not with inserts of rows that reference it (their foreign-key check)."""
    statement = select(User).where(
        func.lower(col(User.email)) == func.lower(normalize_email(email))
    )
    if lock:
        statement = statement.with_for_update(key_share=True).execution_options(
            populate_existing=True
        )
    result = await session.exec(statement)
    return result.first()


async def list_users(session: AsyncSession, *, skip: int, limit: int) -> tuple[Sequence[User], int]:
    count = (await session.exec(select(func.count()).select_from(User))).one()
    rows = await session.exec(
        select(User)
        .order_by(col(User.created_at).desc(), col(User.id).desc())
        .offset(skip)
        .limit(limit)
    )
    return rows.all(), count


async def add_user(session: AsyncSession, user: User) -> User:
    """Insert and flush; a unique-email violation rolls back to a savepoint as EmailTaken."""
    user.email = normalize_email(user.email)
    try:
        async with session.begin_nested():
            session.add(user)
    except IntegrityError as error:
        if is_email_conflict(error):
            raise EmailTaken from error
        raise
    return user


async def save_user(session: AsyncSession, user: User, changes: dict[str, Any]) -> User:
    if isinstance(changes.get("email"), str):
        changes = {**changes, "email": normalize_email(changes["email"])}
    try:
        async with session.begin_nested():
            for field, value in changes.items():
                setattr(user, field, value)
            session.add(user)
    except IntegrityError as error:
        if is_email_conflict(error):
            raise EmailTaken from error
        raise
    return user


async def replace_password(
    session: AsyncSession, user_id: uuid.UUID, old_hash: str, new_hash: str
) -> bool:
    """Store new_hash only if old_hash is still the stored one: false when the password changed
    (or the user went) since old_hash was read, so two changes cannot both succeed."""
    result = await session.exec(
        update(User)
        .where(col(User.id) == user_id, col(User.hashed_password) == old_hash)
        .values(hashed_password=new_hash)
        .returning(col(User.id))
    )
    return result.first() is not None


async def bump_credentials_generation(session: AsyncSession, user_id: uuid.UUID) -> None:
    await session.exec(
        update(User)
        .where(col(User.id) == user_id)
        .values(credentials_generation=col(User.credentials_generation) + 1)
    )


async def lock_superusers(session: AsyncSession) -> None:
    """Until commit: the only transaction that may remove an active superuser."""
    await session.exec(select(func.pg_advisory_xact_lock(SUPERUSERS_LOCK_KEY)))


async def count_other_active_superusers(session: AsyncSession, user_id: uuid.UUID) -> int:
    result = await session.exec(
        select(func.count())
        .select_from(User)
        .where(col(User.is_superuser), col(User.is_active), col(User.id) != user_id)
    )
    return result.one()


async def delete_user(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Items go with the user through the ON DELETE CASCADE foreign key."""
    await session.exec(delete(User).where(col(User.id) == user_id))


async def insert_user_if_absent(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Race-free create for seeding: true when this call inserted the row."""
    if isinstance(values.get("email"), str):
        values = {**values, "email": normalize_email(values["email"])}
    statement = (
        insert(User)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[func.lower(col(User.email))])
        .returning(col(User.id))
    )
    result = await session.exec(statement)
    return result.first() is not None
