"""What metrics and access logging cost per request, measured in-process (no network, no DB).

Runs a routed request that needs no database (GET of an unknown API path: routing, the 404
problem, every header) through the full ASGI stack N times in three variants: everything on;
access log off; and without the edge middleware (no metrics, access log, request id, security
headers or CORS). The differences are the per-request cost of each, in microseconds of CPU on
this machine. The requests never yield to the event loop, so the log lines leave in 64 KiB
batches (core/logging.LineBatcher) into an in-memory sink: the access log figure is the cost of
making the line, not of the syscalls a server's stdout adds.

    uv run python load-tests/middleware_overhead.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
from contextlib import redirect_stdout
from typing import Any

from service.core.config import load_settings
from service.core.edge import EdgeMiddleware
from service.main import create_app

SETTINGS = {
    "_env_file": None,
    "database_url": "postgresql://bench@127.0.0.1:1/unused",  # PATH never touches it
    "argon2_memory_kib": 1024,
    "argon2_time_cost": 1,
    "argon2_parallelism": 1,
}
PATH = "/api/v1/no-such-route"


def build(variant: str) -> Any:
    settings = load_settings(**SETTINGS, access_log_enabled=variant == "full")
    app = create_app(settings)
    if variant == "bare":
        app.user_middleware = [m for m in app.user_middleware if m.cls is not EdgeMiddleware]
    return app


async def drive(app: Any, requests: int) -> float:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return

    for _ in range(500):  # warm up caches and the middleware stack
        await app(dict(scope), receive, send)
    started = time.process_time()
    for _ in range(requests):
        await app(dict(scope), receive, send)
    return (time.process_time() - started) / requests * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3, help="best of N rounds per variant")
    args = parser.parse_args()
    results = {}
    sink = io.StringIO()
    for variant in ("bare", "no_access_log", "full"):
        app = build(variant)
        with redirect_stdout(sink):  # the access log would otherwise flood the terminal
            results[variant] = min(
                asyncio.run(drive(app, args.requests)) for _ in range(args.rounds)
            )
    metrics_us = results["no_access_log"] - results["bare"]
    logging_us = results["full"] - results["no_access_log"]
    print(
        json.dumps(
            {
                "us_per_request": results,
                "metrics_and_request_id_us": metrics_us,
                "access_log_us": logging_us,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
