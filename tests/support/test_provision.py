"""The tool plugin: what it would install, and how a run ends when a tool is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.provision import plan
from tests.support.tools import REPO, TOOLS, in_ci

NEEDS_A_MISSING_TOOL = """
from tests.support.tools import require_tool

def test_needs_the_tool():
    require_tool("no-such-tool-xyz", hint="apt-get install no-such-tool-xyz")

def test_plain():
    pass
"""


def run_inner_pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A separate pytest run over one file, with only the plugin (no repo conftest)."""
    (tmp_path / "test_inner.py").write_text(NEEDS_A_MISSING_TOOL)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    base = {k: v for k, v in os.environ.items() if k not in {"CI", "KEELSON_ALLOW_SKIPS"}}
    plugins = ["-p", "tests.support.provision", "-p", "no:randomly", "-p", "no:cacheprovider"]
    config = ["-c", str(tmp_path / "pytest.ini")]
    return subprocess.run(
        [sys.executable, "-m", "pytest", *plugins, "-q", *config, str(tmp_path)],
        cwd=tmp_path,
        env={**base, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_skip_for_a_missing_tool_fails_the_run_and_says_how_to_allow_it(tmp_path: Path) -> None:
    result = run_inner_pytest(tmp_path)
    assert result.returncode == 1, result.stdout
    assert "1 passed, 1 skipped" in result.stdout
    assert (
        "[skips] 1 skipped: 1 x no-such-tool-xyz not found (apt-get install no-such-tool-xyz)"
        in result.stdout
    )
    assert "set KEELSON_ALLOW_SKIPS=no-such-tool-xyz to accept the skips" in result.stdout


@pytest.mark.parametrize("allowed", ["no-such-tool-xyz", "helm, no-such-tool-xyz", "all"])
def test_an_allowed_tool_skip_passes_and_is_still_reported(tmp_path: Path, allowed: str) -> None:
    result = run_inner_pytest(tmp_path, KEELSON_ALLOW_SKIPS=allowed)
    assert result.returncode == 0, result.stdout
    assert "[skips] 1 skipped: 1 x no-such-tool-xyz not found" in result.stdout
    assert "FAILED" not in result.stdout


def test_in_ci_a_missing_tool_fails_the_test_itself(tmp_path: Path) -> None:
    result = run_inner_pytest(tmp_path, CI="true")
    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 passed" in result.stdout
    assert "no-such-tool-xyz not found" in result.stdout


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("TRUE ", True), ("yes", False), ("", False)],
)
def test_ci_is_detected_by_one_rule(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci() is expected


def test_plan_installs_debian_packages_as_root_then_runs_the_npm_scripts() -> None:
    missing = [TOOLS["helm"], TOOLS["wrk"], TOOLS["pgbouncer"]]
    assert plan(missing, is_root=True, has_apt=True) == [
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "pgbouncer"],
        ["bash", "scripts/get-helm.sh"],
    ]


def test_plan_without_root_leaves_debian_packages_to_the_user() -> None:
    missing = [TOOLS["actionlint"], TOOLS["promtool"]]
    assert plan(missing, is_root=False, has_apt=True) == [["bash", "scripts/get-actionlint.sh"]]


def test_every_tool_the_suite_names_has_a_source() -> None:
    assert set(TOOLS) >= {"helm", "actionlint", "promtool", "wrk", "pgbouncer", "haproxy"}
    assert {"chromium", "unzip"} <= set(TOOLS)
    for tool in TOOLS.values():
        assert (tool.debian_package is None) != (tool.script is None), tool
        if tool.script is not None:
            assert (REPO / tool.script).is_file(), tool.script
