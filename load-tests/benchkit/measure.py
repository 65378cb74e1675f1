"""Measuring one case: pre-flight, warm-up, wrk with CPU accounting, and the login-storm probe."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING

import httpx

from .cases import CASES, LOGIN_UNDER_LOAD, Case
from .machine import (
    CpuMeter,
    busy_cpu_seconds,
    children_cpu_seconds,
    log,
    steal_cpu_seconds,
    wait_for_quiet_machine,
    wait_until_idle,
)
from .profile import finish_profiler, start_profiler
from .target import BENCH_DESCRIPTION, Target
from .wrk import WRK_TIMEOUT_S, Load, Result, parse_wrk, run_wrk, wrk_command

if TYPE_CHECKING:
    from .environment import Managed

NOISY_FOREIGN_CPU = 0.15  # share of one CPU used by other work that makes a run "disturbed"
QUIET_BELOW = 0.10  # machine busy share under which --quiet-wait stops waiting


def preflight(target: Target, base_url: str, case: Case) -> None:
    """One request that must answer 2xx, so that a 3xx redirect cannot pass as a success."""
    headers = target.auth_headers() if case.auth else {}
    url = base_url + case.path
    if case.script == "login.lua":
        response = httpx.post(
            url, data={"username": target.email, "password": target.password}, timeout=30
        )
    elif case.method == "POST":
        body = {"title": "preflight", "description": BENCH_DESCRIPTION}
        response = httpx.post(url, json=body, headers=headers, timeout=10)
    else:
        response = httpx.get(url, headers=headers, timeout=30)
    if not 200 <= response.status_code < 300:
        sys.exit(
            f"bench: pre-flight {case.method} {url} answered {response.status_code}: "
            + response.text[:300]
        )


def settle(target: Target) -> None:
    """Let the previous case's leftovers (queued logins, the create cleanup) finish first."""
    for server in (target.server, target.aux):
        if server is not None:
            waited = wait_until_idle(server.pid)
            if waited > 2:
                log(f"waited {waited:.1f}s for {server.name} to go idle")


def quiet(target: Target) -> None:
    if target.quiet_wait_s > 0:
        busy = wait_for_quiet_machine(target.quiet_wait_s, QUIET_BELOW)
        if busy >= QUIET_BELOW:
            log(f"machine still {busy:.0%} busy after waiting {target.quiet_wait_s:.0f}s")


def meters_for(target: Target, case: Case) -> dict[str, CpuMeter]:
    meters: dict[str, CpuMeter] = {}
    # The template is a target of its own (its server, its token); the baselines run as `aux`.
    server = target.server if case.server in {"keelson", "template"} else target.aux
    if server is not None:
        meters["server"] = CpuMeter(server.pid)
    if target.postgres is not None and case.server != "hello":
        meters["db"] = CpuMeter(target.postgres.postmaster_pid, include_children=True)
    return meters


def start_accounting(target: Target, case: Case) -> Callable[[], tuple[dict[str, float], float]]:
    """Start the CPU meters; the returned function stops them and gives (CPU by meter, foreign
    CPU): what anything but the server, PostgreSQL, wrk and the runner burnt meanwhile."""
    meters = meters_for(target, case)
    for m in meters.values():
        m.start()
    machine_before, children_before = busy_cpu_seconds(), children_cpu_seconds()

    def stop() -> tuple[dict[str, float], float]:
        cpu = {k: m.stop() for k, m in meters.items()}
        ours = sum(cpu.values()) + children_cpu_seconds() - children_before
        return cpu, max(0.0, busy_cpu_seconds() - machine_before - ours)

    return stop


def measure(target: Target, case: Case, load: Load, base_url: str | None = None) -> Result:
    """Pre-flight, warm up, then measure; on a shared machine, re-measure a run that other work
    disturbed (up to --retry-noisy times) and keep the least disturbed one."""
    base_url = base_url or target.base_url
    url = base_url + case.path
    settle(target)
    preflight(target, base_url, case)
    env = target.wrk_env()
    if load.warmup_s > 0:
        run_wrk(
            wrk_command(url, case.script, load.threads, load.connections, load.warmup_s),
            env,
            load.warmup_s,
        )
    best: Result | None = None
    for attempt in range(1 + target.retry_noisy):
        settle(target)
        quiet(target)
        result = measure_once(target, case, load, url, env)
        if best is None or result.extra["foreign_cpu_s"] < best.extra["foreign_cpu_s"]:
            best = result
        foreign_share = result.extra["foreign_cpu_s"] / result.duration_s
        if foreign_share <= NOISY_FOREIGN_CPU:
            break
        log(f"{case.label}: other work used {foreign_share:.0%} of a CPU (attempt {attempt + 1})")
    assert best is not None
    best.extra["attempts"] = attempt + 1
    log(f"{case.label}: {best.rps:,.1f} req/s, p99 {best.p99_ms:.1f} ms, non-2xx {best.non_2xx}")
    return best


OPENED_CONNECTIONS = "keelson_db_connections_opened_total"


def counter_value(exposition: str, name: str) -> float | None:
    """A label-less sample's value in a Prometheus text exposition, None when it is absent."""
    for line in exposition.splitlines():
        sample, _, value = line.partition(" ")
        if sample == name:
            return float(value)
    return None


