"""The default mode: the chosen cases against a bench-managed keelson, or --base-url servers."""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import asdict
from typing import Any

from .cases import CASES
from .environment import Managed
from .gates import evaluate, template_figure
from .machine import log
from .measure import measure_cases
from .profile import profile_report
from .report import checks_table, results_table
from .target import Target
from .wrk import Load, Result


def split_base_url(spec: str) -> tuple[str, str]:
    """ "label=http://host:port" or just the URL."""
    label, sep, url = spec.partition("=")
    if sep and "://" not in label:
        return label, url
    return "", spec


def mode_cases(args: argparse.Namespace, load: Load, report: dict[str, Any]) -> bool:
    cases = args.cases
    all_ok = True
    targets: list[tuple[Target, Managed | None]] = []
    template: Target | None = None
    with contextlib.ExitStack() as stack:
        if args.base_url:
            for spec in args.base_url:
                label, url = split_base_url(spec)
                t = Target(label or url, url.rstrip("/"), args.email, args.password, dsn=args.dsn)
                t.quiet_wait_s = args.quiet_wait
                t.retry_noisy = args.retry_noisy
                t.login()
                targets.append((t, None))
        else:
            managed = stack.enter_context(Managed(args))
            report["meta"]["postgres"] = managed.postgres.version
            targets.append((managed.start_keelson(), managed))
            if args.template_backend is not None:
                template = start_template(managed, args, report)
        for target, owner in targets:
            if args.profile:
                target.profile_dir = args.profile / target.label.replace("/", "_")
            target.ensure_items(args.items)
            report["meta"].setdefault("items", {})[target.label] = args.items
            log(f"measuring {target.label} at {target.base_url} ({len(cases)} cases)")
            results = measure_cases(target, cases, load, args, owner, template)
            checks = evaluate(results, args.gate_throughput, gate_latency=not args.report_latency)
            print(f"\n== {target.label} ({target.base_url}), {args.items:,} items ==")
            print(results_table(results))
            print("targets:")
            print(checks_table(checks))
            if args.profile:
                print(profile_report(results))
            report["servers"].append(
                {
                    "label": target.label,
                    "base_url": target.base_url,
                    "cases": {k: asdict(v) for k, v in results.items()},
                    "template_figures": template_figures(results),
                    "checks": [asdict(c) for c in checks],
                }
            )
            all_ok &= all(c.met for c in checks if c.gated)
    return all_ok


def template_figures(results: dict[str, Result]) -> dict[str, dict[str, Any]]:
    """For the report: the template's req/s each Keelson case is compared with, and its source
    ("run": measured in this run, "table": shared/reference/API.md)."""
    figures = {}
    for key in results:
        case = CASES.get(key)
        figure = template_figure(results, key)
        if case is not None and case.server == "keelson" and figure is not None:
            figures[key] = {"rps": round(figure[0], 1), "from": figure[1]}
    return figures


def start_template(managed: Managed, args: argparse.Namespace, report: dict[str, Any]) -> Target:
    """--template-backend: its server, its superuser's token, the same number of items."""
    checkout = args.template_backend
    log(f"starting the template's backend from {checkout.backend} ({checkout.python})")
    template = managed.start_template(checkout)
    if args.profile:
        template.profile_dir = args.profile / template.label
    template.ensure_items(args.items)
    report["meta"].setdefault("items", {})[template.label] = args.items
    report["meta"]["template_backend"] = {
        "dir": str(checkout.root),
        "backend": str(checkout.backend),
        "python": str(checkout.python),
        "commit": checkout.commit(),
        "base_url": template.base_url,
        "items": args.items,
    }
    return template
