"""Where the Alembic scripts live, which revision the code expects, and migration-time helpers."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
# One fixed 64-bit key: every replica's `keelson migrate` queues on the same advisory lock.
MIGRATION_LOCK_KEY = 0x6B65656C736F6E  # "keelson"


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.exists() else Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url is not None:
        # configparser treats % as interpolation; escape it so passwords with % survive.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


@cache
def expected_heads() -> frozenset[str]:
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


@cache
def known_revisions() -> frozenset[str]:
    scripts = ScriptDirectory.from_config(alembic_config())
    return frozenset(script.revision for script in scripts.walk_revisions())


def schema_is_compatible(revisions: set[str]) -> bool:
    """At our head, or ahead of it (a revision this code does not know).

    During `helm upgrade` the hook migrates before the new pods start; the old pods must stay
    ready on the newer schema, which holds as long as migrations are backward compatible
    (expand now, contract in a later release). Behind head means migrations are pending.
    """
    if revisions == expected_heads():
        return True
    return bool(revisions) and not revisions <= known_revisions()


class MigrationStopped(RuntimeError):
    """`keelson migrate` stopped for a reason the operator can act on (exit code 4)."""


class MigrationLockTimeout(MigrationStopped):
    """A migration statement waited longer than MIGRATION_LOCK_TIMEOUT_MS for a lock."""


LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of lock_timeout


def is_lock_timeout(error: BaseException) -> bool:
    """Whether a (SQLAlchemy-wrapped) asyncpg error is PostgreSQL's lock_timeout firing."""
    original = getattr(error, "orig", None)
    cause = getattr(original, "__cause__", None)
    for candidate in (error, original, cause):
        if getattr(candidate, "sqlstate", None) == LOCK_NOT_AVAILABLE:
            return True
    return False


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def role_defaults_statements(role: str, database: str, timeouts: dict[str, str]) -> list[str]:
    """ALTER ROLE ... IN DATABASE ... SET for each session timeout (integers, in ms).

    Behind a transaction-mode pooler the service cannot send its session timeouts as startup
    parameters; as the role's defaults in this database they reach every server connection the
    pooler opens for that role, at no cost per request.
    """
    return [
        f"ALTER ROLE {_quote_identifier(role)} IN DATABASE {_quote_identifier(database)}"
        f" SET {name} = {int(value)}"
        for name, value in sorted(timeouts.items())
    ]


def migration_engine(url: str) -> AsyncEngine:
    """An engine for one migration-time session: no pool, and unnamed statements only, so it is
    correct even when the URL leads through a transaction pooler (service/core/db.py says why)."""
    return create_async_engine(
        url,
        poolclass=NullPool,
        connect_args={"statement_cache_size": 0, "prepared_statement_cache_size": 0},
    )


async def set_role_defaults(migration_url: str, role: str, timeouts: dict[str, str]) -> str:
    """Store the session timeouts as `role`'s defaults in the migration URL's database; returns
    that database's name. Takes effect on connections opened afterwards."""
    engine = migration_engine(migration_url)
    try:
        async with engine.begin() as connection:
            database = str((await connection.execute(text("SELECT current_database()"))).scalar())
            for statement in role_defaults_statements(role, database, timeouts):
                await connection.execute(text(statement))
        return database
    finally:
        await engine.dispose()
