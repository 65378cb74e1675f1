"""The issue's targets as checks on a run's results; `--gate` fails the run on a gated miss."""

from __future__ import annotations

from dataclasses import dataclass

from .cases import (
    CASES,
    HEALTH_VS_HELLO,
    LEAN_SHARE,
    LOGIN_UNDER_LOAD,
    LOGIN_UNDER_LOAD_P99_MS,
    TEMPLATE_FACTOR,
)
from .wrk import Result

ALL_2XX = "0 non-2xx, 0 socket errors"


@dataclass
class Check:
    name: str
    target: str
    value: str
    met: bool
    gated: bool


def evaluate(results: dict[str, Result], gate_throughput: bool) -> list[Check]:
    checks: list[Check] = []
    for key, r in results.items():
        checks.append(
            Check(
                f"{key}: every response 2xx",
                ALL_2XX,
                f"{r.non_2xx} non-2xx, {sum(r.socket_errors.values())} socket errors",
                r.failed_requests == 0 and r.requests > 0,
                True,
            )
        )
        case = CASES.get(key)
        if case is None:
            continue
        if case.p99_budget_ms is not None:
            checks.append(
                Check(
                    f"{key}: p99",
                    f"< {case.p99_budget_ms:g} ms",
                    f"{r.p99_ms:.1f} ms",
                    r.p99_ms < case.p99_budget_ms,
                    True,
                )
            )
        if case.min_rps is not None:
            what = "the template's login req/s"
            if key != "login":
                what = f"{TEMPLATE_FACTOR}x the template"
            checks.append(
                Check(
                    f"{key}: req/s ({what})",
                    f">= {case.min_rps:,.1f}",
                    f"{r.rps:,.1f}",
                    r.rps >= case.min_rps,
                    gate_throughput,
                )
            )
    if "health" in results and "hello" in results:
        ratio = results["health"].rps / results["hello"].rps if results["hello"].rps else 0.0
        checks.append(
            Check(
                "health: req/s vs bare FastAPI hello",
                f">= {HEALTH_VS_HELLO:.0%}",
                f"{ratio:.0%}",
                ratio >= HEALTH_VS_HELLO,
                True,
            )
        )
    for key in ("me", "items", "create"):
        lean = results.get(f"lean-{key}")
        if key in results and lean is not None and lean.rps:
            share = results[key].rps / lean.rps
            checks.append(
                Check(
                    f"{key}: req/s vs the lean implementation (stretch)",
                    f">= {LEAN_SHARE:.0%}",
                    f"{share:.0%}",
                    share >= LEAN_SHARE,
                    False,
                )
            )
    if LOGIN_UNDER_LOAD in results:
        r = results[LOGIN_UNDER_LOAD]
        checks.append(
            Check(
                "login-under-load: GET /users/me p99",
                f"< {LOGIN_UNDER_LOAD_P99_MS:g} ms",
                f"{r.p99_ms:.1f} ms",
                r.p99_ms < LOGIN_UNDER_LOAD_P99_MS,
                True,
            )
        )
        logins = r.extra.get("login", {})
        failed = logins.get("non_2xx", 0) + sum(logins.get("socket_errors", {}).values())
        checks.append(
            Check(
                "login-under-load: logins 2xx",
                ALL_2XX,
                f"{failed} failed",
                failed == 0 and logins.get("requests", 0) > 0,
                True,
            )
        )
    return checks
