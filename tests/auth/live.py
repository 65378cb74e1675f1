"""Apps on committed data, each request on its own pooled connection: races forced in PostgreSQL.

The suite's savepoint harness runs every request on one shared connection, so two transactions
never meet there. These helpers give a test its own freshly migrated database (C collation, so
nothing else's rows are in it and lower() lowers ASCII only), an app with a real pool on it, a
second connection to hold a lock from, and a way to wait until a request queues on that lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from alembic import command
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.db import Database
from service.core.migrations import alembic_config
from service.main import create_app
from service.users.models import User
from tests.conftest import USER_PASSWORD, bearer, make_settings
from tests.support.clients import asgi_client
from tests.support.postgres import create_database, drop_database

LOGIN = "/api/v1/login/access-token"
REFRESH = "/api/v1/login/refresh"


async def create_c_collation_database(server_url: str, prefix: str) -> str:
    """A migrated database whose collation is C whatever the server's default is."""
    url = await create_database(server_url, prefix, c_collation=True)
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
    return url


@asynccontextmanager
async def own_database(server_url: str, prefix: str) -> AsyncIterator[str]:
    url = await create_c_collation_database(server_url, prefix)
    try:
        yield url
    finally:
        await drop_database(server_url, url)


@dataclass
class Live:
    """A client on an app with a real pool over a database only this test module uses."""

    app: FastAPI
    client: httpx.AsyncClient
    db: Database
    counter: list[int] = field(default_factory=lambda: [0])

    async def user(
        self, email: str | None = None, password: str = USER_PASSWORD, **fields: Any
    ) -> User:
        self.counter[0] += 1
        user = User(
            email=email or f"live{self.counter[0]}@example.com",
            hashed_password=await self.app.state.passwords.hash(password),
            **fields,
        )
        async with self.db.sessionmaker() as session:
            session.add(user)
            await session.commit()
        return user

    def headers(self, user: User) -> dict[str, str]:
        return bearer(self.app, user)

    async def login(self, email: str, password: str = USER_PASSWORD) -> dict[str, Any]:
        response = await self.client.post(LOGIN, data={"username": email, "password": password})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def refresh(self, token: str) -> httpx.Response:
        return await self.client.post(REFRESH, json={"refresh_token": token})

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.db.engine.connect() as connection:
            return await connection.scalar(text(sql), params)

    @asynccontextmanager
    async def holding(self, sql: str, **params: Any) -> AsyncIterator[AsyncConnection]:
        """A second connection whose open transaction ran `sql` (e.g. a SELECT ... FOR UPDATE)
        and holds what it locked until the block ends (rolled back unless the test commits)."""
        async with self.db.engine.connect() as connection:
            await connection.begin()
            await connection.execute(text(sql), params)
            try:
                yield connection
            finally:
                if connection.in_transaction():
                    await connection.rollback()

    async def lock_waiters(self, *statement_prefixes: str) -> int:
        """How many backends of this database wait on a lock while running a statement that
        starts with one of the prefixes (case-insensitive)."""
        count = await self.scalar(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND query ILIKE ANY(CAST(:patterns AS text[]))",
            patterns=[f"{prefix}%" for prefix in statement_prefixes],
        )
        return int(count)

    async def wait_for_lock_waiters(
        self, count: int, *statement_prefixes: str, unless_done: asyncio.Future[Any] | None = None
    ) -> None:
        """Return once `count` backends wait on a lock in one of those statements (or once
        `unless_done` has finished: a request that takes no such lock does not queue)."""
        deadline = time.monotonic() + 5
        waiting = 0
        while time.monotonic() < deadline:
            if unless_done is not None and unless_done.done():
                return
            waiting = await self.lock_waiters(*statement_prefixes)
            if waiting >= count:
                return
            await asyncio.sleep(0.01)
        pytest.fail(f"{waiting} of {count} backends waited on a lock in {statement_prefixes!r}")


@asynccontextmanager
async def live_app(database_url: str, **overrides: Any) -> AsyncIterator[Live]:
    """The app and its pool; every account (and so every token, item, link) and every throttle
    counter is deleted afterwards, so each test starts from an empty database."""
    settings = make_settings(database_url, **overrides)
    db = Database.from_settings(settings)
    app = create_app(settings, database=db)
    try:
        async with asgi_client(app) as client:
            yield Live(app=app, client=client, db=db)
    finally:
        async with db.engine.begin() as connection:
            await connection.execute(text("DELETE FROM users"))
            await connection.execute(text("DELETE FROM login_throttle"))
        await db.dispose()
        app.state.passwords.close()


def own_database_fixture(prefix: str) -> Any:
    """A module-scoped fixture named `database`: own_database(prefix) for the whole module
    (migrating takes about a second, so the module's tests share it and live_app empties it)."""

    @pytest.fixture(scope="module", name="database")
    async def database(pg_server_url: str) -> AsyncIterator[str]:
        async with own_database(pg_server_url, prefix) as url:
            yield url

    return database


def live_fixture(**overrides: Any) -> Any:
    """A fixture named `live`: live_app on the module's `database` with those settings."""

    @pytest.fixture(name="live")
    async def live(database: str) -> AsyncIterator[Live]:
        async with live_app(database, **overrides) as app:
            yield app

    return live
