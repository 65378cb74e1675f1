"""The runner's wrk scripts report what happened, and its gate fails on the issue's budgets."""

from __future__ import annotations

import importlib.util
import os
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


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench", ROOT / "load-tests" / "bench.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module
    spec.loader.exec_module(module)
    return module


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


def _wrk(bench: ModuleType, url: str, script: str, env: dict[str, str]) -> Any:
    cmd = bench.wrk_command(url, script, 1, 2, 1)
    out = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=30, check=True
    )
    return bench.parse_wrk("probe", url, cmd, out.stdout)


def test_get_script_sends_the_bearer_token_and_reports_json(
    bench: ModuleType, wrk: str, http_server: str
) -> None:
    result = _wrk(bench, http_server + "/ok", "get.lua", {"WRK_TOKEN": "t0k"})
    assert result.requests > 0
    assert result.rps > 0
    assert result.non_2xx == 0
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms
    method, path, auth, _ = _Handler.seen[0]
    assert (method, path, auth) == ("GET", "/ok", "Bearer t0k")


def test_non_2xx_answers_are_counted(bench: ModuleType, wrk: str, http_server: str) -> None:
    result = _wrk(bench, http_server + "/fail", "get.lua", {})
    assert result.requests > 0
    assert result.non_2xx == result.requests


def test_login_script_posts_the_url_encoded_form(
    bench: ModuleType, wrk: str, http_server: str
) -> None:
    env = {"WRK_USERNAME": "a+b@example.com", "WRK_PASSWORD": "p&ss word"}
    _wrk(bench, http_server + "/login", "login.lua", env)
    method, _, _, body = _Handler.seen[0]
    assert method == "POST"
    assert body == b"username=a%2Bb%40example.com&password=p%26ss%20word"


def test_post_json_script_sends_the_body_with_the_token(
    bench: ModuleType, wrk: str, http_server: str
) -> None:
    _wrk(bench, http_server + "/items/", "post_json.lua", {"WRK_TOKEN": "x", "WRK_BODY": '{"a":1}'})
    method, _, auth, body = _Handler.seen[0]
    assert (method, auth, body) == ("POST", "Bearer x", b'{"a":1}')


def _result(bench: ModuleType, case: str, **overrides: Any) -> Any:
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
    return bench.Result(**fields)


def _missed(checks: list[Any]) -> set[str]:
    return {c.name for c in checks if c.gated and not c.met}


def test_gate_passes_when_every_budget_holds(bench: ModuleType) -> None:
    results = {
        "hello": _result(bench, "hello", rps=10_000.0),
        "health": _result(bench, "health", rps=9_000.0),
        "me": _result(bench, "me"),
    }
    assert _missed(bench.evaluate(results, gate_throughput=True)) == set()


def test_gate_fails_on_a_p99_over_budget(bench: ModuleType) -> None:
    checks = bench.evaluate({"me": _result(bench, "me", p99_ms=26.0)}, gate_throughput=False)
    assert _missed(checks) == {"me: p99"}


def test_gate_fails_on_any_non_2xx(bench: ModuleType) -> None:
    checks = bench.evaluate({"items": _result(bench, "items", non_2xx=1)}, gate_throughput=False)
    assert _missed(checks) == {"items: every response 2xx"}


def test_gate_fails_when_health_is_under_80_percent_of_hello(bench: ModuleType) -> None:
    results = {
        "hello": _result(bench, "hello", rps=10_000.0),
        "health": _result(bench, "health", rps=7_900.0),
    }
    assert _missed(bench.evaluate(results, gate_throughput=False)) == {
        "health: req/s vs bare FastAPI hello"
    }


def test_throughput_targets_gate_only_when_asked(bench: ModuleType) -> None:
    slow = {"create": _result(bench, "create", rps=1_000.0)}
    assert _missed(bench.evaluate(slow, gate_throughput=False)) == set()
    assert _missed(bench.evaluate(slow, gate_throughput=True)) == {
        "create: req/s (5x the template)"
    }


def test_login_under_load_gates_the_probe_p99_and_the_logins(bench: ModuleType) -> None:
    logins = {"requests": 100, "non_2xx": 0, "socket_errors": {"timeout": 2}}
    probe = _result(bench, "login-under-load", p99_ms=51.0, extra={"login": logins})
    assert _missed(bench.evaluate({"login-under-load": probe}, gate_throughput=False)) == {
        "login-under-load: GET /users/me p99",
        "login-under-load: logins 2xx",
    }


def test_runner_refuses_non_loopback_targets() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "load-tests" / "bench.py"), "--base-url", "http://10.1.2.3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "only loopback" in result.stderr
