"""The runner's wrk scripts report what happened, its gate fails on the issue's budgets, and
`load-tests/bench.py` (the entry point CI calls) refuses what it cannot run."""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
LOAD_TESTS = ROOT / "load-tests"


def _benchkit(module: str) -> ModuleType:
    """A module of load-tests/benchkit, imported the way `python load-tests/bench.py` finds it."""
    if str(LOAD_TESTS) not in sys.path:
        sys.path.append(str(LOAD_TESTS))
    return importlib.import_module(f"benchkit.{module}")


@pytest.fixture(scope="module")
def runner() -> ModuleType:
    """wrk's command line and output parsing."""
    return _benchkit("wrk")


@pytest.fixture(scope="module")
def gates() -> ModuleType:
    return _benchkit("gates")


@pytest.fixture(scope="module")
def wrk() -> str:
    return require_tool("wrk")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, str, bytes]] = []  # noqa: RUF012 - test recorder

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(self.seen) < 50:
            self.seen.append((self.command, self.path, self.headers.get("Authorization", ""), body))
        status = 500 if self.path.startswith("/fail") else 200
        payload = b"true"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _answer  # noqa: N815 - http.server's naming
    do_POST = _answer  # noqa: N815

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def http_server() -> Iterator[str]:
    _Handler.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _wrk(runner: ModuleType, url: str, script: str, env: dict[str, str]) -> Any:
    cmd = runner.wrk_command(url, script, 1, 2, 1)
    out = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=30, check=True
    )
    return runner.parse_wrk("probe", url, cmd, out.stdout)


def test_get_script_sends_the_bearer_token_and_reports_json(
    runner: ModuleType, wrk: str, http_server: str
) -> None:
    result = _wrk(runner, http_server + "/ok", "get.lua", {"WRK_TOKEN": "t0k"})
    assert result.requests > 0
    assert result.rps > 0
    assert result.non_2xx == 0
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms
    method, path, auth, _ = _Handler.seen[0]
    assert (method, path, auth) == ("GET", "/ok", "Bearer t0k")


def test_non_2xx_answers_are_counted(runner: ModuleType, wrk: str, http_server: str) -> None:
    result = _wrk(runner, http_server + "/fail", "get.lua", {})
    assert result.requests > 0
    assert result.non_2xx == result.requests


def test_login_script_posts_the_url_encoded_form(
    runner: ModuleType, wrk: str, http_server: str
) -> None:
    env = {"WRK_USERNAME": "a+b@example.com", "WRK_PASSWORD": "p&ss word"}
    _wrk(runner, http_server + "/login", "login.lua", env)
    method, _, _, body = _Handler.seen[0]
    assert method == "POST"
    assert body == b"username=a%2Bb%40example.com&password=p%26ss%20word"


def test_post_json_script_sends_the_body_with_the_token(
    runner: ModuleType, wrk: str, http_server: str
) -> None:
    env = {"WRK_TOKEN": "x", "WRK_BODY": '{"a":1}'}
    _wrk(runner, http_server + "/items/", "post_json.lua", env)
    method, _, auth, body = _Handler.seen[0]
    assert (method, auth, body) == ("POST", "Bearer x", b'{"a":1}')


def _result(case: str, **overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "case": case,
        "label": case,
        "url": "http://127.0.0.1/",
        "threads": 2,
        "connections": 32,
        "duration_s": 10.0,
        "requests": 30_000,
        "rps": 3_000.0,
        "p50_ms": 5.0,
        "p75_ms": 6.0,
        "p90_ms": 8.0,
        "p99_ms": 10.0,
        "p999_ms": 12.0,
        "max_ms": 20.0,
        "mean_ms": 5.0,
        "non_2xx": 0,
        "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0},
    }
    fields.update(overrides)
    return _benchkit("wrk").Result(**fields)


def _missed(checks: list[Any]) -> set[str]:
    return {c.name for c in checks if c.gated and not c.met}


def test_gate_passes_when_every_budget_holds(gates: ModuleType) -> None:
    results = {
        "hello": _result("hello", rps=10_000.0),
        "health": _result("health", rps=9_000.0),
        "me": _result("me"),
    }
    assert _missed(gates.evaluate(results, gate_throughput=True)) == set()


def test_gate_fails_on_a_p99_over_budget(gates: ModuleType) -> None:
    checks = gates.evaluate({"me": _result("me", p99_ms=26.0)}, gate_throughput=False)
    assert _missed(checks) == {"me: p99"}


def test_report_latency_reports_a_p99_miss_and_still_gates_the_rest(gates: ModuleType) -> None:
    results = {"me": _result("me", p99_ms=26.0), "items": _result("items", non_2xx=1)}
    checks = gates.evaluate(results, gate_throughput=False, gate_latency=False)
    assert _missed(checks) == {"items: every response 2xx"}
    [p99] = [c for c in checks if c.name == "me: p99"]
    assert (p99.met, p99.gated, p99.value) == (False, False, "26.0 ms")


def test_p99_against_the_same_runs_lean_baseline_is_gated_even_when_latency_is_reported(
    gates: ModuleType,
) -> None:
    results = {
        "me": _result("me", p99_ms=41.0),
        "lean-me": _result("lean-me", p99_ms=20.0),
        "items": _result("items", p99_ms=70.0),
        "lean-items": _result("lean-items", p99_ms=35.0),
    }
    checks = gates.evaluate(results, gate_throughput=False, gate_latency=False)
    # 41 > 2 x 20 fails; 70 = 2 x 35 holds; the absolute budgets (25 / 60 ms) are only reported.
    assert _missed(checks) == {"me: p99 vs the lean implementation, same run"}
    [me] = [c for c in checks if c.name == "me: p99 vs the lean implementation, same run"]
    assert (me.target, me.value) == ("<= 2x its 20.0 ms = 40.0 ms", "41.0 ms (2.05x)")
    reported = {c.name for c in checks if not c.gated and not c.met}
    assert reported == {"me: p99", "items: p99"}


