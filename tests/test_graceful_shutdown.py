"""SIGTERM on a real `keelson serve`: in-flight requests finish, the process exits 0."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.postgres import create_database, drop_database
from tests.support.processes import (
    base_env,
    free_port,
    keelson,
    log_events,
    run_keelson,
    wait_ready,
)

pytestmark = pytest.mark.slow

# Costly enough that one login takes a good fraction of a second: the "slow request".
SLOW_ARGON2 = {"ARGON2_MEMORY_KIB": "65536", "ARGON2_TIME_COST": "20", "ARGON2_PARALLELISM": "1"}


@pytest.fixture
async def fresh_database(pg_server_url: str) -> AsyncIterator[str]:
    url = await create_database(pg_server_url, "keelson_shutdown")
    yield url
    await drop_database(pg_server_url, url)


def test_sigterm_lets_in_flight_request_finish_then_exits_zero(fresh_database: str) -> None:
    port = free_port()
    env = base_env(
        DATABASE_URL=fresh_database,
        FIRST_SUPERUSER="admin@example.com",
        FIRST_SUPERUSER_PASSWORD="slow-login-pass-1",
        SHUTDOWN_TIMEOUT_S="20",
        **SLOW_ARGON2,
    )
    for command in ("migrate", "seed"):
        run_keelson(command, env)

    with keelson("serve", "--host", "127.0.0.1", "--port", str(port), env=env) as process:
        wait_ready(port, process)
        result: dict[str, object] = {}

        def slow_login() -> None:
            started = time.monotonic()
            response = httpx.post(
                f"http://127.0.0.1:{port}/api/v1/login/access-token",
                data={"username": "admin@example.com", "password": "slow-login-pass-1"},
                timeout=30,
            )
            result["status"] = response.status_code
            result["seconds"] = time.monotonic() - started

        worker = threading.Thread(target=slow_login)
        worker.start()
        time.sleep(0.15)  # the login is now hashing on the server
        process.send_signal(signal.SIGTERM)
        worker.join(30)
        output, _ = process.communicate(timeout=30)

    assert result.get("status") == 200, (result, output)
    # The request really straddled the signal: it was sent 0.15 s before SIGTERM and took longer.
    assert float(str(result["seconds"])) > 0.5, result
    assert process.returncode == 0, output
    events = [event.get("event") for event in log_events(output)]
    assert "shutdown_complete" in events, output
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
