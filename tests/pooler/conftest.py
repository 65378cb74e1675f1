"""A real PgBouncer (transaction mode, server pool of 2) in front of the suite's PostgreSQL, and a
real `keelson serve` with DB_POOLER=pgbouncer behind it; migrations go to PostgreSQL directly."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import make_url

from tests.support.pgbouncer import PgBouncer
from tests.support.postgres import create_database, drop_database
from tests.support.processes import base_env, free_port, keelson, run_keelson, wait_ready

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "pooled-admin-pass-1"
STATEMENT_TIMEOUT_MS = 400
FAST_ARGON2 = {"ARGON2_MEMORY_KIB": "1024", "ARGON2_TIME_COST": "1", "ARGON2_PARALLELISM": "1"}


@dataclass(frozen=True)
class PooledStack:
    bouncer: PgBouncer
    direct_url: str  # straight to PostgreSQL (migrations, checks of stored state)
    pooled_url: str  # the same database through PgBouncer
    env: dict[str, str]
    base_url: str
    server: subprocess.Popen[str]


def pooled_env(pooled_url: str, direct_url: str, **extra: str) -> dict[str, str]:
    return base_env(
        DATABASE_URL=pooled_url,
        MIGRATION_DATABASE_URL=direct_url,
        DB_POOLER="pgbouncer",
        DB_STATEMENT_TIMEOUT_MS=str(STATEMENT_TIMEOUT_MS),
        DB_POOL_SIZE="5",
        DB_MAX_OVERFLOW="5",
        FIRST_SUPERUSER=ADMIN_EMAIL,
        FIRST_SUPERUSER_PASSWORD=ADMIN_PASSWORD,
        ACCESS_LOG_ENABLED="false",
        **FAST_ARGON2,
        **extra,
    )


@pytest.fixture(scope="session")
def bouncer(pg_server_url: str) -> Iterator[PgBouncer]:
    with PgBouncer(pg_server_url, pool_size=2) as running:
        yield running


@pytest.fixture(scope="session")
async def pooled_database(pg_server_url: str) -> AsyncIterator[str]:
    url = await create_database(pg_server_url, "keelson_pooled")
    yield url
    await drop_database(pg_server_url, url)


@pytest.fixture(scope="session")
async def stack(bouncer: PgBouncer, pooled_database: str) -> AsyncIterator[PooledStack]:
    database = make_url(pooled_database).database
    assert database is not None
    pooled_url = bouncer.url(database)
    env = pooled_env(pooled_url, pooled_database)
    for command in ("migrate", "seed"):
        await asyncio.to_thread(run_keelson, command, env)
    port = free_port()
    with keelson("serve", "--host", "127.0.0.1", "--port", str(port), env=env) as server:
        await asyncio.to_thread(wait_ready, port, server)
        yield PooledStack(
            bouncer, pooled_database, pooled_url, env, f"http://127.0.0.1:{port}", server
        )
