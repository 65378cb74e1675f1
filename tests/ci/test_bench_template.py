"""`bench.py --template-backend DIR`: the option refuses what it cannot run before anything starts,
the template's counterpart cases join the run, and the report and the throughput checks use the
template's same-run figures when there are some (no template checkout needed here)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.ci.test_bench_gate import _benchkit
from tests.ci.test_bench_gate import _result as gate_result
from tests.support.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
LOAD_TESTS = ROOT / "load-tests"


def _bench_py(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LOAD_TESTS / "bench.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _executable(path: Path, body: str = "exit 0") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _checkout(
    root: Path,
    *,
    backend: str = "backend",
    alembic_ini: bool = True,
    venv: str | None = "backend/.venv",
    tools: tuple[str, ...] = ("python", "uvicorn", "alembic"),
    python_body: str = "exit 0",
) -> Path:
    """The files `locate` looks at, as a clone (backend="backend") or a bare backend/ ("")."""
    app = root / backend / "app"
    app.mkdir(parents=True)
    (app / "main.py").write_text("")
    if alembic_ini:
        (root / backend / "alembic.ini").write_text("")
    if venv is not None:
        for tool in tools:
            _executable(root / venv / "bin" / tool, python_body if tool == "python" else "exit 0")
    return root


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "nowhere", "no such directory"),
        (lambda tmp: tmp, "no app/main.py in it or in its backend/"),
        (lambda tmp: _checkout(tmp, alembic_ini=False), "has no alembic.ini"),
        (lambda tmp: _checkout(tmp, venv=None), "no virtualenv (.venv/bin/python in"),
        (lambda tmp: _checkout(tmp, tools=("python",)), "/.venv has no uvicorn or alembic"),
        (lambda tmp: _checkout(tmp, tools=("python", "uvicorn")), "/.venv has no alembic:"),
    ],
    ids=["missing", "not-a-checkout", "no-alembic-ini", "no-venv", "no-tools", "no-alembic"],
)
def test_template_backend_refuses_an_unusable_directory_before_starting_anything(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    directory = make(tmp_path)
    # `false` as keelson: should the option ever let the run through, it stops at migrate.
    result = _bench_py("--template-backend", str(directory), "--keelson-cmd", "false")
    assert result.returncode == 2, result.stderr
    assert f"--template-backend {directory}: " in result.stderr
    assert message in result.stderr
    assert "starting PostgreSQL" not in result.stderr


ONLY_CASES_MODE = "not with --base-url, --pool-sweep or --scale"


@pytest.mark.parametrize(
    ("args", "with_checkout", "message"),
    [
        (["--cases", "me,template-me"], False, "template-me: the template is measured only with"),
        (["--base-url", "http://127.0.0.1:9"], True, ONLY_CASES_MODE),
        (["--scale", "1000"], True, ONLY_CASES_MODE),
        (["--pool-sweep"], True, ONLY_CASES_MODE),
    ],
)
def test_template_cases_and_modes_are_refused_where_no_template_can_run(
    tmp_path: Path, args: list[str], with_checkout: bool, message: str
) -> None:
    option = ["--template-backend", str(_checkout(tmp_path))] if with_checkout else []
    result = _bench_py(*args, *option, "--keelson-cmd", "false")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "starting PostgreSQL" not in result.stderr


def test_a_checkout_is_found_as_a_clone_with_a_workspace_venv_or_as_its_backend(
    tmp_path: Path,
) -> None:
    template = _benchkit("template")
    clone = _checkout(tmp_path / "clone", venv=".venv")  # uv workspace: .venv at the root
    found = template.locate(str(clone))
    assert (found.root, found.backend, found.venv) == (clone, clone / "backend", clone / ".venv")
    bare = _checkout(tmp_path / "bare", backend="", venv=".venv")
    found = template.locate(str(bare))
    assert (found.backend, found.python) == (bare, bare / ".venv" / "bin" / "python")


def test_template_backend_adds_the_template_counterpart_of_each_chosen_case(
    tmp_path: Path,
) -> None:
    cli = _benchkit("cli")
    checkout = _checkout(tmp_path)
    args = cli.parse_args(
        [
            "--cases",
            "hello,me,items,create,lean-me,login-under-load,template-items",
            "--template-backend",
            str(checkout),
        ]
    )
    assert args.cases == [
        "hello",
        "me",
        "items",
        "create",
        "lean-me",
        "login-under-load",
        "template-items",
        "template-me",
        "template-create",
    ]
    assert args.template_backend.backend == checkout / "backend"
    # Without the option the cases stay as chosen.
    assert cli.parse_args(["--cases", "me,items"]).cases == ["me", "items"]


def test_the_template_gets_its_own_settings_and_none_of_keelsons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = _benchkit("template")
    monkeypatch.setenv("DATABASE_URL", "postgresql://keelson@127.0.0.1/keelson")
    monkeypatch.setenv("SECRET_KEY", "keelsons-key")
    checkout = template.locate(str(_checkout(tmp_path)))
    env = template.template_env(
        checkout,
        "postgresql://postgres:pw%40x@127.0.0.1:54321/template",
        "templates-key",
        "admin@example.com",
        "bench-password",
    )
    assert {k: env[k] for k in env if k.startswith(("POSTGRES_", "FIRST_SUPERUSER"))} == {
        "POSTGRES_SERVER": "127.0.0.1",
        "POSTGRES_PORT": "54321",
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": "pw@x",
        "POSTGRES_DB": "template",
        "FIRST_SUPERUSER": "admin@example.com",
        "FIRST_SUPERUSER_PASSWORD": "bench-password",
    }
    assert env["SECRET_KEY"] == "templates-key"
    assert "DATABASE_URL" not in env
    assert env["PATH"].split(os.pathsep)[0] == str(checkout.venv / "bin")
    assert env["ENVIRONMENT"] == "staging"


def _result(case: str, **overrides: Any) -> Any:
    """test_bench_gate's Result, named as the report names the case, at 1,000 req/s."""
    fields = {"label": _benchkit("cases").CASES[case].label, "requests": 10_000, "rps": 1_000.0}
    return gate_result(case, **{**fields, **overrides})


