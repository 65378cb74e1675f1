"""Fixtures for the dashboard and alert-rule checks: the promtool binary."""

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.ops.metric_names import REPO_ROOT
from tests.support.tools import require_tool

type RunPromtool = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def promtool() -> RunPromtool:
    """Run promtool from the repo root; missing promtool fails on CI and skips elsewhere."""
    binary = require_tool("promtool", Path("/usr/bin/promtool"))

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, *map(str, args)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run
