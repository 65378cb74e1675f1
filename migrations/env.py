"""Alembic environment: async engine, models discovered by package convention, one advisory lock.

Two pods running `keelson migrate` at once queue on a PostgreSQL advisory lock taken inside the
migration transaction; the second one then finds the schema at head and does nothing. The lock is
transaction-level (pg_advisory_xact_lock), so it also holds behind a transaction-mode pooler,
where a session-level lock would stay on a server connection that other clients then use.
`keelson migrate` passes MIGRATION_LOCK_TIMEOUT_MS as config.attributes["lock_timeout_ms"].
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection, text

from service.core.config import load_settings
from service.core.migrations import MIGRATION_LOCK_KEY, migration_engine
from service.core.tables import discover_models, metadata

discover_models()
config = context.config


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    return load_settings().sqlalchemy_url.render_as_string(hide_password=False)


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=metadata,
        compare_type=True,
        compare_server_default=True,
        **kwargs,  # type: ignore[arg-type]
    )


def run_migrations_offline() -> None:
    _configure(url=_database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run_locked(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        lock_timeout_ms = config.attributes.get("lock_timeout_ms")
        if lock_timeout_ms is not None:
            # After the advisory lock, so a second migrator still waits for the first; from here
            # a DDL statement queued behind a long transaction fails instead of making every
            # later query on that table queue behind it.
            connection.execute(text(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}"))
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = migration_engine(_database_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_locked)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    existing = config.attributes.get("connection")
    if existing is not None:  # a caller (tests, `alembic check` helpers) lent us a connection
        _run_locked(existing)
    else:
        asyncio.run(run_migrations_online())
