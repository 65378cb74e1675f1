"""The `bench.py` command line: arguments, their validation, and running the chosen mode."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import httpx

from .cases import CASES, DEFAULT_CASES, LOGIN_UNDER_LOAD, TEMPLATE_PREFIX, with_template_cases
from .machine import ROOT, log, machine_busy
from .pool_sweep import mode_pool_sweep
from .processes import KEELSON_CMD
from .report import new_report, write_report
from .run_cases import mode_cases, split_base_url
from .scale import mode_scale
from .target import BENCH_EMAIL
from .template import locate
from .wrk import Load, wrk_binary

USAGE = """
    uv run python load-tests/bench.py                       # the reference cases + baselines
    uv run python load-tests/bench.py --gate                # exit 1 if a p99 budget/2xx fails
    uv run python load-tests/bench.py --items 1000000       # the same with 1,000,000 items
    uv run python load-tests/bench.py --scale 1000,1000000  # items list at 1k vs 1M
    uv run python load-tests/bench.py --pool-sweep          # pool sizes at 32/128 connections
    uv run python load-tests/bench.py --base-url http://127.0.0.1:8000 --base-url other=http://...

Everything stays on 127.0.0.1 and every load is bounded by --duration. Each case is checked with one
request first (it must answer 2xx, not a redirect), then loaded with `wrk -t2 -c32 -d10s` (the
reference conditions in shared/reference/API.md) after a short warm-up. The table shows req/s, p50,
p99 and the non-2xx count (wrk counts 4xx/5xx; the pre-flight rules out 3xx); --json writes it all.
"""
BUSY_BEFORE_WARNING = 0.15  # share of all CPUs busy before the run that is worth a warning


def require_loopback(url: str) -> None:
    host = httpx.URL(url).host
    if host not in {"127.0.0.1", "localhost", "::1"} and not host.startswith("127."):
        sys.exit(f"bench: refusing to load {host!r}: only loopback addresses are allowed here")


def int_list(text: str, what: str, minimum: int) -> list[int]:
    """ "1,2,3" -> [1, 2, 3], each at least `minimum`; ValueError with `what` otherwise."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a comma list of integers") from None
    if not values or min(values) < minimum:
        raise ValueError(f"{what}: {text!r} needs integers >= {minimum}")
    return values


