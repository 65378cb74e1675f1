"""The GitHub workflows pass zizmor and actionlint, and keep the pipeline's promises."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
CI_YML = WORKFLOWS / "ci.yml"

PINNED_USES = re.compile(
    r"^\s*-?\s*uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40})\s+#\s*v\d+(\.\d+)*\s*$"
)

BROKEN_WORKFLOW = """\
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/upload-artifact@v4
        with:
          pathz: dist
      - run: echo "${{ matrix.nope }}"
"""


def _workflow_files() -> list[Path]:
    return sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])


def _tool(name: str, *extra_dirs: Path) -> str | None:
    for directory in (*extra_dirs, Path(sys.executable).parent):
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def _require(name: str, found: str | None, how: str) -> str:
    if found is None:
        return require_tool(name, hint=how)  # fails in CI, skips (recorded) elsewhere
    return found


@pytest.fixture(scope="module")
def zizmor() -> str:
    return _require("zizmor", _tool("zizmor"), "it is in the dev dependency group: uv sync")


@pytest.fixture(scope="module")
def actionlint() -> str:
    return _require(
        "actionlint",
        _tool("actionlint", ROOT / ".tools" / "bin"),
        "run scripts/get-actionlint.sh",
    )


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    loaded = yaml.safe_load(CI_YML.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"GH_TOKEN", "GITHUB_TOKEN"}}
    env["NO_COLOR"] = "1"
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_there_is_a_ci_workflow() -> None:
    assert CI_YML in _workflow_files()


def test_zizmor_reports_no_findings(zizmor: str) -> None:
    result = _run(zizmor, "--offline", "--no-progress", "--format", "plain", str(WORKFLOWS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def test_zizmor_catches_an_insecure_workflow(zizmor: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: pull_request_target\n"
        "jobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "        with:\n          ref: ${{ github.event.pull_request.head.sha }}\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n"
    )
    result = _run(zizmor, "--offline", "--no-progress", str(bad))
    assert result.returncode != 0
    assert "template-injection" in result.stdout


def test_actionlint_passes_every_workflow(actionlint: str) -> None:
    result = _run(actionlint, *map(str, _workflow_files()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_actionlint_catches_a_broken_workflow(actionlint: str, tmp_path: Path) -> None:
    bad = tmp_path / "broken.yml"
    bad.write_text(BROKEN_WORKFLOW)
    result = _run(actionlint, str(bad), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'input "pathz" is not defined' in result.stdout
    assert 'property "nope" is not defined' in result.stdout


def test_every_action_is_pinned_to_a_commit_sha_with_a_version_comment() -> None:
    for path in _workflow_files():
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if re.match(r"^\s*-?\s*uses:", line) and "uses: ./" not in line:
                assert PINNED_USES.match(line), f"{path.name}:{number}: not SHA-pinned: {line}"


def test_top_level_permissions_are_read_only(ci: dict[str, Any]) -> None:
    assert ci["permissions"] == {"contents": "read"}


def test_only_the_image_job_may_write_packages(ci: dict[str, Any]) -> None:
    for name, job in ci["jobs"].items():
        perms = job.get("permissions", {})
        writes = {k for k, v in perms.items() if v == "write"}
        if name == "image":
            assert writes == {"packages"}
        else:
            assert writes == set(), name


def test_every_checkout_drops_credentials(ci: dict[str, Any]) -> None:
    for name, job in ci["jobs"].items():
        for step in job.get("steps", []):
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, name


def test_ci_runs_on_push_and_pull_request(ci: dict[str, Any]) -> None:
    triggers = ci.get(True) or ci["on"]  # type: ignore[call-overload]  # PyYAML reads `on` as True
    assert "push" in triggers
    assert "pull_request" in triggers


def test_lint_job_runs_ruff_format_and_mypy(ci: dict[str, Any]) -> None:
    runs = " ; ".join(s.get("run", "") for s in ci["jobs"]["lint"]["steps"])
    assert "ruff check" in runs
    assert "ruff format --check" in runs
    assert "mypy" in runs


def test_tests_job_forces_the_testcontainers_path(ci: dict[str, Any]) -> None:
    job = ci["jobs"]["tests"]
    assert job["env"]["KEELSON_TEST_DB"] == "testcontainers"
    assert job["runs-on"] == "ubuntu-latest"
    assert any("pytest" in s.get("run", "") for s in job["steps"])


def test_chart_job_sets_up_helm_then_runs_the_chart_tests(ci: dict[str, Any]) -> None:
    steps = ci["jobs"]["chart"]["steps"]
    helm_at = next(i for i, s in enumerate(steps) if "azure/setup-helm@" in s.get("uses", ""))
    pytest_at = next(i for i, s in enumerate(steps) if "pytest tests/chart" in s.get("run", ""))
    assert helm_at < pytest_at


def test_image_is_never_pushed_from_a_pull_request(ci: dict[str, Any]) -> None:
    for step in ci["jobs"]["image"]["steps"]:
        if "docker/build-push-action@" in step.get("uses", "") and step["with"].get("push"):
            assert "github.event_name == 'push'" in step["if"]
        if "docker/login-action@" in step.get("uses", ""):
            assert "github.event_name == 'push'" in step["if"]


def test_image_smoke_checks_readiness_login_and_non_root(ci: dict[str, Any]) -> None:
    job = ci["jobs"]["image"]
    assert "postgres" in job["services"]
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert "/readyz" in runs
    assert "/api/v1/login/access-token" in runs
    assert "id -u" in runs
    assert '!= "0"' in runs


def test_load_test_job_gates_and_uploads_its_json(ci: dict[str, Any]) -> None:
    steps = ci["jobs"]["load-test"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "load-tests/bench.py" in runs
    assert "--gate" in runs
    assert "--json" in runs
    upload = next(s for s in steps if "actions/upload-artifact@" in s.get("uses", ""))
    assert upload["if"] == "always()"
    assert upload["with"]["path"].endswith("bench.json")