def test_no_lean_baseline_in_the_run_means_no_relative_p99_check(gates: ModuleType) -> None:
    checks = gates.evaluate({"me": _result("me", p99_ms=200.0)}, gate_throughput=False)
    assert not [c for c in checks if "lean" in c.name]
    assert _missed(checks) == {"me: p99"}


def test_the_default_run_measures_each_database_case_next_to_its_lean_baseline() -> None:
    defaults = _benchkit("cases").DEFAULT_CASES
    for key in ("me", "items", "create"):
        assert defaults[defaults.index(key) + 1] == f"lean-{key}"


def test_gate_fails_on_any_non_2xx(gates: ModuleType) -> None:
    checks = gates.evaluate({"items": _result("items", non_2xx=1)}, gate_throughput=False)
    assert _missed(checks) == {"items: every response 2xx"}


def test_gate_fails_when_health_is_under_80_percent_of_hello(gates: ModuleType) -> None:
    results = {
        "hello": _result("hello", rps=10_000.0),
        "health": _result("health", rps=7_900.0),
    }
    assert _missed(gates.evaluate(results, gate_throughput=False)) == {
        "health: req/s vs bare FastAPI hello"
    }


def test_throughput_targets_gate_only_when_asked(gates: ModuleType) -> None:
    slow = {"create": _result("create", rps=1_000.0)}
    assert _missed(gates.evaluate(slow, gate_throughput=False)) == set()
    assert _missed(gates.evaluate(slow, gate_throughput=True)) == {
        "create: req/s (5x the template, its table figure)"
    }


def test_login_under_load_gates_the_probe_p99_and_the_logins(gates: ModuleType) -> None:
    logins = {"requests": 100, "non_2xx": 0, "socket_errors": {"timeout": 2}}
    probe = _result("login-under-load", p99_ms=51.0, extra={"login": logins})
    assert _missed(gates.evaluate({"login-under-load": probe}, gate_throughput=False)) == {
        "login-under-load: GET /users/me p99",
        "login-under-load: logins 2xx",
    }


def _bench_py(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LOAD_TESTS / "bench.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_runner_refuses_non_loopback_targets() -> None:
    result = _bench_py("--base-url", "http://10.1.2.3")
    assert result.returncode != 0
    assert "only loopback" in result.stderr


def test_entry_point_lists_every_mode_in_its_help() -> None:
    result = _bench_py("--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--gate", "--pool-sweep", "--scale", "--profile", "--base-url", "--keep-workdir"):
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cases", "me,nope"], "unknown cases: nope"),
        (["--pool-combos", "10"], "'10' is not pool_size:max_overflow"),
        (["--pool-combos", "0:0"], "--pool-combos pool_size: '0' needs integers >= 1"),
        (["--sweep-connections", "32,many"], "is not a comma list of integers"),
        (["--scale", "1k"], "--scale: '1k' is not a comma list of integers"),
        (["--duration", "0"], "--duration must be > 0"),
        (["--connections", "1", "--threads", "2"], "--connections must be at least --threads"),
        (["--service-env", "NOEQUALS"], "'NOEQUALS' is not KEY=VALUE"),
    ],
)
def test_runner_refuses_invalid_arguments_before_starting_anything(
    args: list[str], message: str
) -> None:
    # `false` as keelson: should parsing ever let the arguments through, the run stops at migrate.
    result = _bench_py(*args, "--keelson-cmd", "false")
    started, _ = _stop_leftovers(result.stderr)
    assert result.returncode == 2
    assert message in result.stderr
    assert started == []


def _stop_leftovers(stderr: str) -> tuple[list[str], list[int]]:
    """The temp dirs a run logged, and the pids still naming one (a postmaster's -D), stopped here
    by pid so that a regression leaves nothing running."""
    started = re.findall(r"(/tmp/keelson-[\w-]+)", stderr)
    leaked = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(path in cmdline for path in started):
            leaked.append(int(proc.name))
    for pid in leaked:
        os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
    return started, leaked


def test_a_failed_migrate_stops_the_runs_postgres(wrk: str) -> None:
    result = _bench_py("--keelson-cmd", "false", "--duration", "1")
    started, leaked = _stop_leftovers(result.stderr)
    assert result.returncode == 1
    assert "keelson migrate failed" in result.stderr
    assert started, result.stderr
    assert leaked == [], f"PostgreSQL still running after the run: {leaked}"
    assert not [p for p in started if Path(p).exists()]


def test_a_counter_is_read_from_the_exposition_by_its_exact_name() -> None:
    measure = _benchkit("measure")
    exposition = (
        "# HELP keelson_db_connections_opened_total Connections the pool opened.\n"
        "# TYPE keelson_db_connections_opened_total counter\n"
        "keelson_db_connections_opened_total 17.0\n"
        "keelson_db_connections_opened_created 1.7e9\n"
    )
    assert measure.counter_value(exposition, measure.OPENED_CONNECTIONS) == 17.0
    assert measure.counter_value(exposition, "keelson_db_connections_opened") is None
    assert measure.counter_value("", measure.OPENED_CONNECTIONS) is None
