"""The kind e2e's own parts, run for real: its migrations, and its load generator against a server.

The cluster itself only exists in .github/workflows/e2e.yml; these run here, against the suite's
PostgreSQL and a `keelson serve` process."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.config import Config

from service.core.migrations import MIGRATIONS_DIR, alembic_config, expected_heads
from tests.conftest import SUPERUSER_EMAIL, SUPERUSER_PASSWORD
from tests.support.postgres import asyncpg_dsn, create_database, drop_database
from tests.support.processes import base_env, free_port, keelson, run_keelson, wait_ready

ROOT = Path(__file__).resolve().parents[2]
E2E = ROOT / ".github" / "e2e"
LOAD = E2E / "load.py"


def with_down_revision(source: Path, down_revision: str, into: Path) -> None:
    """What Dockerfile.migration's RUN does to the file: the same sed expression."""
    target = into / source.name
    shutil.copy(source, target)
    subprocess.run(
        ["sed", "-i", f"s/@DOWN_REVISION@/{down_revision}/", str(target)], check=True, timeout=10
    )


def test_the_dockerfile_fills_the_down_revision_with_that_sed_expression() -> None:
    dockerfile = (E2E / "Dockerfile.migration").read_text()
    assert 'sed -i "s/@DOWN_REVISION@/${DOWN_REVISION}/"' in dockerfile
    assert "COPY ${MIGRATION} /app/migrations/versions/${MIGRATION}" in dockerfile
    for name in ("e2e_expand.py", "e2e_fail.py"):
        assert 'down_revision = "@DOWN_REVISION@"' in (E2E / "migrations" / name).read_text()


@pytest.fixture
def e2e_scripts(tmp_path: Path) -> Path:
    """A copy of migrations/ as the e2e images hold it: the real scripts plus the e2e ones."""
    scripts = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, scripts)
    [head] = expected_heads()
    with_down_revision(E2E / "migrations" / "e2e_expand.py", head, scripts / "versions")
    return scripts


def _config(scripts: Path, url: str) -> Config:
    config = alembic_config(url)
    config.set_main_option("script_location", str(scripts))
    return config


async def _revision_and_probe_table(url: str) -> tuple[list[str], bool]:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        revisions = [
            r[0] for r in await connection.fetch("SELECT version_num FROM alembic_version")
        ]
        probe = await connection.fetchval("SELECT to_regclass('e2e_probe') IS NOT NULL")
        return revisions, bool(probe)
    finally:
        await connection.close()


async def test_e2e_migrations_expand_then_fail_leaving_the_schema_at_the_expand_revision(
    pg_server_url: str, e2e_scripts: Path
) -> None:
    url = await create_database(pg_server_url, "keelson_e2e_migrations")
    try:
        await asyncio.to_thread(command.upgrade, _config(e2e_scripts, url), "head")
        assert await _revision_and_probe_table(url) == (["e2e0001"], True)

        with_down_revision(E2E / "migrations" / "e2e_fail.py", "e2e0001", e2e_scripts / "versions")
        with pytest.raises(Exception, match="this migration fails on purpose"):
            await asyncio.to_thread(command.upgrade, _config(e2e_scripts, url), "head")
        # The failed run rolled back as a whole: the release before it still finds its head.
        assert await _revision_and_probe_table(url) == (["e2e0001"], True)
    finally:
        await drop_database(pg_server_url, url)


@pytest.fixture
def seeded_server(pg_server_url: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A seeded `keelson serve` on a database of its own: the load generator's logins (failed
    ones included) are committed, and must not trip the login throttle of the shared test
    database for every test that runs after this one."""
    url = asyncio.run(create_database(pg_server_url, "keelson_e2e_load"))
    env = base_env(
        DATABASE_URL=url,
        FIRST_SUPERUSER=SUPERUSER_EMAIL,
        FIRST_SUPERUSER_PASSWORD=SUPERUSER_PASSWORD,
        ACCESS_LOG_ENABLED="false",
        ARGON2_MEMORY_KIB="1024",
        ARGON2_TIME_COST="1",
        ARGON2_PARALLELISM="1",
    )
    try:
        run_keelson("migrate", env)
        run_keelson("seed", env)
        port = free_port()
        with keelson("serve", "--host", "127.0.0.1", "--port", str(port), env=env) as server:
            wait_ready(port, server)
            yield f"http://127.0.0.1:{port}", server
    finally:
        asyncio.run(drop_database(pg_server_url, url))


def _start_load(base_url: str, password: str, stop: Path) -> subprocess.Popen[str]:
    env = {
        "BASE_URL": base_url,
        "LOGIN_EMAIL": SUPERUSER_EMAIL,
        "LOGIN_PASSWORD": password,
        "STOP_FILE": str(stop),
        "WORKERS": "2",
        "PAUSE_S": "0.02",
        "MAX_S": "30",  # bound: it stops by itself even if the test never touches the stop file
    }
    return subprocess.Popen([sys.executable, str(LOAD)], env=env, stdout=subprocess.PIPE, text=True)


def _run_load(
    base_url: str, password: str, stop: Path, meanwhile: Callable[[], None]
) -> tuple[int, dict[str, object]]:
    """The load generator's exit code and summary line: it runs through `meanwhile`, then the
    stop file asks it to finish (it is killed if anything on the way raises)."""
    load = _start_load(base_url, password, stop)
    try:
        meanwhile()
        stop.touch()
        output, _ = load.communicate(timeout=60)
        last = json.loads(output.strip().splitlines()[-1])
        assert last["event"] == "summary", output
        return load.returncode, last
    finally:
        if load.poll() is None:
            load.kill()


@pytest.mark.slow
def test_load_generator_counts_only_2xx_against_a_healthy_release(
    seeded_server: tuple[str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    base_url, _ = seeded_server
    returncode, summary = _run_load(
        base_url, SUPERUSER_PASSWORD, tmp_path / "stop", lambda: time.sleep(3)
    )
    assert returncode == 0, summary
    assert summary["non_2xx"] == 0
    assert int(str(summary["ok"])) > 20
    assert set(dict(summary["by_status"])) == {"200"}  # type: ignore[call-overload]


@pytest.mark.slow
def test_load_generator_fails_when_the_release_stops_answering(
    seeded_server: tuple[str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    base_url, server = seeded_server

    def outage() -> None:
        time.sleep(2)
        server.kill()  # an outage mid-run, as a broken rollout would cause
        server.wait(10)
        time.sleep(1)

    returncode, summary = _run_load(base_url, SUPERUSER_PASSWORD, tmp_path / "stop", outage)
    assert returncode == 1, summary
    assert int(str(summary["ok"])) > 0
    assert int(str(summary["non_2xx"])) > 0
    assert any(str(status).startswith("error:") for status in dict(summary["by_status"]))  # type: ignore[call-overload]


@pytest.mark.slow
def test_load_generator_fails_when_it_cannot_log_in(
    seeded_server: tuple[str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    base_url, _ = seeded_server
    returncode, summary = _run_load(
        base_url, "not-the-password-1", tmp_path / "stop", lambda: time.sleep(1)
    )
    assert returncode == 1, summary
    assert summary["ok"] == 0
    assert "login-failed" in dict(summary["by_status"])  # type: ignore[call-overload]
