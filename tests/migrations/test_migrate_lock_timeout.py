"""`keelson migrate` under MIGRATION_LOCK_TIMEOUT_MS: DDL queued behind a long transaction fails
with a clear error and a non-zero exit, and changes nothing, instead of blocking the table."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import asyncpg
import pytest

from tests.support.postgres import asyncpg_dsn
from tests.support.processes import base_env

pytestmark = pytest.mark.slow

HEAD = "0005"  # written out, not read from the scripts: move it when a migration lands


def _migrate(env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout_s,
    )


async def test_ddl_behind_an_open_write_transaction_fails_after_the_lock_timeout(
    database_at_0003: str,
) -> None:
    # 0004 takes SHARE ROW EXCLUSIVE on items, which an open transaction's ROW EXCLUSIVE blocks.
    holder = await asyncpg.connect(asyncpg_dsn(database_at_0003))
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("LOCK TABLE items IN ROW EXCLUSIVE MODE")
        env = base_env(DATABASE_URL=database_at_0003, MIGRATION_LOCK_TIMEOUT_MS="300")
        started = time.monotonic()
        done = await asyncio.to_thread(_migrate, env, 30)
        elapsed = time.monotonic() - started
        await transaction.rollback()
        version = await holder.fetchval("SELECT version_num FROM alembic_version")
        counters = await holder.fetchval("SELECT to_regclass('item_counters')::text")
    finally:
        await holder.close()
    assert done.returncode == 4, done.stdout + done.stderr
    assert "keelson: migration stopped:" in done.stderr
    assert "MIGRATION_LOCK_TIMEOUT_MS=300 ms" in done.stderr
    assert "Traceback" not in done.stderr
    assert elapsed < 15  # the process start dominates; without the timeout it never ends
    assert (version, counters) == ("0003", None)  # rolled back: nothing half-applied


async def test_the_same_migration_succeeds_once_the_transaction_ends(
    database_at_0003: str,
) -> None:
    env = base_env(DATABASE_URL=database_at_0003, MIGRATION_LOCK_TIMEOUT_MS="300")
    done = await asyncio.to_thread(_migrate, env, 60)
    assert done.returncode == 0, done.stdout + done.stderr
    connection = await asyncpg.connect(asyncpg_dsn(database_at_0003))
    try:
        assert await connection.fetchval("SELECT version_num FROM alembic_version") == HEAD
    finally:
        await connection.close()
