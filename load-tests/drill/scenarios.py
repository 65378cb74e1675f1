"""The drill's scenarios, each played under the traffic and summarised from what clients saw."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import asyncpg
import httpx

from drill.cluster import ADMIN_EMAIL, ADMIN_PASSWORD, DRILL_REVISION, Cluster, Replica
from drill.traffic import Traffic, stored_titles, summarize
from service.core.migrations import expected_heads
from tests.support.postgres import asyncpg_dsn


async def _roll(cluster: Cluster, release: str) -> dict[str, Any]:
    """maxSurge 1, maxUnavailable 0: a new replica is routed to before an old one leaves."""
    steps = []
    for old in list(cluster.replicas.values()):
        new = cluster.start_replica(release)
        ready_s = await asyncio.to_thread(cluster.wait_up, new)
        gone_s, killed = await asyncio.to_thread(cluster.terminate, old)
        steps.append(
            {
                "new": new.name,
                "ready_s": round(ready_s, 2),
                "old": old.name,
                "terminated_s": round(gone_s, 2),
                "sigkilled": killed,
            }
        )
    return {"steps": steps}


def _readyz_all(cluster: Cluster) -> dict[str, tuple[str, int]]:
    return {r.name: (r.release, cluster.readyz(r)[0]) for r in cluster.replicas.values()}


async def _schema(cluster: Cluster) -> list[str]:
    connection = await asyncpg.connect(asyncpg_dsn(cluster.direct_url))
    try:
        rows = await connection.fetch("SELECT version_num FROM alembic_version")
    finally:
        await connection.close()
    return sorted(row["version_num"] for row in rows)


async def rolling_restart(cluster: Cluster, traffic: Traffic) -> dict[str, Any]:
    traffic.phase = "rolling_restart"
    started = time.monotonic()
    detail = await _roll(cluster, "old")
    await asyncio.sleep(0.5)
    return {
        **summarize(traffic.records, "rolling_restart"),
        **detail,
        "duration_s": round(time.monotonic() - started, 1),
    }


async def upgrade_then_rollback(cluster: Cluster, traffic: Traffic) -> dict[str, Any]:
    """The documented sequence (docs/kubernetes.md): hook migrate, rollout; helm rollback, and
    only after every new pod is gone, `keelson migrate --revision <old>` on its own."""
    [old_head] = expected_heads()
    checks: dict[str, Any] = {}
    traffic.phase = "upgrade"
    started = time.monotonic()
    await asyncio.to_thread(cluster.run_keelson, "new", "migrate")
    checks["schema_after_migrate"] = await _schema(cluster)
    checks["old_ready_on_newer_schema"] = await asyncio.to_thread(_readyz_all, cluster)
    upgrade = await _roll(cluster, "new")
    checks["new_ready_after_rollout"] = await asyncio.to_thread(_readyz_all, cluster)
    await asyncio.sleep(0.5)
    upgrade_summary = {
        **summarize(traffic.records, "upgrade"),
        **upgrade,
        "duration_s": round(time.monotonic() - started, 1),
    }

    traffic.phase = "rollback"
    started = time.monotonic()
    rollback = await _roll(cluster, "old")  # helm rollback: the old image on the newer schema
    checks["old_ready_after_helm_rollback"] = await asyncio.to_thread(_readyz_all, cluster)
    await asyncio.to_thread(cluster.run_keelson, "new", "migrate", "--revision", old_head)
    checks["schema_after_downgrade"] = await _schema(cluster)
    checks["old_ready_after_downgrade"] = await asyncio.to_thread(_readyz_all, cluster)
    # A new-release pod on the downgraded schema is behind: unready, never routed to.
    stray = cluster.start_replica("new")
    try:
        status, body = await asyncio.to_thread(_wait_answer, cluster, stray)
        checks["new_on_older_schema"] = (status, body.get("check"))
    finally:
        cluster.sigkill(stray)
        cluster.forget(stray)
    await asyncio.sleep(0.5)
    rollback_summary = {
        **summarize(traffic.records, "rollback"),
        **rollback,
        "duration_s": round(time.monotonic() - started, 1),
    }
    expected = {
        "schema_after_migrate": [DRILL_REVISION],
        "schema_after_downgrade": [old_head],
        "new_on_older_schema": (503, "migrations"),
    }
    ok = all(checks[k] == v for k, v in expected.items()) and all(
        status == 200
        for key in (
            "old_ready_on_newer_schema",
            "new_ready_after_rollout",
            "old_ready_after_helm_rollback",
            "old_ready_after_downgrade",
        )
        for _, status in checks[key].values()
    )
    return {
        "upgrade": upgrade_summary,
        "rollback": rollback_summary,
        "readyz": {k: str(v) for k, v in checks.items()},
        "readyz_as_documented": ok,
    }


def _wait_answer(cluster: Cluster, replica: Replica, timeout_s: float = 60) -> tuple[int, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return cluster.readyz(replica)
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{replica.name} never answered /readyz")


async def sigkill_one(cluster: Cluster, traffic: Traffic) -> dict[str, Any]:
    traffic.phase = "sigkill"
    await asyncio.sleep(1.0)
    victim = next(iter(cluster.replicas.values()))
    killed_at = time.monotonic()
    cluster.sigkill(victim)
    down_after_s = await asyncio.to_thread(cluster.wait_down, victim)
    await asyncio.sleep(1.0)
    cluster.forget(victim)
    replacement = cluster.start_replica("old")
    await asyncio.to_thread(cluster.wait_up, replacement)
    await asyncio.sleep(0.5)
    summary = summarize(traffic.records, "sigkill")
    failed = [r for r in traffic.records if r.phase == "sigkill" and (r.status or 599) >= 300]
    late = [r for r in failed if r.at > killed_at + down_after_s + 0.5]
    failed_writes_ids = {r.at for r in failed if r.kind == "write"}
    return {
        **summary,
        "victim": victim.name,
        "marked_down_after_s": round(down_after_s, 2),
        "failed_after_marked_down": len(late),
        "in_flight_bound": traffic.readers + traffic.writers,
        "failed_writes": len(failed_writes_ids),
        "recover_s": round((summary["last_failure_at"] or killed_at) - killed_at, 2),
    }


async def shared_state(cluster: Cluster) -> dict[str, Any]:
    """Each request goes to a chosen replica directly: state must not live in any one of them."""
    replicas = list(cluster.replicas.values())
    assert len(replicas) >= 3
    result: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        login = await client.post(
            f"{replicas[0].url}/api/v1/login/access-token",
            data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        )
        admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
        email, password = f"throttle-{uuid.uuid4().hex[:8]}@example.com", "throttle-pass-1"
        created = await client.post(
            f"{replicas[1].url}/api/v1/users/",
            headers=admin,
            json={"email": email, "password": password},
        )
        assert created.status_code == 200, created.text

        statuses = []
        for i in range(cluster.login_max_failures):
            wrong = await client.post(
                f"{replicas[i % 3].url}/api/v1/login/access-token",
                data={"username": email, "password": "wrong-password-1"},
            )
            statuses.append(wrong.status_code)
        tripped = await client.post(
            f"{replicas[cluster.login_max_failures % 3].url}/api/v1/login/access-token",
            data={"username": email, "password": password},  # even the right password
        )
        result["throttle"] = {
            "failures": statuses,
            "after_limit": tripped.status_code,
            "replicas_hit": min(cluster.login_max_failures, 3),
            "ok": statuses == [400] * cluster.login_max_failures and tripped.status_code == 429,
        }

        first = (
            await client.post(
                f"{replicas[0].url}/api/v1/login/access-token",
                data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
            )
        ).json()
        rotated = await client.post(
            f"{replicas[1].url}/api/v1/login/refresh",
            json={"refresh_token": first["refresh_token"]},
        )
        reused = await client.post(
            f"{replicas[2].url}/api/v1/login/refresh",
            json={"refresh_token": first["refresh_token"]},
        )
        family = await client.post(
            f"{replicas[0].url}/api/v1/login/refresh",
            json={"refresh_token": rotated.json()["refresh_token"]},
        )
        result["refresh_reuse"] = {
            "rotate": rotated.status_code,
            "reuse": reused.status_code,
            "family_after_reuse": family.status_code,
            "ok": (rotated.status_code, reused.status_code, family.status_code) == (200, 401, 401),
        }

        key, title = str(uuid.uuid4()), f"replay-{uuid.uuid4().hex[:8]}"
        answers = [
            await client.post(
                f"{replica.url}/api/v1/items/",
                headers={**admin, "Idempotency-Key": key},
                json={"title": title},
            )
            for replica in replicas[:3]
        ]
    connection = await asyncpg.connect(asyncpg_dsn(cluster.direct_url))
    try:
        stored = await connection.fetchval("SELECT count(*) FROM items WHERE title = $1", title)
    finally:
        await connection.close()
    bodies = [a.json() for a in answers]
    result["idempotent_replay"] = {
        "statuses": [a.status_code for a in answers],
        "same_answer": all(b == bodies[0] for b in bodies),
        "stored": stored,
        "ok": [a.status_code for a in answers] == [200] * 3
        and all(b == bodies[0] for b in bodies)
        and stored == 1,
    }
    return result


async def postgres_restart(cluster: Cluster, traffic: Traffic, down_s: float) -> dict[str, Any]:
    traffic.phase = "postgres_restart"
    pids = {r.name: r.process.pid for r in cluster.replicas.values()}
    await asyncio.sleep(1.0)
    stopped_at = time.monotonic()
    await asyncio.to_thread(cluster.local_postgres.stop_server)
    await asyncio.sleep(down_s / 2)
    readyz_during = await asyncio.to_thread(_readyz_all, cluster)
    await asyncio.sleep(down_s / 2)
    await asyncio.to_thread(cluster.local_postgres.start_server)
    back_at = time.monotonic()
    direct = await asyncpg.connect(asyncpg_dsn(cluster.direct_url))
    try:
        direct_ok = await direct.fetchval("SELECT 1") == 1
    finally:
        await direct.close()
    recovered_at = None
    deadline = back_at + 30
    while time.monotonic() < deadline:
        ok_after = [
            r
            for r in traffic.records
            if r.phase == "postgres_restart"
            and r.at > back_at
            and r.status == 200
            and r.kind == "write"
        ]
        if ok_after:
            recovered_at = min(r.at + r.latency_s for r in ok_after)
            break
        await asyncio.sleep(0.1)
    routed_again_s = None
    with contextlib.suppress(RuntimeError):  # None in the report: not all UP within 15 s
        await asyncio.to_thread(cluster.wait_all_routed, list(cluster.replicas), 15)
        routed_again_s = round(time.monotonic() - back_at, 2)
    await asyncio.sleep(1.0)
    readyz = await asyncio.to_thread(_readyz_all, cluster)
    summary = summarize(traffic.records, "postgres_restart")
    failures = [
        r
        for r in traffic.records
        if r.phase == "postgres_restart" and (r.status is None or r.status >= 300)
    ]
    return {
        **summary,
        "down_s": round(back_at - stopped_at, 2),
        "postgres_answers_directly": direct_ok,
        "only_503_with_retry_after": all(
            r.status == 503 and r.retry_after is not None for r in failures
        ),
        "recover_s": None if recovered_at is None else round(recovered_at - back_at, 2),
        "readyz_during": {name: status for name, (_, status) in readyz_during.items()},
        "routed_again_s": routed_again_s,
        "replicas_not_restarted": pids == {r.name: r.process.pid for r in cluster.replicas.values()}
        and all(r.process.poll() is None for r in cluster.replicas.values()),
        "ready_after": all(status == 200 for _, status in readyz.values()),
        **({} if recovered_at else {"pgbouncer_log_tail": cluster.bouncer_log_tail()}),
    }


async def stored_writes(cluster: Cluster, traffic: Traffic) -> dict[str, Any]:
    """Every acknowledged write stored exactly once (retries with the same key included)."""
    stored = await stored_titles(asyncpg_dsn(cluster.direct_url))
    return {
        "acknowledged": len(traffic.acknowledged),
        "retried_writes": traffic.retried_writes,
        "missing": sum(1 for t in traffic.acknowledged if t not in stored),
        "duplicated": sum(1 for n in stored.values() if n > 1),
    }
