"""Queries on the users table."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.users.models import User, UserRecord

EMAIL_UNIQUE_INDEX = "uq_users_email_lower"


class EmailTaken(Exception):
    """The unique email index refused the write (two requests raced, or a plain duplicate)."""


def is_email_conflict(error: IntegrityError) -> bool:
    return EMAIL_UNIQUE_INDEX in str(error.orig)


# Every authenticated request runs this: plain SQL skips statement compilation and the ORM.
_USER_RECORD_SQL = (
    "SELECT email, full_name, is_active, is_superuser, created_at FROM users WHERE id = $1"
)


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def get_user_record(session: AsyncSession, user_id: uuid.UUID) -> UserRecord | None:
    connection = await session.connection()
    row: Sequence[Any] | None = (
        await connection.exec_driver_sql(_USER_RECORD_SQL, (user_id,))
    ).first()
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


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.exec(select(User).where(func.lower(col(User.email)) == email.lower()))
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
    try:
        async with session.begin_nested():
            session.add(user)
    except IntegrityError as error:
        if is_email_conflict(error):
            raise EmailTaken from error
        raise
    return user


async def save_user(session: AsyncSession, user: User, changes: dict[str, Any]) -> User:
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


async def delete_user(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Items go with the user through the ON DELETE CASCADE foreign key."""
    await session.exec(delete(User).where(col(User.id) == user_id))


async def insert_user_if_absent(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Race-free create for seeding: true when this call inserted the row."""
    statement = (
        insert(User)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[func.lower(col(User.email))])
        .returning(col(User.id))
    )
    result = await session.exec(statement)
    return result.first() is not None
