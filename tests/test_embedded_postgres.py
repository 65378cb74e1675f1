"""The throwaway PostgreSQL takes extra settings, names its postmaster, can keep its directory."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from service.embedded_postgres import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    find_pg_bindir,
    server_options,
)


@pytest.fixture(scope="module")
def bindir() -> Path:
    found = find_pg_bindir()
    if found is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) on this machine")
    return found


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def _setting_and_backend_parent(url: str) -> tuple[str, int]:
    """max_connections and the parent of this connection's backend (read while it lives)."""
    conn = await asyncpg.connect(_libpq(url))
    try:
        setting = await conn.fetchval("SHOW max_connections")
        return setting, _parent_pid(await conn.fetchval("SELECT pg_backend_pid()"))
    finally:
        await conn.close()


def test_settings_reach_the_server_and_the_postmaster_is_the_backends_parent(
    bindir: Path,
) -> None:
    pg = EmbeddedPostgres(settings={"max_connections": 150}, bindir=bindir)
    url = pg.start()
    try:
        directory = pg.directory
        max_connections, backend_parent = asyncio.run(_setting_and_backend_parent(url))
        assert max_connections == "150"
        assert backend_parent == pg.postmaster_pid
    finally:
        pg.stop()
    assert directory is not None
    assert not directory.exists()


def test_keep_leaves_the_stopped_cluster_and_its_log(bindir: Path) -> None:
    pg = EmbeddedPostgres(bindir=bindir, keep=True)
    pg.start()
    directory = pg.directory
    assert directory is not None
    try:
        pg.stop()
        assert (directory / "data" / "PG_VERSION").exists()
        assert "database system is shut down" in (directory / "postgres.log").read_text()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize(
    ("name", "value"),
    [("max_connections", "1 -c fsync=on"), ("work mem", "4MB"), ("shared_buffers", "'1GB'")],
)
def test_a_setting_that_would_split_the_options_string_is_refused(name: str, value: str) -> None:
    with pytest.raises(EmbeddedPostgresError, match="invalid PostgreSQL setting"):
        server_options({name: value})


def test_a_refused_setting_starts_nothing(bindir: Path) -> None:
    pg = EmbeddedPostgres(settings={"port": "1;2 3"}, bindir=bindir)
    with pytest.raises(EmbeddedPostgresError, match="invalid PostgreSQL setting"):
        pg.start()
    assert pg.directory is None
    with pytest.raises(EmbeddedPostgresError, match="not running"):
        _ = pg.postmaster_pid