def pool_combos(text: str) -> list[tuple[int, int]]:
    """ "2:0,10:5" -> [(2, 0), (10, 5)]: pool_size >= 1, max_overflow >= 0."""
    combos = []
    for pair in text.split(","):
        size, sep, overflow = pair.partition(":")
        if not sep:
            raise ValueError(f"--pool-combos: {pair!r} is not pool_size:max_overflow")
        combos.append(
            (
                int_list(size, "--pool-combos pool_size", 1)[0],
                int_list(overflow, "--pool-combos max_overflow", 0)[0],
            )
        )
    return combos


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench.py",
        description="Benchmark Keelson against the template's reference cases (127.0.0.1 only).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=USAGE,
    )
    servers = p.add_argument_group(
        "servers", "which servers: a bench-managed keelson (default) or running ones"
    )
    servers.add_argument(
        "--base-url",
        action="append",
        default=[],
        metavar="[LABEL=]URL",
        help="measure an already running server (repeat to measure several in turn)",
    )
    servers.add_argument(
        "--email",
        default=os.environ.get("FIRST_SUPERUSER", BENCH_EMAIL),
        help="superuser for --base-url (default: $FIRST_SUPERUSER)",
    )
    servers.add_argument(
        "--password",
        default=os.environ.get("FIRST_SUPERUSER_PASSWORD", "changethis"),
        help="its password (default: $FIRST_SUPERUSER_PASSWORD)",
    )
    servers.add_argument(
        "--dsn", help="SQL access for --base-url servers: fast seeding and cleanup"
    )
    servers.add_argument(
        "--template-backend",
        metavar="DIR",
        help="also run the template's own backend from DIR (a clone of"
        " fastapi/full-stack-fastapi-template, or its backend/, with a .venv) and measure its"
        " counterpart of each chosen case (template-*) in the same run",
    )
    load = p.add_argument_group("load", "what to measure and how hard")
    load.add_argument(
        "--cases",
        default=",".join(DEFAULT_CASES),
        help=f"comma list from: {', '.join([*CASES, LOGIN_UNDER_LOAD])}",
    )
    load.add_argument("--duration", type=float, default=10, help="seconds per case (default 10)")
    load.add_argument("--warmup", type=float, default=2, help="warm-up seconds before each case")
    load.add_argument("--connections", type=int, default=32, help="wrk -c (default 32)")
    load.add_argument("--threads", type=int, default=2, help="wrk -t (default 2)")
    load.add_argument(
        "--probe-connections",
        type=int,
        default=8,
        help="connections of the GET /users/me probe during login-under-load",
    )
    load.add_argument("--items", type=int, default=1000, help="items owned by the superuser")
    modes = p.add_argument_group("modes", "instead of the cases table")
    modes.add_argument("--pool-sweep", action="store_true", help="pool size/overflow sweep mode")
    modes.add_argument(
        "--pool-combos",
        default="2:0,5:0,10:5,20:10,40:20,80:40",
        help="pool_size:max_overflow pairs for --pool-sweep",
    )
    modes.add_argument("--sweep-connections", default="32,128", help="wrk -c list for --pool-sweep")
    modes.add_argument("--scale", metavar="N,M,...", help="items list cost at each item count")
    modes.add_argument(
        "--cursor-field", default="next_cursor", help="response field with the next-page cursor"
    )
    modes.add_argument("--cursor-param", default="cursor", help="query parameter taking it back")
    output = p.add_argument_group("output", "report, gates and profile")
    output.add_argument(
        "--json",
        type=Path,
        default=ROOT / "bench-results" / "latest.json",
        help="where to write the JSON report",
    )
    output.add_argument(
        "--gate",
        action="store_true",
        help="exit 1 when a gated target fails (p99 budgets, 2xx, health vs hello)",
    )
    output.add_argument(
        "--report-latency",
        action="store_true",
        help="with --gate: report the per-case p99 budgets without gating them (every other"
        " gated target still fails the run)",
    )
    output.add_argument(
        "--gate-throughput",
        action="store_true",
        help="also gate the absolute req/s targets (meaningful on the reference machine)",
    )
    output.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample keelson with py-spy during each case; raw stacks and a summary go to DIR",
    )
    environment = p.add_argument_group("environment", "the run's processes, and a shared machine")
    environment.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for keelson (repeatable)",
    )
    environment.add_argument(
        "--keelson-cmd",
        metavar="CMD",
        help="command run as `CMD migrate|seed|serve` instead of keelson (e.g. a patched build)",
    )
    environment.add_argument(
        "--pg-os-user", default="postgres", help="OS user for PostgreSQL when run as root"
    )
    environment.add_argument(
        "--keep-workdir", action="store_true", help="keep server logs, PostgreSQL's dir"
    )
    environment.add_argument(
        "--quiet-wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each case, wait up to this long for other work on the machine to stop",
    )
    environment.add_argument(
        "--retry-noisy",
        type=int,
        default=0,
        metavar="N",
        help="re-measure a case up to N times when other work used >15%% of a CPU during it",
    )
    args = p.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(args.cases) - {*CASES, LOGIN_UNDER_LOAD}
    if unknown:
        p.error(f"unknown cases: {', '.join(sorted(unknown))}")
    if args.duration <= 0 or args.warmup < 0 or args.quiet_wait < 0:
        p.error("--duration must be > 0, --warmup and --quiet-wait >= 0")
    if min(args.threads, args.connections, args.probe_connections) < 1:
        p.error("--threads, --connections and --probe-connections must be at least 1")
    if args.connections < args.threads:
        p.error("--connections must be at least --threads")
    if args.items < 0 or args.retry_noisy < 0:
        p.error("--items and --retry-noisy must be >= 0")
    for item in args.service_env:
        if not item.partition("=")[0] or "=" not in item:
            p.error(f"--service-env {item!r} is not KEY=VALUE")
    try:
        args.pool_combos = pool_combos(args.pool_combos)
        args.sweep_connections = int_list(args.sweep_connections, "--sweep-connections", 1)
        args.scale = sorted(int_list(args.scale, "--scale", 1)) if args.scale else None
    except ValueError as error:
        p.error(str(error))
    for spec in args.base_url:
        require_loopback(split_base_url(spec)[1])
    template_cases = [c for c in args.cases if c.startswith(TEMPLATE_PREFIX)]
    if args.template_backend is None:
        if template_cases:
            p.error(
                f"{', '.join(template_cases)}: the template is measured only with"
                " --template-backend DIR"
            )
        return args
    if args.base_url or args.pool_sweep or args.scale:
        p.error(
            "--template-backend runs beside a bench-managed keelson in the cases mode:"
            " not with --base-url, --pool-sweep or --scale"
        )
    try:
        args.template_backend = locate(args.template_backend)
    except ValueError as error:
        p.error(str(error))
    args.cases = with_template_cases(args.cases)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.keelson_cmd:
        KEELSON_CMD[:] = shlex.split(args.keelson_cmd)
    load = Load(args.threads, args.connections, args.duration, args.warmup)
    report = new_report(args, argv)
    wrk_binary()
    busy = machine_busy()
    report["meta"]["cpu_busy_before"] = round(busy, 3)
    if busy > BUSY_BEFORE_WARNING:
        log(f"warning: the CPUs were {busy:.0%} busy before the run; other work skews the figures")
    if args.pool_sweep:
        ok = mode_pool_sweep(args, load, report)
    elif args.scale:
        ok = mode_scale(args, load, report)
    else:
        ok = mode_cases(args, load, report)
    write_report(report, ok, args.json)
    if args.gate and not ok:
        log("gate: FAILED")
        return 1
    return 0
