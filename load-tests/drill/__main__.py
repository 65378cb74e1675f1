"""Run the multi-replica drill or the capacity measurement (from the repository root):

    PYTHONPATH=.:load-tests uv run python -m drill                 # the full drill, chart numbers
    PYTHONPATH=.:load-tests uv run python -m drill --prestop-s 2   # a quicker lifecycle
    PYTHONPATH=.:load-tests uv run python -m drill --capacity      # req/s for 1, 2, 3 replicas

Everything listens on 127.0.0.1 and every process is stopped by pid on the way out, also on
failure. The report is one JSON document on stdout (and in --json FILE).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from drill import scenarios
from drill.cluster import ADMIN_EMAIL, ADMIN_PASSWORD, LOAD_TESTS, Cluster, Lifecycle
from drill.traffic import Traffic

SCENARIOS = ("rolling_restart", "upgrade_rollback", "sigkill", "shared_state", "postgres_restart")


async def _token(base_url: str) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        response = await client.post(
            "/api/v1/login/access-token",
            data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        )
        response.raise_for_status()
        return str(response.json()["access_token"])


async def run_drill(
    *,
    replicas: int = 3,
    lifecycle: Lifecycle | None = None,
    check_interval_s: float = 1.0,
    fall: int = 2,
    only: tuple[str, ...] = SCENARIOS,
    postgres_down_s: float = 2.0,
) -> dict[str, Any]:
    lifecycle = lifecycle or Lifecycle.from_chart()
    report: dict[str, Any] = {
        "replicas": replicas,
        "lifecycle": {**lifecycle.__dict__, "grace_s": lifecycle.grace_s},
        "balancer_check": {"inter_s": check_interval_s, "fall": fall, "rise": 1},
    }
    started = time.monotonic()
    with Cluster(
        replicas=replicas, lifecycle=lifecycle, check_interval_s=check_interval_s, fall=fall
    ) as cluster:
        token = await _token(cluster.balancer_url)
        traffic = Traffic(cluster.balancer_url, {"Authorization": f"Bearer {token}"})
        await traffic.start()
        try:
            await asyncio.sleep(1.0)
            if "rolling_restart" in only:
                report["rolling_restart"] = await scenarios.rolling_restart(cluster, traffic)
            if "upgrade_rollback" in only:
                report["upgrade_rollback"] = await scenarios.upgrade_then_rollback(cluster, traffic)
            if "sigkill" in only:
                report["sigkill"] = await scenarios.sigkill_one(cluster, traffic)
            if "shared_state" in only:
                traffic.phase = "shared_state"
                report["shared_state"] = await scenarios.shared_state(cluster)
            if "postgres_restart" in only:
                report["postgres_restart"] = await scenarios.postgres_restart(
                    cluster, traffic, postgres_down_s
                )
            traffic.phase = "cooldown"
            await asyncio.sleep(0.5)
        finally:
            await traffic.stop()
        report["writes"] = await scenarios.stored_writes(cluster, traffic)
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    return report


# -- capacity ----------------------------------------------------------------------------

CAPACITY_CASES = {
    "me": ("/api/v1/users/me", "get.lua"),
    "items": ("/api/v1/items/?limit=100", "get.lua"),
    "create": ("/api/v1/items/", "post_json.lua"),
}
_WRK_JSON = re.compile(r"^WRK_JSON (\{.*\})$", re.MULTILINE)


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0))


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _cpu_by_role(cluster: Cluster) -> dict[str, float]:
    roles = {"keelson": [r.process.pid for r in cluster.replicas.values()]}
    if cluster.haproxy is not None:
        roles["haproxy"] = [cluster.haproxy.pid]
    if cluster.bouncer is not None and cluster.bouncer.process is not None:
        roles["pgbouncer"] = [cluster.bouncer.process.pid]
    return {role: sum(_cpu_seconds(pid) for pid in pids) for role, pids in roles.items()}


def _wrk(url: str, script: str, token: str, duration_s: float, connections: int) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    done = subprocess.run(
        [
            wrk,
            "-t2",
            f"-c{connections}",
            f"-d{duration_s:g}s",
            "--timeout",
            "10s",
            "-s",
            str(LOAD_TESTS / "wrk" / script),
            url,
        ],
        env={**os.environ, "WRK_TOKEN": token},
        capture_output=True,
        text=True,
        check=False,
        timeout=duration_s + 30,
    )
    match = _WRK_JSON.search(done.stdout)
    if match is None:
        raise RuntimeError(f"wrk failed:\n{done.stdout}{done.stderr}")
    data = json.loads(match.group(1))
    seconds = data["duration_us"] / 1e6
    errors = data["errors"]
    return {
        "rps": round(data["requests"] / seconds, 1),
        "p50_ms": round(data["latency_us"]["p50"] / 1000, 1),
        "p99_ms": round(data["latency_us"]["p99"] / 1000, 1),
        "non_2xx": errors["status"],
        "socket_errors": errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
    }


async def run_capacity(
    *, max_replicas: int = 3, duration_s: float = 10, connections: int = 32
) -> dict[str, Any]:
    """The reference cases through haproxy with 1..max_replicas replicas routed to."""
    lifecycle = replace(Lifecycle.from_chart(), prestop_s=0)
    report: dict[str, Any] = {
        "cpus": _cpu_count(),
        "load": f"wrk -t2 -c{connections} -d{duration_s:g}s",
        "runs": {},
    }
    with Cluster(
        replicas=max_replicas,
        lifecycle=lifecycle,
        check_interval_s=1.0,
        fall=2,
        pgbouncer_pool_size=10,
        db_pool_size=10,
    ) as cluster:
        token = await _token(cluster.balancer_url)
        names = sorted(cluster.replicas)
        for routed in range(1, max_replicas + 1):
            for index, name in enumerate(names):
                state = "ready" if index < routed else "maint"
                cluster.haproxy_command(f"set server keelson/{name} state {state}")
            await asyncio.to_thread(cluster.wait_all_routed, names[:routed])
            results = {}
            for case, (path, script) in CAPACITY_CASES.items():
                before = _cpu_by_role(cluster)
                results[case] = await asyncio.to_thread(
                    _wrk, cluster.balancer_url + path, script, token, duration_s, connections
                )
                after = _cpu_by_role(cluster)
                requests = results[case]["rps"] * duration_s
                # CPU per request is the figure that survives a noisy host: req/s per core of
                # keelson = 1 / (keelson CPU seconds per request).
                results[case]["cpu_us_per_request"] = {
                    role: round((after[role] - before[role]) / requests * 1e6) for role in after
                }
                results[case]["load_average_1m"] = round(os.getloadavg()[0], 2)
            report["runs"][str(routed)] = results
    for routed, results in report["runs"].items():
        for case in results.values():
            case["rps_per_replica"] = round(case["rps"] / int(routed), 1)
            keelson_us = case["cpu_us_per_request"]["keelson"]
            case["keelson_rps_per_core"] = round(1e6 / keelson_us, 1) if keelson_us else None
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drill", description=__doc__)
    parser.add_argument("--replicas", type=int, default=3, help="replicas (at least 3)")
    parser.add_argument("--prestop-s", type=float, help="preStop sleep (default: the chart's)")
    parser.add_argument(
        "--check-interval-s", type=float, default=1.0, help="haproxy check interval (inter)"
    )
    parser.add_argument("--fall", type=int, default=2, help="failed checks before DOWN")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--capacity", action="store_true", help="measure req/s for 1..N replicas")
    parser.add_argument("--duration", type=float, default=10, help="capacity: seconds per case")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.replicas < 3 and not args.capacity:
        parser.error("--replicas: the drill needs at least 3")
    if not 1 <= args.duration <= 15:
        parser.error("--duration: 1 to 15 seconds")
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    if unknown := set(only) - set(SCENARIOS):
        parser.error(f"--only: unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    if args.capacity:
        report = asyncio.run(run_capacity(max_replicas=args.replicas, duration_s=args.duration))
    else:
        lifecycle = Lifecycle.from_chart()
        if args.prestop_s is not None:
            lifecycle = replace(lifecycle, prestop_s=args.prestop_s)
        report = asyncio.run(
            run_drill(
                replicas=args.replicas,
                lifecycle=lifecycle,
                check_interval_s=args.check_interval_s,
                fall=args.fall,
                only=only,
            )
        )
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
