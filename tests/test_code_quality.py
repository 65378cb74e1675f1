"""Static checks run inside the test command: `uv run pytest` alone says if a change is fit."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_lint_is_clean() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean_strict_on_service_and_on_tests() -> None:
    """pyproject's [tool.mypy]: service/ and the bench strict, tests/ with the relaxations."""
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
    checked = int(re.search(r"no issues found in (\d+) source files", result.stdout)[1])  # type: ignore[index]
    sources = [
        *ROOT.glob("service/**/*.py"),
        *ROOT.glob("load-tests/benchkit/**/*.py"),
        *ROOT.glob("tests/**/*.py"),
    ]
    assert checked == len(sources), f"mypy checked {checked} files of {len(sources)}"


def test_bandit_finds_no_medium_or_high_issue_in_service() -> None:
    result = run("bandit", "-q", "-r", "service", "-ll", "-f", "json")
    report = json.loads(result.stdout)
    assert report["results"] == [], [
        (r["filename"], r["line_number"], r["test_id"]) for r in report["results"]
    ]
    assert report["metrics"]["_totals"]["loc"] > 1000  # it really scanned the package


HTTPX_CLIENTS = {"AsyncClient", "Client", "get", "post", "put", "patch", "delete", "head"}
HTTPX_CLIENTS |= {"options", "request", "stream"}
CLIENT_FACTORY = ROOT / "tests" / "support" / "clients.py"


def unscanned_http_clients(source: str) -> list[int]:
    """Lines that build an httpx client or send a request without tests.support.clients
    (annotations such as `client: httpx.AsyncClient` are fine: only calls count)."""
    tree = ast.parse(source)
    imported = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "httpx"
        for alias in node.names
        if alias.name in HTTPX_CLIENTS
    }
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "httpx"
            and func.attr in HTTPX_CLIENTS
        ) or (isinstance(func, ast.Name) and func.id in imported):
            lines.append(node.lineno)
    return sorted(lines)


def test_unscanned_client_detector_sees_each_way_of_building_one() -> None:
    source = "import httpx\nfrom httpx import AsyncClient as C\n"
    source += "httpx.get('u')\nc = httpx.Client()\nC()\n"
    assert unscanned_http_clients(source) == [3, 4, 5]
    harmless = "import httpx\nhttpx.Response(200)\nc: httpx.AsyncClient\nhttpx.TransportError\n"
    assert unscanned_http_clients(harmless) == []


def test_every_http_client_in_the_suite_goes_through_the_secrets_scan() -> None:
    """A response that skips the scan could carry a hash out unnoticed (issue 17, point 6)."""
    found = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if path != CLIENT_FACTORY and (lines := unscanned_http_clients(path.read_text()))
    }
    assert found == {}, f"build HTTP clients with tests.support.clients instead: {found}"
