"""--pool-sweep: DB_POOL_SIZE:DB_MAX_OVERFLOW pairs x client connections on the database cases."""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace
from typing import Any

from .cases import CASES
from .environment import Managed
from .measure import measure
from .report import fmt_ms
from .wrk import Load

SWEPT_CASES = ("me", "items", "create")


def mode_pool_sweep(args: argparse.Namespace, load: Load, report: dict[str, Any]) -> bool:
    cases = [c for c in args.cases if c in SWEPT_CASES] or list(SWEPT_CASES)
    rows: list[dict[str, Any]] = []
    with Managed(args) as managed:
        report["meta"]["postgres"] = managed.postgres.version
        for pool_size, overflow in args.pool_combos:
            env = {"DB_POOL_SIZE": str(pool_size), "DB_MAX_OVERFLOW": str(overflow)}
            target = managed.start_keelson(env)
            target.ensure_items(args.items)
            for connections in args.sweep_connections:
                for key in cases:
                    result = measure(target, CASES[key], replace(load, connections=connections))
                    rows.append(
                        {"pool_size": pool_size, "max_overflow": overflow, **asdict(result)}
                    )
        managed.stop_keelson()
    print("\n== pool sweep ==")
    print(
        f"{'pool':>5} {'overflow':>8} {'conns':>6} {'case':<38} {'req/s':>9} {'p50':>9} {'p99':>9}"
        f" {'non-2xx':>8} {'sock err':>8}"
    )
    for r in rows:
        print(
            f"{r['pool_size']:>5} {r['max_overflow']:>8} {r['connections']:>6}"
            f" {r['label'][:38]:<38}"
            f" {r['rps']:>9,.1f} {fmt_ms(r['p50_ms']):>9} {fmt_ms(r['p99_ms']):>9}"
            f" {r['non_2xx']:>8} {sum(r['socket_errors'].values()):>8}"
        )
    report["pool_sweep"] = rows
    return True