def opened_connections(target: Target, case: Case) -> float | None:
    """How many connections keelson's pool has opened so far (None: not keelson's case)."""
    if target.metrics_url is None or case.server != "keelson":
        return None
    try:
        body = httpx.get(target.metrics_url, timeout=5).text
    except httpx.HTTPError as error:
        log(f"{case.label}: could not read {target.metrics_url}: {error}")
        return None
    return counter_value(body, OPENED_CONNECTIONS)


def measure_once(target: Target, case: Case, load: Load, url: str, env: dict[str, str]) -> Result:
    opened_before = opened_connections(target, case)
    stop_accounting = start_accounting(target, case)
    stolen_before = steal_cpu_seconds()
    profiler = start_profiler(target, case, load.duration_s)
    cmd = wrk_command(url, case.script, load.threads, load.connections, load.duration_s)
    result = parse_wrk(case.key, url, cmd, run_wrk(cmd, env, load.duration_s), case.label)
    cpu, foreign = stop_accounting()
    opened_after = opened_connections(target, case)
    if opened_before is not None and opened_after is not None:
        # New database connections during the run: steady load should need none (pool churn).
        result.extra["db_connections_opened"] = round(opened_after - opened_before)
    result.extra["foreign_cpu_s"] = round(foreign, 2)
    result.extra["steal_cpu_s"] = round(steal_cpu_seconds() - stolen_before, 2)
    if profiler is not None:
        result.extra["profile"] = finish_profiler(*profiler)
    result.server_cpu_s = cpu.get("server")
    result.db_cpu_s = cpu.get("db")
    if result.server_cpu_s is not None and result.requests:
        result.extra["server_cpu_us_per_request"] = round(
            1e6 * result.server_cpu_s / result.requests
        )
    if case.script == "post_json.lua":  # create, lean-create, template-create: drop wrk's rows
        target.delete_bench_rows()
    return result


def measure_login_under_load(target: Target, load: Load, probe_connections: int) -> Result:
    """32 clients on login while a second wrk measures GET /users/me: is the event loop free?"""
    login, me = CASES["login"], CASES["me"]
    settle(target)
    preflight(target, target.base_url, login)
    preflight(target, target.base_url, me)
    env = target.wrk_env()
    login_cmd = wrk_command(
        target.base_url + login.path, login.script, load.threads, load.connections, load.duration_s
    )
    # The probe starts one second later and ends one second earlier: it only sees the loaded state.
    probe_seconds = max(1.0, load.duration_s - 2)
    probe_cmd = wrk_command(
        target.base_url + me.path, me.script, 1, probe_connections, probe_seconds
    )
    timeout = load.duration_s + WRK_TIMEOUT_S + 30
    quiet(target)
    stop_accounting = start_accounting(target, me)
    stolen_before = steal_cpu_seconds()
    login_proc = subprocess.Popen(login_cmd, env=env, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(min(1.0, load.duration_s / 4))
        probe_out = run_wrk(probe_cmd, env, timeout)
        login_out, _ = login_proc.communicate(timeout=timeout)
    finally:
        if login_proc.poll() is None:  # the probe failed: do not leave the login wrk behind
            login_proc.kill()
            login_proc.wait(timeout=10)
    cpu, foreign = stop_accounting()
    probe = parse_wrk(LOGIN_UNDER_LOAD, target.base_url + me.path, probe_cmd, probe_out)
    # CPU figures cover the whole login run; the probe's duration is shorter.
    probe_share = probe_seconds / load.duration_s
    probe.server_cpu_s = None if "server" not in cpu else cpu["server"] * probe_share
    probe.db_cpu_s = None if "db" not in cpu else cpu["db"] * probe_share
    probe.extra["foreign_cpu_s"] = round(foreign * probe_share, 2)
    probe.extra["steal_cpu_s"] = round((steal_cpu_seconds() - stolen_before) * probe_share, 2)
    probe.label = f"GET /api/v1/users/me while {load.connections} clients log in"
    logins = parse_wrk(login.key, target.base_url + login.path, login_cmd, login_out, login.label)
    probe.extra["login"] = asdict(logins)
    log(
        f"login under load: me p99 {probe.p99_ms:.1f} ms at {probe.rps:,.0f} req/s; "
        f"login {logins.rps:.1f} req/s"
    )
    return probe


def measure_cases(
    target: Target,
    cases: list[str],
    load: Load,
    args: argparse.Namespace,
    managed: Managed | None,
    template: Target | None = None,
) -> dict[str, Result]:
    """Each case in turn; a baseline case starts its server only while it is measured; a template
    case runs against `template` (the --template-backend server, with its own token)."""
    results: dict[str, Result] = {}
    for key in cases:
        if key == LOGIN_UNDER_LOAD:
            results[key] = measure_login_under_load(target, load, args.probe_connections)
        elif CASES[key].server == "template":
            if template is None:
                log(f"{key} skipped: the template is measured only with --template-backend")
                continue
            results[key] = measure(template, CASES[key], load)
        elif CASES[key].server != "keelson":
            if managed is None:
                log(f"{key} skipped: baselines run only next to a bench-managed keelson")
                continue
            target.aux = managed.start_aux(CASES[key].server)
            try:
                results[key] = measure(target, CASES[key], load, base_url=target.aux.base_url)
            finally:
                managed.stop_aux()
                target.aux = None
        else:
            results[key] = measure(target, CASES[key], load)
    return results
