"""The benchmark runner works end to end: Postgres, one keelson process, wrk on every case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "load-tests" / "bench.py"
# The default run: the baselines, login, and each database case with its lean counterpart.
DATABASE_CASES = ("me", "items", "create")
EVERY_CASE = {"hello", "health", "login", "login-under-load"} | {
    prefix + key for key in DATABASE_CASES for prefix in ("", "lean-")
}


@pytest.fixture(scope="module")
def wrk() -> str:
    return require_tool("wrk")


@pytest.mark.slow
def test_runner_measures_every_case_without_errors(wrk: str, tmp_path: Path) -> None:
    report_path = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--duration",
            "2",
            "--warmup",
            "0",
            # Few connections: 32 parallel argon2 logins would not finish one in a 2 s run.
            "--connections",
            "4",
            "--probe-connections",
            "2",
            "--items",
            "200",
            "--json",
            str(report_path),
        ],
        cwd=ROOT,
        env={**os.environ, "WRK": wrk},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    report = json.loads(report_path.read_text())
    (server,) = report["servers"]
    cases = server["cases"]
    assert set(cases) == EVERY_CASE
    for name, case in cases.items():
        assert case["rps"] > 0, name
        assert case["extra"]["steal_cpu_s"] >= 0, name  # the hypervisor's share, per case
        assert case["non_2xx"] == 0, name
        assert sum(case["socket_errors"].values()) == 0, name
    # keelson's own cases say how many connections its pool opened meanwhile; the hello-world
    # baseline is another server.
    for name in ("health", "login", "me", "items", "create"):
        opened = cases[name]["extra"]["db_connections_opened"]
        assert isinstance(opened, int), name
        assert 0 <= opened <= 15, name  # DB_POOL_SIZE + DB_MAX_OVERFLOW
    for name in ("hello", "lean-me", "lean-items", "lean-create"):
        assert "db_connections_opened" not in cases[name]["extra"], name
    # The default run has each case's lean counterpart, so the relative p99 gate was evaluated.
    relative = {c["name"] for c in server["checks"] if "same run" in c["name"] and c["gated"]}
    assert relative == {
        f"{key}: p99 vs the lean implementation, same run" for key in DATABASE_CASES
    }
    logins = cases["login-under-load"]["extra"]["login"]
    assert logins["requests"] > 0
    assert logins["non_2xx"] == 0
    assert "req/s" in result.stdout  # the table was printed
