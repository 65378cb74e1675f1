"""`keelson migrate` behind PgBouncer in transaction mode: the transaction-level advisory lock
still serialises concurrent migrators, forced deterministically by holding it ourselves."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from service.core.migrations import MIGRATION_LOCK_KEY, expected_heads
from tests.support.pgbouncer import PgBouncer
from tests.support.postgres import asyncpg_dsn, create_database, drop_database
from tests.support.processes import base_env

pytestmark = pytest.mark.slow


@pytest.fixture
async def empty_database(pg_server_url: str) -> AsyncIterator[str]:
    url = await create_database(pg_server_url, "keelson_pooled_migr")
    yield url
    await drop_database(pg_server_url, url)


def _start_migrator(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "migrate", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _advisory_waiters(connection: asyncpg.Connection, database: str) -> int:
    count: int = await connection.fetchval(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = $1",
        database,
    )
    return count


async def test_two_migrators_through_pgbouncer_queue_on_the_advisory_lock(
    bouncer: PgBouncer, empty_database: str
) -> None:
    database = make_url(empty_database).database
    assert database is not None
    # Both the service and the migration URL lead through PgBouncer: the worst case.
    pooled = bouncer.url(database)
    env = base_env(DATABASE_URL=pooled, MIGRATION_DATABASE_URL=pooled, DB_POOLER="pgbouncer")
    holder = await asyncpg.connect(asyncpg_dsn(empty_database))
    # A second connection observes: inside the holder's transaction pg_stat_activity and pg_locks
    # would show the snapshot taken at its first read.
    observer = await asyncpg.connect(asyncpg_dsn(empty_database))
    migrators: list[subprocess.Popen[str]] = []
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        migrators = [_start_migrator(env), _start_migrator(env)]
        deadline = time.monotonic() + 30
        while await _advisory_waiters(observer, database) < 2:
            assert time.monotonic() < deadline, "the migrators never queued on the lock"
            assert all(m.poll() is None for m in migrators), [m.communicate() for m in migrators]
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        assert all(m.poll() is None for m in migrators)  # still waiting: nothing migrated yet
        assert await observer.fetchval("SELECT to_regclass('alembic_version')::text") is None
        await transaction.commit()  # releases the lock
        results = [await asyncio.to_thread(m.communicate, timeout=60) for m in migrators]
        codes = [m.returncode for m in migrators]
        assert codes == [0, 0], results
        versions = await observer.fetch("SELECT version_num FROM alembic_version")
        assert {row["version_num"] for row in versions} == set(expected_heads())
        assert len(versions) == 1
    finally:
        for migrator in migrators:
            if migrator.poll() is None:
                migrator.kill()
                migrator.wait(10)
        await holder.close()
        await observer.close()


async def test_migrate_to_an_older_revision_downgrades_and_back_to_head(
    bouncer: PgBouncer, empty_database: str
) -> None:
    database = make_url(empty_database).database
    assert database is not None
    env = base_env(
        DATABASE_URL=bouncer.url(database),
        MIGRATION_DATABASE_URL=empty_database,
        DB_POOLER="pgbouncer",
    )

    async def run(*args: str) -> subprocess.CompletedProcess[str]:
        process = _start_migrator(env, *args)
        out, err = await asyncio.to_thread(process.communicate, timeout=60)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    async def version() -> str:
        connection = await asyncpg.connect(asyncpg_dsn(empty_database))
        try:
            return str(await connection.fetchval("SELECT version_num FROM alembic_version"))
        finally:
            await connection.close()

    assert (await run()).returncode == 0
    [head] = expected_heads()
    assert await version() == head
    down = await run("--revision", "0003")
    assert down.returncode == 0, down.stderr
    assert await version() == "0003"
    assert (await run("--revision", "0003")).returncode == 0  # already there: nothing to do
    assert await version() == "0003"
    unknown = await run("--revision", "nope")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("keelson: --revision:")
    assert (await run()).returncode == 0
    assert await version() == head
