"""`keelson migrate` in this process (the subprocess tests show the exit codes): the lock
timeout's error, --revision's direction, the role defaults set for DB_POOLER=pgbouncer, and the
connect arguments each pooler mode uses."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from alembic import command
from sqlalchemy.engine import make_url

from service import cli
from service.core.config import ConfigError
from service.core.db import driver_connect_args
from service.core.migrations import (
    MigrationLockTimeout,
    MigrationStopped,
    alembic_config,
    expected_heads,
    role_defaults_statements,
)
from tests.conftest import make_settings
from tests.support.postgres import asyncpg_dsn


async def _version(url: str) -> str:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return str(await connection.fetchval("SELECT version_num FROM alembic_version"))
    finally:
        await connection.close()


async def test_lock_timeout_raises_a_clear_error_and_applies_nothing(
    database_at_0003: str,
) -> None:
    settings = make_settings(database_at_0003, migration_lock_timeout_ms=200)
    holder = await asyncpg.connect(asyncpg_dsn(database_at_0003))
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("LOCK TABLE items IN ROW EXCLUSIVE MODE")
        with pytest.raises(MigrationLockTimeout, match="MIGRATION_LOCK_TIMEOUT_MS=200 ms"):
            await asyncio.to_thread(cli.migrate, settings)
        await transaction.rollback()
    finally:
        await holder.close()
    assert await _version(database_at_0003) == "0003"


async def test_migration_url_is_used_instead_of_database_url(database_at_0003: str) -> None:
    unreachable = "postgresql://nobody@127.0.0.1:1/none"
    settings = make_settings(unreachable, migration_database_url=database_at_0003)
    assert cli.migration_url(settings) == settings.migration_database_url
    await asyncio.to_thread(cli.migrate, settings)
    [head] = expected_heads()
    assert await _version(database_at_0003) == head


async def test_revision_downgrades_when_older_and_upgrades_when_newer(
    database_at_0003: str,
) -> None:
    settings = make_settings(database_at_0003)
    await asyncio.to_thread(cli.migrate, settings, revision="0002")
    assert await _version(database_at_0003) == "0002"
    await asyncio.to_thread(cli.migrate, settings, revision="0003")
    assert await _version(database_at_0003) == "0003"
    with pytest.raises(ConfigError, match="--revision"):
        await asyncio.to_thread(cli.migrate, settings, revision="no-such-revision")


async def test_pgbouncer_mode_stores_the_timeouts_as_role_defaults(
    database_at_0003: str,
) -> None:
    settings = make_settings(database_at_0003, db_pooler="pgbouncer", db_statement_timeout_ms=1234)
    await asyncio.to_thread(cli.migrate, settings)
    role = make_url(database_at_0003).username
    connection = await asyncpg.connect(asyncpg_dsn(database_at_0003))
    try:
        rows = await connection.fetch(
            "SELECT unnest(s.setconfig) AS setting FROM pg_db_role_setting s"
            " JOIN pg_database d ON d.oid = s.setdatabase JOIN pg_roles r ON r.oid = s.setrole"
            " WHERE d.datname = current_database() AND r.rolname = $1",
            role,
        )
        await connection.execute(
            f'ALTER ROLE "{role}" IN DATABASE "{make_url(database_at_0003).database}" RESET ALL'
        )
    finally:
        await connection.close()
    assert {row["setting"] for row in rows} == {
        "statement_timeout=1234",
        "idle_in_transaction_session_timeout=10000",
    }


def test_role_defaults_quote_names_and_take_only_integers() -> None:
    statements = role_defaults_statements('app"; DROP', "db", {"statement_timeout": "5000"})
    assert statements == ['ALTER ROLE "app""; DROP" IN DATABASE "db" SET statement_timeout = 5000']
    with pytest.raises(ValueError, match="invalid literal for int"):
        role_defaults_statements("app", "db", {"statement_timeout": "5s; DROP"})


def test_direct_mode_sends_timeouts_at_connect_and_pgbouncer_mode_caches_nothing() -> None:
    url = "postgresql://app@127.0.0.1:5432/app"
    direct = driver_connect_args(make_settings(url, db_statement_timeout_ms=3000))
    assert direct["server_settings"] == {
        "application_name": "keelson",
        "statement_timeout": "3000",
        "idle_in_transaction_session_timeout": "10000",
    }
    assert "statement_cache_size" not in direct
    pooled = driver_connect_args(make_settings(url, db_pooler="pgbouncer"))
    assert pooled["server_settings"] == {"application_name": "keelson"}
    assert (pooled["statement_cache_size"], pooled["prepared_statement_cache_size"]) == (0, 0)


async def test_a_role_that_may_not_alter_the_service_role_stops_with_a_clear_error(
    database_at_0003: str,
) -> None:
    """The service role is a superuser here; a plain migration role may not change its
    defaults: the migration itself commits, then `keelson migrate` stops naming the fix."""
    name = make_url(database_at_0003).database
    admin = await asyncpg.connect(asyncpg_dsn(database_at_0003))
    try:
        await admin.execute("DROP ROLE IF EXISTS keelson_limited")
        await admin.execute("CREATE ROLE keelson_limited LOGIN")
        await asyncio.to_thread(command.upgrade, alembic_config(database_at_0003), "head")
        await admin.execute("GRANT SELECT ON alembic_version TO keelson_limited")
        limited = make_url(database_at_0003).set(username="keelson_limited")
        settings = make_settings(
            database_at_0003,
            db_pooler="pgbouncer",
            migration_database_url=limited.render_as_string(hide_password=False),
        )
        with pytest.raises(MigrationStopped) as stopped:
            await asyncio.to_thread(cli.migrate, settings)
    finally:
        await admin.execute(f'REVOKE ALL ON DATABASE "{name}" FROM keelson_limited')
        await admin.execute("REVOKE ALL ON alembic_version FROM keelson_limited")
        await admin.execute("DROP ROLE keelson_limited")
        await admin.close()
    message = str(stopped.value)
    assert "session timeouts could not be stored" in message
    assert "permission denied" in message or "must be superuser" in message
    assert "MIGRATION_DATABASE_URL" in message
