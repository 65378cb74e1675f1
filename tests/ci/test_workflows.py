"""The GitHub workflows pass zizmor and actionlint, and keep the pipeline's promises."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
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
    job = ci["jobs"]["load-test"]
    assert "continue-on-error" not in job  # a gated miss fails the pipeline
    steps = job["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "load-tests/bench.py" in runs
    assert "--gate --report-latency" in runs  # only the p99 budgets are reported, not gated
    assert "--json" in runs
    upload = next(s for s in steps if "actions/upload-artifact@" in s.get("uses", ""))
    assert upload["if"] == "always()"
    assert upload["with"]["path"].endswith("bench.json")


# -- release.yml: build once, test that image, then publish it (issue 16, item 1)

RELEASE_YML = WORKFLOWS / "release.yml"
E2E_YML = WORKFLOWS / "e2e.yml"
PUBLISH_JOBS = {"publish-image", "publish-chart"}


def _load(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def release() -> dict[str, Any]:
    return _load(RELEASE_YML)


@pytest.fixture(scope="module")
def e2e() -> dict[str, Any]:
    return _load(E2E_YML)


def _steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job.get("steps", []) if str(s.get("uses", "")).startswith(f"{action}@")]


def _runs(job: dict[str, Any]) -> str:
    return "\n".join(str(s.get("run", "")) for s in job.get("steps", []))


def test_release_and_e2e_workflows_are_linted_with_the_rest() -> None:
    assert {RELEASE_YML, E2E_YML} <= set(_workflow_files())


def test_release_runs_only_on_version_tags(release: dict[str, Any]) -> None:
    loaded: dict[Any, Any] = release  # PyYAML reads the key `on` as True
    triggers = loaded[True] if True in loaded else loaded["on"]
    assert triggers == {"push": {"tags": ["v*.*.*"]}}


def test_release_grants_nothing_by_default_and_writes_only_in_the_publish_jobs(
    release: dict[str, Any],
) -> None:
    assert release["permissions"] == {}
    for name, job in release["jobs"].items():
        writes = {k for k, v in job["permissions"].items() if v == "write"}
        if name in PUBLISH_JOBS:
            assert writes == {"packages", "id-token", "attestations"}, name
        else:
            assert writes == set(), name


def test_every_checkout_in_every_workflow_drops_credentials() -> None:
    for path in _workflow_files():
        for name, job in _load(path)["jobs"].items():
            for step in _steps_using(job, "actions/checkout"):
                assert step.get("with", {}).get("persist-credentials") is False, (path.name, name)


def test_release_publish_jobs_need_every_test_job_and_the_chart_job(
    release: dict[str, Any],
) -> None:
    jobs = release["jobs"]
    tested = {"version", "lint", "tests", "chart", "smoke"}
    assert tested | {"build"} <= set(jobs["publish-image"]["needs"])
    # The chart goes out after the image it points at.
    assert tested | {"publish-image"} <= set(jobs["publish-chart"]["needs"])


def test_release_pushes_only_from_the_publish_jobs(release: dict[str, Any]) -> None:
    pushing = re.compile(r"\bdocker push\b|\bhelm push\b|\bhelm registry login\b")
    for name, job in release["jobs"].items():
        publishes = bool(
            pushing.search(_runs(job))
            or _steps_using(job, "docker/login-action")
            or _steps_using(job, "actions/attest-build-provenance")
            or _steps_using(job, "actions/attest-sbom")
        )
        assert publishes == (name in PUBLISH_JOBS), name
        for step in _steps_using(job, "docker/build-push-action"):
            assert step["with"]["push"] is False, name


def test_release_builds_once_and_every_later_job_checks_it_got_that_archive(
    release: dict[str, Any],
) -> None:
    jobs = release["jobs"]
    builders = [n for n, j in jobs.items() if _steps_using(j, "docker/build-push-action")]
    assert builders == ["build"]
    assert "docker build" not in "\n".join(_runs(j) for j in jobs.values())
    [build] = _steps_using(jobs["build"], "docker/build-push-action")
    assert build["with"]["outputs"].startswith("type=docker,dest=")
    assert "sha256sum" in _runs(jobs["build"])
    for name in ("smoke", "publish-image"):
        [download] = _steps_using(jobs[name], "actions/download-artifact")
        assert download["with"]["name"] == "image"
        runs = _runs(jobs[name])
        assert "sha256sum --check" in runs
        assert runs.index("sha256sum --check") < runs.index("docker load")


def test_release_smoke_test_is_the_ci_smoke_test_plus_the_metrics_port(
    ci: dict[str, Any], release: dict[str, Any]
) -> None:
    def checks(job: dict[str, Any]) -> list[str]:
        return [
            s["name"]
            for s in job["steps"]
            if "curl" in s.get("run", "") or "id -u" in s.get("run", "")
        ]

    smoke = release["jobs"]["smoke"]
    assert checks(smoke) == checks(ci["jobs"]["image"])
    assert "Metrics on METRICS_PORT only, never on the API port" in checks(smoke)
    assert smoke["services"] == ci["jobs"]["image"]["services"]


def test_release_pushes_version_tag_and_digest_with_sbom_and_provenance(
    release: dict[str, Any],
) -> None:
    job = release["jobs"]["publish-image"]
    runs = _runs(job)
    assert 'docker push "${IMAGE_REPO}:${VERSION}"' in runs
    digest = "${{ steps.push.outputs.digest }}"
    [sbom] = _steps_using(job, "anchore/sbom-action")
    assert sbom["with"]["image"] == "${{ env.IMAGE_REPO }}@" + digest
    for action in ("actions/attest-sbom", "actions/attest-build-provenance"):
        [attest] = _steps_using(job, action)
        assert attest["with"]["subject-digest"] == digest
        assert attest["with"]["push-to-registry"] is True
    chart = release["jobs"]["publish-chart"]
    assert 'helm push "$RUNNER_TEMP/chart/keelson-${VERSION}.tgz" "oci://${charts}"' in _runs(chart)
    [attest] = _steps_using(chart, "actions/attest-build-provenance")
    assert attest["with"]["subject-digest"] == "${{ steps.push.outputs.digest }}"


def test_release_never_restores_a_cache(release: dict[str, Any]) -> None:
    for name, job in release["jobs"].items():
        for step in _steps_using(job, "astral-sh/setup-uv"):
            assert step["with"]["enable-cache"] is False, name


def _version_check_script(release: dict[str, Any]) -> str:
    [step] = [s for s in release["jobs"]["version"]["steps"] if s.get("id") == "check"]
    assert step["env"] == {"TAG": "${{ github.ref_name }}"}  # never expanded into the script
    return str(step["run"])


def _release_tree(tmp_path: Path, chart: str, app: str, package: str, repo: str) -> Path:
    (tmp_path / "charts" / "keelson").mkdir(parents=True)
    (tmp_path / "charts" / "keelson" / "Chart.yaml").write_text(
        f'apiVersion: v2\nname: keelson\nversion: {chart}\nappVersion: "{app}"\n'
    )
    values = (ROOT / "charts" / "keelson" / "values.yaml").read_text()
    (tmp_path / "charts" / "keelson" / "values.yaml").write_text(
        values.replace("repository: ghcr.io/keelson/keelson", f"repository: {repo}", 1)
    )
    (tmp_path / "pyproject.toml").write_text(
        f'[project]\nname = "keelson"\nversion = "{package}"\n'
    )
    return tmp_path


def _run_version_check(
    release: dict[str, Any], tree: Path, tag: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    output = tree / "github-output"
    output.touch()
    env = {
        "PATH": os.environ["PATH"],
        "TAG": tag,
        "GITHUB_REPOSITORY": "Keelson/keelson",
        "GITHUB_OUTPUT": str(output),
    }
    done = subprocess.run(
        ["bash", "-e", "-c", _version_check_script(release)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done, output.read_text()


def test_release_version_check_passes_when_tag_chart_app_and_package_agree(
    release: dict[str, Any], tmp_path: Path
) -> None:
    tree = _release_tree(tmp_path, "1.4.0", "1.4.0", "1.4.0", "ghcr.io/keelson/keelson")
    done, output = _run_version_check(release, tree, "v1.4.0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert output.splitlines() == ["version=1.4.0", "image-repo=ghcr.io/keelson/keelson"]


def test_release_version_check_fails_naming_each_mismatch(
    release: dict[str, Any], tmp_path: Path
) -> None:
    tree = _release_tree(tmp_path, "1.4.0", "1.3.9", "1.3.0", "ghcr.io/someone/else")
    done, output = _run_version_check(release, tree, "v1.4.0")
    assert done.returncode != 0
    assert "::error::Chart.yaml appVersion is 1.3.9, the tag says 1.4.0" in done.stdout
    assert "::error::pyproject.toml version is 1.3.0, the tag says 1.4.0" in done.stdout
    assert "image.repository is ghcr.io/someone/else" in done.stdout
    assert "Chart.yaml version is" not in done.stdout
    assert output == ""  # nothing for the later jobs to publish


@pytest.mark.parametrize("tag", ["v1.4", "1.4.0", "v1.4.0;id", "vx.y.z"])
def test_release_version_check_refuses_a_tag_that_is_not_a_version(
    release: dict[str, Any], tmp_path: Path, tag: str
) -> None:
    tree = _release_tree(tmp_path, "1.4.0", "1.4.0", "1.4.0", "ghcr.io/keelson/keelson")
    done, output = _run_version_check(release, tree, tag)
    assert done.returncode != 0
    assert f"::error::tag {tag} is not v<MAJOR>.<MINOR>.<PATCH>" in done.stdout
    assert output == ""


def test_the_repository_as_it_is_passes_the_version_check_only_when_aligned(
    release: dict[str, Any], tmp_path: Path
) -> None:
    """The check run on the real Chart.yaml, values.yaml and pyproject.toml, with a tag equal to
    the chart version: it passes exactly when appVersion and the package version agree with it.
    (When this was written they did not: 0.2.0 against 0.1.0, so no tag could pass until a
    release commit aligns them; that is the point of the check.)"""
    tree = tmp_path / "repo"
    (tree / "charts").mkdir(parents=True)
    shutil.copytree(ROOT / "charts" / "keelson", tree / "charts" / "keelson")
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    chart = yaml.safe_load((ROOT / "charts" / "keelson" / "Chart.yaml").read_text())
    package = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    version = str(chart["version"])
    done, output = _run_version_check(release, tree, f"v{version}")
    if str(chart["appVersion"]) == version == package:
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"version={version}" in output.splitlines()
    else:
        assert done.returncode != 0
        assert "::error::" in done.stdout
        assert output == ""


# -- e2e.yml: the chart on a real cluster (issue 16, "kind end-to-end workflow")

README = ROOT / "README.md"
KIND_SECTION = "## Running on a real cluster (kind)"
# Lines that only wire the runner (its PATH, step outputs), not commands a person would type.
RUNNER_PLUMBING = ("$GITHUB_PATH", "$GITHUB_OUTPUT", "$GITHUB_STEP_SUMMARY")


def _readme_section(title: str) -> str:
    text = README.read_text()
    assert title in text, f"README has no {title!r} section"
    section = text.split(title, 1)[1]
    return section.split("\n## ", 1)[0]


def _command_lines(script: str) -> list[str]:
    return [
        line.strip()
        for line in script.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def _e2e_steps(e2e: dict[str, Any]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = e2e["jobs"]["kind"]["steps"]
    return steps


def test_every_e2e_command_is_documented_in_the_readme(e2e: dict[str, Any]) -> None:
    documented = set(_command_lines(_readme_section(KIND_SECTION)))
    missing = [
        line
        for step in _e2e_steps(e2e)
        for line in _command_lines(str(step.get("run", "")))
        if not any(plumbing in line for plumbing in RUNNER_PLUMBING) and line not in documented
    ]
    assert missing == [], "e2e.yml runs commands the README does not document"


def test_e2e_is_read_only_and_cleans_up_its_cluster(e2e: dict[str, Any]) -> None:
    assert e2e["permissions"] == {"contents": "read"}
    assert "permissions" not in e2e["jobs"]["kind"]
    last = _e2e_steps(e2e)[-1]
    assert last["if"] == "always()"
    assert last["run"] == "kind delete cluster --name keelson-e2e"


def _index_of(steps: list[dict[str, Any]], needle: str) -> int:
    found = [i for i, s in enumerate(steps) if needle in str(s.get("run", ""))]
    assert found, f"no e2e step runs {needle!r}"
    return found[0]


def test_e2e_runs_the_required_steps_in_order(e2e: dict[str, Any]) -> None:
    steps = _e2e_steps(e2e)
    order = [
        "kind create cluster --name keelson-e2e --config .github/e2e/kind-calico.yaml",
        "projectcalico/calico/v3.29.1/manifests/calico.yaml",
        "kind load docker-image keelson:e2e-1",
        "kubectl apply -f .github/e2e/namespaces.yaml",
        "pod/deny-probe",
        "cloudnative-pg/cloudnative-pg/release-1.25/releases/cnpg-1.25.1.yaml",
        "kubectl apply -f .github/e2e/postgres.yaml",
        "secret pg-app",
        "helm install keelson charts/keelson --namespace keelson-e2e --wait",
        "helm test keelson --namespace keelson-e2e",
        "kubectl apply -f .github/e2e/load.yaml",
        "--set image.tag=e2e-2",
        "--set image.tag=e2e-3",
        "kubectl -n e2e-load exec e2e-load -- touch /tmp/stop",
    ]
    positions = [_index_of(steps, needle) for needle in order]
    assert positions == sorted(positions)
    runs = _runs(e2e["jobs"]["kind"])
    assert "--set image.repository=keelson --set image.tag=e2e-1" in runs
    assert ".non_2xx == 0" in runs.split("touch /tmp/stop", 1)[1]


def test_e2e_requires_the_failing_upgrade_to_fail_and_the_old_release_to_stay(
    e2e: dict[str, Any],
) -> None:
    [step] = [s for s in _e2e_steps(e2e) if "e2e-3" in str(s.get("run", ""))]
    lines = _command_lines(step["run"])
    [upgrade] = [line for line in lines if line.startswith("if helm upgrade")]
    assert upgrade.endswith("--set image.tag=e2e-3; then exit 1; fi")
    after = lines[lines.index(upgrade) + 1 :]
    assert any("grep 'this migration fails on purpose'" in line for line in after)
    assert any(line.endswith("| grep -x keelson:e2e-2") for line in after)
    assert any("alembic_version" in line and line.endswith("grep -x e2e0001") for line in after)


def test_e2e_cluster_enforces_network_policy_and_pod_security() -> None:
    kind = yaml.safe_load((ROOT / ".github" / "e2e" / "kind-calico.yaml").read_text())
    assert kind["networking"]["disableDefaultCNI"] is True  # kindnet enforces no NetworkPolicy
    documents = list(yaml.safe_load_all((ROOT / ".github" / "e2e" / "namespaces.yaml").read_text()))
    [app_ns] = [
        d for d in documents if d["kind"] == "Namespace" and d["metadata"]["name"] == "keelson-e2e"
    ]
    assert app_ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    [deny] = [d for d in documents if d["kind"] == "NetworkPolicy"]
    assert deny["metadata"]["namespace"] == "keelson-e2e"
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
