"""The Alembic scripts build the schema, tear it down, build it again, and match the models."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, pool
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from service.core.migrations import alembic_config, expected_heads
from service.core.tables import discover_models, metadata
from tests.support.postgres import asyncpg_dsn, create_database, drop_database


@pytest.fixture
async def empty_database(pg_server_url: str) -> AsyncIterator[str]:
    url = await create_database(pg_server_url, "keelson_migr")
    yield url
    await drop_database(pg_server_url, url)


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
            return set(names)
    finally:
        await engine.dispose()


async def _alembic(action: str, url: str, revision: str) -> None:
    run = command.upgrade if action == "upgrade" else command.downgrade
    await asyncio.to_thread(run, alembic_config(url), revision)


async def test_upgrade_downgrade_upgrade_round_trip(empty_database: str) -> None:
    await _alembic("upgrade", empty_database, "head")
    assert await _tables(empty_database) == {
        "users",
        "items",
        "item_counters",
        "idempotency_keys",
        "refresh_tokens",
        "password_reset_tokens",
        "login_throttle",
        "alembic_version",
    }
    await _alembic("downgrade", empty_database, "base")
    assert await _tables(empty_database) == {"alembic_version"}
    await _alembic("upgrade", empty_database, "head")
    assert await _tables(empty_database) == {
        "users",
        "items",
        "item_counters",
        "idempotency_keys",
        "refresh_tokens",
        "password_reset_tokens",
        "login_throttle",
        "alembic_version",
    }


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, metadata))


async def test_models_and_migrations_do_not_drift(empty_database: str) -> None:
    """The equivalent of `alembic check`: autogenerate against the migrated schema finds nothing."""
    discover_models()
    await _alembic("upgrade", empty_database, "head")
    engine = create_async_engine(empty_database, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
    finally:
        await engine.dispose()


async def test_schema_enforces_case_insensitive_unique_email_and_cascade(
    empty_database: str,
) -> None:
    await _alembic("upgrade", empty_database, "head")
    dsn = make_url(empty_database).set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(dsn)
    try:
        user_id = await connection.fetchval(
            "INSERT INTO users (id, email, hashed_password, is_active, is_superuser)"
            " VALUES (gen_random_uuid(), 'A@x.io', 'h', true, false) RETURNING id"
        )
        with pytest.raises(asyncpg.UniqueViolationError):
            await connection.execute(
                "INSERT INTO users (id, email, hashed_password, is_active, is_superuser)"
                " VALUES (gen_random_uuid(), 'a@X.IO', 'h', true, false)"
            )
        await connection.execute(
            "INSERT INTO items (id, title, owner_id) VALUES (gen_random_uuid(), 't', $1)", user_id
        )
        await connection.execute("DELETE FROM users WHERE id = $1", user_id)
        assert await connection.fetchval("SELECT count(*) FROM items") == 0
        created_type = await connection.fetchval(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_name = 'items' AND column_name = 'created_at'"
        )
        assert created_type == "timestamp with time zone"
        plan_rows = await connection.fetch(
            "EXPLAIN (FORMAT TEXT) SELECT * FROM items WHERE owner_id = $1"
            " ORDER BY created_at DESC, id DESC LIMIT 100",
            user_id,
        )
        plan = "\n".join(row[0] for row in plan_rows)
        assert "ix_items_owner_id_created_at_id" in plan, plan
    finally:
        await connection.close()


async def test_concurrent_migrations_are_serialized_by_the_advisory_lock(
    empty_database: str,
) -> None:
    """Two pods running `keelson migrate` at once: both exit 0, the schema is built once."""
    env = {**os.environ, "DATABASE_URL": empty_database, "LOG_FORMAT": "json"}

    async def migrate() -> tuple[int, bytes]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service.cli",
            "migrate",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        return process.returncode or 0, output

    results = await asyncio.gather(migrate(), migrate())
    for returncode, output in results:
        assert returncode == 0, output.decode()
    ran = [b"Running upgrade  -> 0001" in output for _, output in results]
    assert sorted(ran) == [False, True], "exactly one process should have built the schema"
    dsn = make_url(empty_database).set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(dsn)
    try:
        versions = await connection.fetch("SELECT version_num FROM alembic_version")
    finally:
        await connection.close()
    assert {row["version_num"] for row in versions} == set(expected_heads())


async def test_item_counters_are_backfilled_and_their_triggers_go_on_downgrade(
    empty_database: str,
) -> None:
    await _alembic("upgrade", empty_database, "0003")
    connection = await asyncpg.connect(asyncpg_dsn(empty_database))
    try:
        owners = [
            await connection.fetchval(
                "INSERT INTO users (id, email, hashed_password, is_active, is_superuser)"
                " VALUES (gen_random_uuid(), $1, 'h', true, false) RETURNING id",
                f"u{n}@x.io",
            )
            for n in range(2)
        ]
        for owner, count in zip(owners, (3, 5), strict=True):
            await connection.execute(
                "INSERT INTO items (id, title, owner_id)"
                " SELECT gen_random_uuid(), 't', $1 FROM generate_series(1, $2::int)",
                owner,
                count,
            )
        await _alembic("upgrade", empty_database, "0004")
        counts = dict(
            await connection.fetch("SELECT scope, sum(n) FROM item_counters GROUP BY scope")
        )
        assert counts == {owners[0]: 3, owners[1]: 5, uuid.UUID(int=0): 8}
        await connection.execute("DELETE FROM users WHERE id = $1", owners[0])
        assert await connection.fetchval(
            "SELECT sum(n) FROM item_counters WHERE scope = $1", uuid.UUID(int=0)
        ) == await connection.fetchval("SELECT count(*) FROM items")

        await _alembic("downgrade", empty_database, "0003")
        triggers = await connection.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal"
            " AND tgrelid IN ('items'::regclass, 'users'::regclass)"
        )
        functions = await connection.fetchval(
            "SELECT count(*) FROM pg_proc WHERE proname LIKE 'item_counters%'"
        )
        assert (triggers, functions) == (0, 0)
        await connection.execute("DELETE FROM users")  # items and users work without them
    finally:
        await connection.close()


# -- 0005: credentials generations and normalised emails (on a C-collation database, where
# lower() lowers ASCII only and so let 0004 store one identity twice)

INSERT_USER = (
    "INSERT INTO users (id, email, hashed_password, is_active, is_superuser)"
    " VALUES (gen_random_uuid(), $1, 'h', true, false) RETURNING id"
)


@pytest.fixture
async def c_database(pg_server_url: str) -> AsyncIterator[str]:
    """An empty database with collation C whatever the server's default."""
    url = await create_database(pg_server_url, "keelson_migr_c", c_collation=True)
    yield url
    await drop_database(pg_server_url, url)


