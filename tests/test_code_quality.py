"""Static checks run inside the test command: `uv run pytest` alone says if a change is fit."""

from __future__ import annotations

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
    """pyproject's [tool.mypy]: service/ strict, tests/ with the relaxations listed there."""
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
    checked = int(re.search(r"no issues found in (\d+) source files", result.stdout)[1])  # type: ignore[index]
    sources = [*ROOT.glob("service/**/*.py"), *ROOT.glob("tests/**/*.py")]
    assert checked == len(sources), f"mypy checked {checked} files of {len(sources)}"


def test_bandit_finds_no_medium_or_high_issue_in_service() -> None:
    result = run("bandit", "-q", "-r", "service", "-ll", "-f", "json")
    report = json.loads(result.stdout)
    assert report["results"] == [], [
        (r["filename"], r["line_number"], r["test_id"]) for r in report["results"]
    ]
    assert report["metrics"]["_totals"]["loc"] > 1000  # it really scanned the package
