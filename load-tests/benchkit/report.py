"""What a run prints and writes: the results and checks tables, the JSON report's metadata."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .cases import CASES
from .gates import Check, template_figure
from .machine import cpu_model, git_commit, log
from .wrk import WRK_TIMEOUT_S, Result


def fmt_ms(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.1f} ms"


def results_table(results: dict[str, Result]) -> str:
    header = (
        f"{'case':<46} {'req/s':>9} {'p50':>9} {'p99':>9} {'non-2xx':>8} {'sock err':>8}"
        f" {'template req/s':>14} {'from':>6} {'x tmpl':>7} {'srv cpu':>8} {'cpu/req':>8}"
        f" {'db cpu':>7} {'other':>6} {'steal':>6}"
    )
    lines = [header, "-" * len(header)]
    for key, r in results.items():
        case = CASES.get(key)
        # Keelson's rows only: "run" = the template measured in this run, "table" = API.md's figure.
        figure = template_figure(results, key) if case and case.server == "keelson" else None
        template_rps = f"{figure[0]:,.1f}" if figure else ""
        source = figure[1] if figure else ""
        ratio = f"{r.rps / figure[0]:.1f}x" if figure and figure[0] else ""
        srv = f"{r.server_cpu_s / r.duration_s:.0%}" if r.server_cpu_s is not None else ""
        per_request = (
            f"{1e6 * r.server_cpu_s / r.requests:,.0f}us"
            if r.server_cpu_s is not None and r.requests
            else ""
        )
        db = f"{r.db_cpu_s / r.duration_s:.0%}" if r.db_cpu_s is not None else ""
        foreign = r.extra.get("foreign_cpu_s")
        other = f"{foreign / r.duration_s:.0%}" if foreign is not None else ""
        # The hypervisor's: a neighbour's load, which slows this run and is nobody's CPU here.
        stolen = r.extra.get("steal_cpu_s")
        steal = f"{stolen / r.duration_s:.0%}" if stolen is not None else ""
        lines.append(
            f"{r.label[:46]:<46} {r.rps:>9,.1f} {fmt_ms(r.p50_ms):>9} {fmt_ms(r.p99_ms):>9}"
            f" {r.non_2xx:>8} {sum(r.socket_errors.values()):>8}"
            f" {template_rps:>14} {source:>6} {ratio:>7} {srv:>8} {per_request:>8}"
            f" {db:>7} {other:>6} {steal:>6}"
        )
    return "\n".join(lines)


def checks_table(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        status = "met" if c.met else ("MISSED" if c.gated else "missed (not gated)")
        lines.append(f"  [{status:^6}] {c.name}: {c.value} (target {c.target})")
    return "\n".join(lines)


def new_report(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """The JSON report's skeleton: what was run, on what, with which settings."""
    return {
        "meta": {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": git_commit(),
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "wrk": {
                "threads": args.threads,
                "connections": args.connections,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "timeout_s": WRK_TIMEOUT_S,
            },
            "service_env": args.service_env,
            "argv": sys.argv[1:] if argv is None else argv,
        },
        "servers": [],
    }


def write_report(report: dict[str, Any], ok: bool, path: Path) -> None:
    report["meta"]["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["ok"] = ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {path}")
