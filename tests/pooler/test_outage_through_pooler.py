"""The DB-outage drill through the pooler: a real `keelson serve` behind a real PgBouncer while
PostgreSQL is stopped for ~2 s mid-traffic and started again on the same port."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.embedded_postgres import EmbeddedPostgres
from tests.pooler.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, pooled_env
from tests.support.clients import http_client
from tests.support.pgbouncer import PgBouncer
from tests.support.postgres import asyncpg_dsn
from tests.support.processes import free_port, run_keelson, wait_ready

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "load-tests"))

from drill.traffic import Traffic, stored_titles

pytestmark = pytest.mark.slow

DOWN_S = 2.0
# PgBouncer relaunches a server connection at most every server_login_retry (1 s in the
# harness) after a failed one; Keelson's pool reconnects on the next checkout. 5 s is both with
# room for a loaded 2-core machine (measured: 0.70-0.97 s in 6 runs; 0.9-1.4 s in the drill).
RECOVERY_BOUND_S = 5.0


@pytest.fixture
def restartable_postgres() -> Iterator[EmbeddedPostgres]:
    cluster = EmbeddedPostgres()
    cluster.start()
    try:
        # Never a skip: without binaries to restart, this drill cannot run and must say so.
        assert cluster.restartable is not None, "needs PostgreSQL binaries (initdb, pg_ctl)"
        yield cluster
    finally:
        cluster.stop()


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[str]:
    """`keelson serve` logging to a file: an unread pipe would block it once full."""
    with log.open("w") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )


async def _poll_readyz(base_url: str, seen: list[tuple[float, int, str | None]]) -> None:
    async with http_client(base_url, timeout=5) as client:
        while True:
            at = time.monotonic()
            response = await client.get("/readyz")
            check = response.json().get("check") if response.status_code == 503 else None
            seen.append((at, response.status_code, check))
            await asyncio.sleep(0.1)


async def test_postgres_restart_behind_pgbouncer_answers_503_then_recovers_without_restart(
    restartable_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    direct_url = restartable_postgres.url
    local = restartable_postgres.restartable
    assert direct_url is not None
    assert local is not None
    with PgBouncer(direct_url, pool_size=2) as bouncer:
        env = pooled_env(
            bouncer.url("postgres"),
            direct_url,
            DB_POOL_TIMEOUT_S="1",
            DB_CONNECT_TIMEOUT_S="1",
            METRICS_PORT=str(free_port()),
        )
        for command in ("migrate", "seed"):
            await asyncio.to_thread(run_keelson, command, env)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        server = _serve(env, port, tmp_path / "keelson.log")
        try:
            await asyncio.to_thread(wait_ready, port, server)
            async with http_client(base_url, timeout=10) as client:
                login = await client.post(
                    "/api/v1/login/access-token",
                    data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                )
            assert login.status_code == 200, login.text
            traffic = Traffic(
                base_url, {"Authorization": f"Bearer {login.json()['access_token']}"}, writers=4
            )
            readyz: list[tuple[float, int, str | None]] = []
            await traffic.start()
            poller = asyncio.create_task(_poll_readyz(base_url, readyz))
            try:
                await asyncio.sleep(2.0)
                traffic.phase = "outage"
                stopped_at = time.monotonic()
                await asyncio.to_thread(local.stop_server)
                await asyncio.sleep(DOWN_S)
                await asyncio.to_thread(local.start_server)
                back_at = time.monotonic()
                traffic.phase = "recovery"
                for _ in range(150):  # up to 15 s for a write sent after the restart
                    if _first_write_after(traffic, back_at) is not None:
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1.0)
            finally:
                poller.cancel()
                await asyncio.gather(poller, return_exceptions=True)
                await traffic.stop()
            still_serving = server.poll() is None
        finally:
            server.kill()
            server.wait(10)
        pgbouncer_log = bouncer.log()

    stored = await stored_titles(asyncpg_dsn(direct_url))

    records = traffic.records
    failures = [r for r in records if r.status != 200]
    first_write = _first_write_after(traffic, back_at)
    recovery_s = None if first_write is None else first_write - back_at
    during = [status for at, status, _ in readyz if stopped_at < at < back_at]
    ready_again = [at for at, status, _ in readyz if at > back_at and status == 200]
    print(
        f"\n[pooler outage] requests={len(records)} failures={len(failures)}"
        f" acknowledged={len(traffic.acknowledged)} retried={traffic.retried_writes}"
        f" first_write_after_restart_s={recovery_s}"
        f" readyz_200_after_s={ready_again[0] - back_at if ready_again else None}"
    )
    assert still_serving, "keelson exited during the outage"
    assert failures, "the outage did not bite: no failed request"
    assert [(r.status, r.error) for r in failures if r.status != 503] == []
    assert [r for r in failures if r.retry_after is None] == []
    assert all(r.latency_s < 2.5 for r in failures), max(r.latency_s for r in failures)
    assert recovery_s is not None, pgbouncer_log[-3000:]
    assert recovery_s < RECOVERY_BOUND_S
    assert 503 in during, readyz
    assert {check for at, status, check in readyz if status == 503} == {"database"}
    assert ready_again, readyz[-5:]
    assert ready_again[0] - back_at < RECOVERY_BOUND_S
    assert readyz[-1][1] == 200
    assert [t for t in traffic.acknowledged if t not in stored] == []
    assert {t: n for t, n in stored.items() if n > 1} == {}
    assert len(traffic.acknowledged) > 20


def _first_write_after(traffic: Traffic, since: float) -> float | None:
    """When the first write sent after `since` was acknowledged."""
    done = [
        r.at + r.latency_s
        for r in traffic.records
        if r.kind == "write" and r.status == 200 and r.at >= since
    ]
    return min(done, default=None)
