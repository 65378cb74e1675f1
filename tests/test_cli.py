"""The `keelson` command, run as real processes: dev, serve (graceful SIGTERM), seed, errors."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import SUPERUSER_EMAIL, SUPERUSER_PASSWORD
from tests.support.clients import sync_http_client
from tests.support.postgres import asyncpg_dsn
from tests.support.processes import (
    base_env,
    free_port,
    keelson,
    log_events,
    run_keelson,
    wait_ready,
)

pytestmark = pytest.mark.slow


def test_dev_runs_embedded_postgres_serves_and_stops_cleanly() -> None:
    port = free_port()
    with keelson("dev", "--port", str(port), env=base_env(LOG_FORMAT="json")) as process:
        wait_ready(port, process)
        with sync_http_client(f"http://127.0.0.1:{port}") as http:
            assert http.get("/docs").status_code == 200
            login = http.post(
                "/api/v1/login/access-token",
                data={"username": "admin@example.com", "password": "changethis"},
            )
            assert login.status_code == 200, login.text
            me = http.get(
                "/api/v1/users/me",
                headers={"Authorization": f"Bearer {login.json()['access_token']}"},
            )
        assert me.json()["is_superuser"] is True

        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    started = [e for e in log_events(output) if e.get("event") == "embedded_postgres_started"]
    assert started, output
    pg_port = make_url(str(started[0]["url"])).port
    with pytest.raises(ConnectionRefusedError):  # the throwaway cluster is gone
        socket.create_connection(("127.0.0.1", pg_port), timeout=1).close()


async def _seeded_superusers(url: str) -> list[asyncpg.Record]:
    dsn = asyncpg_dsn(url)
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetch(
            "SELECT email, is_superuser, hashed_password FROM users WHERE email = $1",
            SUPERUSER_EMAIL,
        )
    finally:
        await connection.close()


def test_migrate_and_seed_are_idempotent(database_url: str) -> None:
    env = base_env(
        DATABASE_URL=database_url,
        FIRST_SUPERUSER=SUPERUSER_EMAIL,
        FIRST_SUPERUSER_PASSWORD=SUPERUSER_PASSWORD,
        ARGON2_MEMORY_KIB="1024",
        ARGON2_TIME_COST="1",
        ARGON2_PARALLELISM="1",
    )
    try:
        for _ in range(2):
            for command in ("migrate", "seed"):
                run_keelson(command, env)
        rows = asyncio.run(_seeded_superusers(database_url))
        assert len(rows) == 1
        assert rows[0]["is_superuser"] is True
        assert rows[0]["hashed_password"].startswith("$argon2id$")
    finally:
        asyncio.run(_delete_seeded(database_url))


async def _delete_seeded(url: str) -> None:
    dsn = asyncpg_dsn(url)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("DELETE FROM users WHERE email = $1", SUPERUSER_EMAIL)
    finally:
        await connection.close()


def test_serve_without_database_url_fails_fast_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve"],
        env=base_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr


def test_invalid_settings_name_every_bad_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "check-config"],
        env=base_env(ENVIRONMENT="production", DB_POOL_SIZE="0", DATABASE_URL="mysql://x@h/db"),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    for name in ("DB_POOL_SIZE", "DATABASE_URL", "SECRET_KEY", "FIRST_SUPERUSER_PASSWORD"):
        assert name in result.stderr, result.stderr


async def _keys(url: str, sql: str, *args: object) -> object:
    dsn = asyncpg_dsn(url)
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(sql, *args)
    finally:
        await connection.close()


def test_purge_expired_deletes_only_expired_idempotency_keys(database_url: str) -> None:
    owner = asyncio.run(
        _keys(
            database_url,
            "INSERT INTO users (id, email, hashed_password, is_active, is_superuser)"
            " VALUES (gen_random_uuid(), 'purge@example.com', 'x', true, false) RETURNING id",
        )
    )
    try:
        asyncio.run(
            _keys(
                database_url,
                "INSERT INTO idempotency_keys (user_id, key, request_fingerprint, created_at,"
                " expires_at) SELECT $1, 'k' || n, 'f', now(), now() + (CASE WHEN n <= 1500"
                " THEN interval '-1 hour' ELSE interval '1 hour' END)"
                " FROM generate_series(1, 1600) AS n",
                owner,
            )
        )
        result = subprocess.run(
            [sys.executable, "-m", "service.cli", "purge-expired"],
            env=base_env(DATABASE_URL=database_url),
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        [event] = [e for e in log_events(result.stdout) if e.get("event") == "purged_expired"]
        assert event["idempotency_keys"] == 1500
        left = asyncio.run(
            _keys(database_url, "SELECT count(*) FROM idempotency_keys WHERE user_id = $1", owner)
        )
        assert left == 100
    finally:
        asyncio.run(_keys(database_url, "DELETE FROM users WHERE id = $1", owner))


_SERVE_WITHOUT_LISTENING = """
import gc, sys, uvicorn
from service import cli
from service.core.config import load_settings

def report(self, sockets=None):
    print(gc.get_freeze_count(), gc.isenabled(), gc.get_count()[2])

uvicorn.Server.run = report
cli.serve(load_settings(), port=int(sys.argv[1]))
"""


def test_serve_freezes_the_start_up_heap_before_serving(database_url: str) -> None:
    """The objects alive once the app is built are out of the collector's reach when uvicorn
    starts (the full collections that walked them were the latency tail), and the collector
    still runs for what is made afterwards."""
    env = {**base_env(), "DATABASE_URL": database_url, "METRICS_PORT": str(free_port())}
    result = subprocess.run(
        [sys.executable, "-c", _SERVE_WITHOUT_LISTENING, str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    frozen, enabled, _ = result.stdout.split()[-3:]
    assert int(frozen) > 100_000  # FastAPI, SQLAlchemy, pydantic and our app: well over that
    assert enabled == "True"
