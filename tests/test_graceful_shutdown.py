"""SIGTERM on a real `keelson serve`: in-flight requests finish, the process exits 0.

The in-flight request is made to wait on a row lock the test holds, so it is provably inside
the server (PostgreSQL shows its backend waiting) when SIGTERM arrives, and it finishes only
when the test lets it, after the server has logged that it is shutting down: no sleep decides
the interleaving.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests.support.clients import http_client
from tests.support.postgres import (
    asyncpg_dsn,
    create_database,
    drop_database,
    wait_until_waiting_on_a_lock,
)
from tests.support.processes import (
    OutputWatcher,
    base_env,
    free_port,
    keelson,
    log_events,
    run_keelson,
    wait_ready,
)

pytestmark = pytest.mark.slow

ADMIN = ("admin@example.com", "shutdown-pass-1")
FAST_ARGON2 = {"ARGON2_MEMORY_KIB": "1024", "ARGON2_TIME_COST": "1", "ARGON2_PARALLELISM": "1"}


@pytest.fixture
async def fresh_database(pg_server_url: str) -> AsyncIterator[str]:
    url = await create_database(pg_server_url, "keelson_shutdown")
    yield url
    await drop_database(pg_server_url, url)


async def test_sigterm_lets_in_flight_request_finish_then_exits_zero(fresh_database: str) -> None:
    port = free_port()
    env = base_env(
        DATABASE_URL=fresh_database,
        FIRST_SUPERUSER=ADMIN[0],
        FIRST_SUPERUSER_PASSWORD=ADMIN[1],
        SHUTDOWN_TIMEOUT_S="20",
        **FAST_ARGON2,
    )
    for command in ("migrate", "seed"):
        await asyncio.to_thread(run_keelson, command, env)
    locker = await asyncpg.connect(asyncpg_dsn(fresh_database))
    watcher = await asyncpg.connect(asyncpg_dsn(fresh_database))
    try:
        with keelson("serve", "--host", "127.0.0.1", "--port", str(port), env=env) as process:
            await asyncio.to_thread(wait_ready, port, process)
            output = OutputWatcher(process)
            async with http_client(f"http://127.0.0.1:{port}", timeout=30) as client:
                login = await client.post(
                    "/api/v1/login/access-token", data={"username": ADMIN[0], "password": ADMIN[1]}
                )
                headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
                admin_id = uuid.UUID(
                    (await client.get("/api/v1/users/me", headers=headers)).json()["id"]
                )
                lock = locker.transaction()
                await lock.start()
                await locker.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", admin_id)
                in_flight = asyncio.create_task(
                    client.patch("/api/v1/users/me", headers=headers, json={"full_name": "Late"})
                )
                await wait_until_waiting_on_a_lock(watcher)
                process.send_signal(signal.SIGTERM)
                # uvicorn stops accepting and waits for open requests; ours still waits on us.
                await asyncio.to_thread(output.wait_for, "Waiting for connections to close", 10)
                assert not in_flight.done()
                assert process.poll() is None
                await lock.rollback()
                response = await in_flight
            returncode = await asyncio.to_thread(process.wait, 30)
        lines = output.finish()
        stored = await locker.fetchval("SELECT full_name FROM users WHERE id = $1", admin_id)
    finally:
        await locker.close()
        await watcher.close()

    assert response.status_code == 200, (response.text, lines)
    assert response.json()["full_name"] == "Late"
    assert stored == "Late"
    assert returncode == 0, lines
    events = [event.get("event") for event in log_events(lines)]
    assert "shutdown_complete" in events, lines
    with pytest.raises(httpx.ConnectError):
        async with http_client(f"http://127.0.0.1:{port}", timeout=1) as client:
            await client.get("/healthz")
