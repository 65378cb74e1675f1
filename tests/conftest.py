"""Suite-wide fixtures: a real PostgreSQL, a migrated test database, and per-test isolation.

Each test runs inside one outer transaction on one connection; the app's sessions join it with
savepoints, so endpoint commits are real to the code under test and vanish at rollback.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from service.core.config import Settings, load_settings
from service.core.db import Database, build_engine
from service.core.migrations import alembic_config
from service.core.telemetry import uninstrument_database
from service.main import create_app, observe_database_pool
from service.users.models import User
from tests.support.clients import _scan_async, asgi_client
from tests.support.postgres import (
    asyncpg_dsn,
    create_database,
    drop_database,
    postgres_server,
)

# Installs missing tools at session start; reports (and refuses) tool skips at the end.
pytest_plugins = ["tests.support.provision"]

SUPERUSER_EMAIL = "admin@example.com"
SUPERUSER_PASSWORD = "admin-password-1"
USER_PASSWORD = "user-password-1"

# Cheap argon2 for speed; tests that need the real cost build their own Settings.
FAST_TEST_SETTINGS: dict[str, Any] = {
    "_env_file": None,
    "environment": "local",
    "secret_key": "test-secret-key-0123456789-abcdefghijklmnop",
    "argon2_memory_kib": 1024,
    "argon2_time_cost": 1,
    "argon2_parallelism": 1,
    "first_superuser": SUPERUSER_EMAIL,
    "first_superuser_password": SUPERUSER_PASSWORD,
    "log_format": "json",
    "db_pool_size": 5,
    "db_max_overflow": 5,
}


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    with postgres_server() as (kind, url):
        print(f"\n[tests] PostgreSQL from: {kind}")
        yield url


@pytest.fixture(scope="session")
async def database_url(pg_server_url: str) -> AsyncIterator[str]:
    """A fresh database migrated with the real Alembic scripts (so every run tests them)."""
    url = await create_database(pg_server_url, "keelson_test")
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
    yield url
    await drop_database(pg_server_url, url)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    return load_settings(**{**FAST_TEST_SETTINGS, "database_url": database_url, **overrides})


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = build_engine(settings)
    yield engine
    await engine.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as connection:
        transaction = await connection.begin()
        try:
            yield connection
        finally:
            await transaction.rollback()


def _savepoint_sessions(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        bind=connection,
        class_=AsyncSession,
        expire_on_commit=False,
        join_transaction_mode="create_savepoint",
    )


@pytest.fixture
async def session(connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    """For arranging data and checking what the API stored (same transaction as the app)."""
    async with _savepoint_sessions(connection)() as session:
        yield session


@pytest.fixture(scope="session")
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


# Kept for older imports; new code builds its clients with tests.support.clients.
_scan_for_secrets = _scan_async


@pytest.fixture
async def client(
    app: FastAPI, engine: AsyncEngine, connection: AsyncConnection
) -> AsyncIterator[httpx.AsyncClient]:
    app.state.db = Database(engine=engine, sessionmaker=_savepoint_sessions(connection))
    # The gauges follow the app created last; this session-wide app is older than most.
    observe_database_pool(app)
    async with asgi_client(app) as client:
        yield client


type UserFactory = Callable[..., Awaitable[User]]


@pytest.fixture
def make_user(app: FastAPI, session: AsyncSession) -> UserFactory:
    counter = iter(range(1, 1_000_000))

    async def make(
        email: str | None = None,
        password: str = USER_PASSWORD,
        **fields: Any,
    ) -> User:
        user = User(
            email=email or f"user{next(counter)}@example.com",
            hashed_password=await app.state.passwords.hash(password),
            **fields,
        )
        session.add(user)
        await session.commit()
        return user

    return make


def bearer(app: FastAPI, user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {app.state.tokens.create_access_token(user.id)}"}


@pytest.fixture
async def superuser(make_user: UserFactory) -> User:
    return await make_user(
        SUPERUSER_EMAIL, SUPERUSER_PASSWORD, is_superuser=True, full_name="Administrator"
    )


@pytest.fixture
async def user(make_user: UserFactory) -> User:
    return await make_user("alice@example.com", full_name="Alice")


@pytest.fixture
async def other_user(make_user: UserFactory) -> User:
    return await make_user("bob@example.com", full_name="Bob")


@pytest.fixture
def superuser_headers(app: FastAPI, superuser: User) -> dict[str, str]:
    return bearer(app, superuser)


@pytest.fixture
def user_headers(app: FastAPI, user: User) -> dict[str, str]:
    return bearer(app, user)


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert an RFC 9457 problem answer with this status; return its body for more checks."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = json.loads(response.content)
    assert body["status"] == status
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert {"type", "title", "status", "detail", "instance"} <= body.keys()
    return body


@pytest.fixture
async def committed_user(database_url: str) -> AsyncIterator[uuid.UUID]:
    """A user committed for real (full name "Before"), for tests with their own engines outside
    the savepoints; deleted with its items afterwards."""
    user_id = uuid.uuid4()
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await connection.execute(
            "INSERT INTO users (id, email, hashed_password, is_active, is_superuser, full_name)"
            " VALUES ($1, $2, 'x', true, false, 'Before')",
            user_id,
            f"{user_id.hex}@example.com",
        )
        yield user_id
    finally:
        await connection.execute("DELETE FROM users WHERE id = $1", user_id)
        await connection.close()


@pytest.fixture
async def traced(
    database_url: str, engine: AsyncEngine, connection: AsyncConnection
) -> AsyncIterator[tuple[FastAPI, InMemorySpanExporter]]:
    """An app exporting spans to memory; created in the test so its log handler writes to
    the captured stdout."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    database = Database(engine=engine, sessionmaker=_savepoint_sessions(connection))
    app = create_app(make_settings(database_url), database=database, tracer_provider=provider)
    try:
        yield app, exporter
    finally:
        uninstrument_database()
