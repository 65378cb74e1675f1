"""--scale: the items list's first, keyset and deep-offset pages at each item count."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

import httpx

from .cases import Case
from .environment import Managed
from .machine import log
from .measure import measure
from .report import fmt_ms
from .target import Target
from .wrk import Load

SCALE_FACTOR = 2.0  # latency at the large size may be at most 2x the small size's
KEYSET_WALK = 4  # pages walked in before the keyset page measured, so it is not the second one


def mode_scale(args: argparse.Namespace, load: Load, report: dict[str, Any]) -> bool:
    """The first page (and a keyset page, when the service offers one) at each item count."""
    sizes = args.scale
    rows: list[dict[str, Any]] = []
    with Managed(args) as managed:
        report["meta"]["postgres"] = managed.postgres.version
        target = managed.start_keelson()
        for n in sizes:
            target.ensure_items(n)
            pages = scale_pages(target, n, args.cursor_field, args.cursor_param)
            for name, path in pages.items():
                case = Case(f"items@{n}:{name}", f"GET {path}", "GET", path, "get.lua", auth=True)
                result = measure(target, case, load)
                rows.append({"items": n, "page": name, **asdict(result)})
    print("\n== items list cost vs data size ==")
    print(f"{'items':>10} {'page':<14} {'req/s':>9} {'p50':>9} {'p99':>9} {'non-2xx':>8}  path")
    for r in rows:
        print(
            f"{r['items']:>10,} {r['page']:<14} {r['rps']:>9,.1f} {fmt_ms(r['p50_ms']):>9}"
            f" {fmt_ms(r['p99_ms']):>9} {r['non_2xx']:>8}  {r['url'].split('/api/v1', 1)[1]}"
        )
    checks = scale_checks(rows, sizes[0])
    for c in checks:
        status = "met" if c["met"] else ("MISSED" if c["gated"] else "n/a")
        print(
            f"  [{status:^6}] {c['page']} at {c['items']:,} vs {sizes[0]:,}:"
            f" p50 {c['p50_x']:.2f}x, p99 {c['p99_x']:.2f}x (target p50 <= {SCALE_FACTOR:g}x)"
        )
    report["scale_checks"] = checks
    report["scale"] = rows
    return all(c["met"] for c in checks if c["gated"])


def scale_checks(rows: list[dict[str, Any]], smallest: int) -> list[dict[str, Any]]:
    """Each page at every larger size against the same page at the smallest size."""
    checks: list[dict[str, Any]] = []
    for base in (r for r in rows if r["items"] == smallest):
        for r in rows:
            if r["page"] != base["page"] or r["items"] == base["items"]:
                continue
            p50_x = r["p50_ms"] / base["p50_ms"] if base["p50_ms"] else float("inf")
            p99_x = r["p99_ms"] / base["p99_ms"] if base["p99_ms"] else float("inf")
            checks.append(
                {
                    "page": r["page"],
                    "items": r["items"],
                    "p50_x": p50_x,
                    "p99_x": p99_x,
                    "met": p50_x <= SCALE_FACTOR and r["non_2xx"] == 0,
                    # offset paging is not expected to scale
                    "gated": r["page"] != "offset-deep",
                }
            )
    return checks


def scale_pages(target: Target, n: int, cursor_field: str, cursor_param: str) -> dict[str, str]:
    """first page; a later page via the service's keyset cursor (if any); a deep offset page."""
    pages = {"first": "/api/v1/items/?skip=0&limit=100"}
    first = httpx.get(target.base_url + pages["first"], headers=target.auth_headers(), timeout=60)
    first.raise_for_status()
    cursor = first.json().get(cursor_field)
    if isinstance(cursor, str) and cursor:
        for _ in range(KEYSET_WALK):
            nxt = httpx.get(
                target.base_url + "/api/v1/items/",
                params={"limit": 100, cursor_param: cursor},
                headers=target.auth_headers(),
                timeout=60,
            )
            nxt.raise_for_status()
            cursor = nxt.json().get(cursor_field) or cursor
        pages["keyset"] = str(
            httpx.URL("/api/v1/items/", params={"limit": 100, cursor_param: cursor})
        )
    else:
        log(f"no {cursor_field!r} in GET /items/: keyset page not measured")
    pages["offset-deep"] = f"/api/v1/items/?skip={max(0, n // 2)}&limit=100"
    return pages