async def _columns(connection: asyncpg.Connection, table: str) -> set[str]:
    rows = await connection.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = $1", table
    )
    return {row["column_name"] for row in rows}


async def test_0005_normalises_stored_emails_and_adds_generations(c_database: str) -> None:
    await _alembic("upgrade", c_database, "0004")
    connection = await asyncpg.connect(asyncpg_dsn(c_database))
    try:
        typed = ["Élodie@Example.com", "BOB@x.io", "carol@x.io", "Strasse@x.io", "E\u0301mile@x.io"]
        ids = [await connection.fetchval(INSERT_USER, email) for email in typed]
        await connection.execute(
            "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at)"
            " VALUES (gen_random_uuid(), $1, gen_random_uuid(), 'd', now() + interval '1 day')",
            ids[0],
        )

        await _alembic("upgrade", c_database, "0005")

        stored = dict(await connection.fetch("SELECT id, email FROM users"))
        assert [stored[i] for i in ids] == [
            "élodie@example.com",
            "bob@x.io",
            "carol@x.io",
            "strasse@x.io",
            "émile@x.io",  # composed: NFC
        ]
        generations = await connection.fetch(
            "SELECT credentials_generation FROM users UNION ALL"
            " SELECT credentials_generation FROM refresh_tokens"
        )
        assert {row[0] for row in generations} == {0}
        # 0004's code, still running during a rollout, inserts without the new columns.
        await connection.fetchval(INSERT_USER, "dave@x.io")

        await _alembic("downgrade", c_database, "0004")

        assert "credentials_generation" not in await _columns(connection, "users")
        assert "credentials_generation" not in await _columns(connection, "refresh_tokens")
        # The typed forms are not kept anywhere: the addresses stay normalised.
        assert await connection.fetchval("SELECT email FROM users WHERE id = $1", ids[0]) == (
            "élodie@example.com"
        )
    finally:
        await connection.close()


async def test_0005_stops_with_the_accounts_that_share_an_address(c_database: str) -> None:
    await _alembic("upgrade", c_database, "0004")
    connection = await asyncpg.connect(asyncpg_dsn(c_database))
    try:
        twins = [await connection.fetchval(INSERT_USER, e) for e in ("Élodie@x.io", "élodie@x.io")]
        other = await connection.fetchval(INSERT_USER, "ANN@x.io")

        with pytest.raises(RuntimeError) as failure:
            await _alembic("upgrade", c_database, "0005")

        message = str(failure.value)
        assert "held by more than one account once normalised" in message
        assert all(str(twin) in message for twin in twins)
        assert str(other) not in message
        # Nothing of 0005 was applied: still at 0004, emails as they were.
        assert await connection.fetchval("SELECT version_num FROM alembic_version") == "0004"
        assert "credentials_generation" not in await _columns(connection, "users")
        assert await connection.fetchval("SELECT email FROM users WHERE id = $1", other) == (
            "ANN@x.io"
        )
    finally:
        await connection.close()