def _row(table: str, label: str) -> list[str]:
    line = next(x for x in table.splitlines() if x.startswith(label))
    return re.split(r"\s{2,}", line[len(label) :].strip())


def test_the_table_compares_with_the_template_of_the_same_run_when_it_was_measured() -> None:
    report = _benchkit("report")
    table = report.results_table(
        {"me": _result("me", rps=1_200.0), "template-me": _result("template-me", rps=400.0)}
    )
    # req/s, p50, p99, non-2xx, sock err, template req/s, from, x tmpl, ...
    assert _row(table, "GET /api/v1/users/me")[5:8] == ["400.0", "run", "3.0x"]
    template_row = _row(table, "template: GET /api/v1/users/me")
    assert template_row[0] == "400.0"
    assert "run" not in template_row  # the template's own rows compare with nothing


def test_the_table_falls_back_to_the_reference_figure_without_a_template_run() -> None:
    report = _benchkit("report")
    table = report.results_table({"me": _result("me", rps=1_020.0)})
    assert _row(table, "GET /api/v1/users/me")[5:8] == ["510.0", "table", "2.0x"]


def test_the_json_report_names_the_source_of_each_template_figure() -> None:
    run_cases = _benchkit("run_cases")
    results = {
        "me": _result("me"),
        "items": _result("items"),
        "lean-me": _result("lean-me"),
        "template-me": _result("template-me", rps=400.0),
    }
    assert run_cases.template_figures(results) == {
        "me": {"rps": 400.0, "from": "run"},
        "items": {"rps": 194.0, "from": "table"},
    }


def _throughput(checks: list[Any], key: str) -> Any:
    return next(c for c in checks if c.name.startswith(f"{key}: req/s ("))


def test_throughput_targets_use_the_same_run_template_figure() -> None:
    gates = _benchkit("gates")
    results = {
        "me": _result("me", rps=600.0),
        "template-me": _result("template-me", rps=100.0),
        "login": _result("login", rps=9.0),
        "template-login": _result("template-login", rps=10.0),
    }
    checks = gates.evaluate(results, gate_throughput=True)
    me = _throughput(checks, "me")
    assert (me.name, me.target, me.value, me.met) == (
        "me: req/s (5x the template, same run)",
        ">= 500.0",
        "600.0 (6.00x)",
        True,
    )
    login = _throughput(checks, "login")
    assert (login.name, login.target, login.met) == (
        "login: req/s (the template's login req/s, same run)",
        ">= 10.0",
        False,
    )
    assert not [c for c in checks if c.name.startswith("template-me: req/s")]


def test_throughput_targets_use_the_table_figure_without_a_template_run() -> None:
    gates = _benchkit("gates")
    me = _throughput(gates.evaluate({"me": _result("me", rps=600.0)}, True), "me")
    assert (me.name, me.target, me.met) == (
        "me: req/s (5x the template, its table figure)",
        ">= 2,550.0",
        False,
    )


def test_only_the_two_known_item_tables_reach_sql_text() -> None:
    target = _benchkit("target")
    with pytest.raises(ValueError, match="unknown items table"):
        target.Target("t", "http://127.0.0.1:1", "a@example.com", "pw", items_table='x"; DROP')


def _processes_under(paths: list[str]) -> list[int]:
    """Pids whose command line or open files name one of `paths` (a postmaster's -D, a server's
    log in the run's work dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            names = [(proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()]
            names += [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        if any(path in name for path in paths for name in names):
            found.append(int(proc.name))
    return found


@pytest.mark.slow
def test_a_failing_template_prestart_stops_every_process_of_the_run(tmp_path: Path) -> None:
    require_tool("wrk")
    checkout = _checkout(tmp_path, python_body="echo template says no >&2; exit 3")
    result = _bench_py(
        "--cases",
        "health",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--template-backend",
        str(checkout),
        timeout=240,
    )
    started = re.findall(r"(/tmp/keelson-[\w-]+)", result.stderr)
    leaked = _processes_under(started)
    for pid in leaked:  # stop a regression's leftovers by pid (SIGINT: PostgreSQL's fast shutdown)
        os.kill(pid, signal.SIGINT)
    assert result.returncode == 1, result.stderr
    assert "bench: template backend_pre_start failed (3):" in result.stderr
    assert "template says no" in result.stderr
    assert started, result.stderr
    assert leaked == [], f"still running after the run: {leaked}"
    assert not [p for p in started if Path(p).exists()]
