"""Items against committed data: an app whose requests each get their own real connection.

The suite's savepoint harness runs every request on ONE shared connection, so it cannot show two
transactions meeting in PostgreSQL (a unique-index wait, a row lock). These fixtures can: they
commit for real on the test database and delete what they committed afterwards.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import delete, text
from sqlmodel import col

from service.core.db import Database
from service.main import create_app
from service.users.models import User
from tests.conftest import bearer, make_settings
from tests.support.clients import asgi_client


@dataclass(frozen=True)
class Committed:
    """A client on an app with a real pool, its database, and a committed user with a token."""

    client: httpx.AsyncClient
    db: Database
    user: User
    headers: dict[str, str]


@pytest.fixture
async def committed(database_url: str) -> AsyncIterator[Committed]:
    settings = make_settings(database_url)
    db = Database.from_settings(settings)
    app = create_app(settings, database=db)
    user = User(email=f"committed-{uuid.uuid4().hex[:12]}@example.com", hashed_password="-")
    async with db.sessionmaker() as session:
        session.add(user)
        await session.commit()
    try:
        async with asgi_client(app) as client:
            yield Committed(client=client, db=db, user=user, headers=bearer(app, user))
    finally:
        async with db.sessionmaker() as session:  # items and keys go with the user (CASCADE)
            await session.exec(delete(User).where(col(User.id) == user.id))
            await session.commit()
        await db.dispose()


async def wait_until_blocked_on_lock(db: Database, statement_prefix: str) -> None:
    """Return once a backend of this database waits on a lock while running that statement."""
    deadline = time.monotonic() + 3
    async with db.engine.connect() as connection:
        while time.monotonic() < deadline:
            waiting = await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    " AND query ILIKE :prefix"
                ),
                {"prefix": f"{statement_prefix}%"},
            )
            await connection.rollback()  # a fresh snapshot of pg_stat_activity each time
            if waiting:
                return
            await asyncio.sleep(0.02)
    pytest.fail(f"no backend started waiting on a lock in {statement_prefix!r}")
