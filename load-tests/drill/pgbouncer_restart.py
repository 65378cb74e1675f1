"""Reproduce issue 15 without Keelson: clients reconnecting through PgBouncer while PostgreSQL
is stopped (`pg_ctl stop -m fast`, as the suite does) and started again on the same port.

    PYTHONPATH=.:load-tests uv run python -m drill.pgbouncer_restart              # the harness now
    PYTHONPATH=.:load-tests uv run python -m drill.pgbouncer_restart --unread-stderr  # as before

`--unread-stderr` starts PgBouncer as tests/support/pgbouncer.py used to: stderr a pipe nobody
reads. PgBouncer copies every log line to stderr, the pipe fills at 64 KiB, and the pooler (one
thread) blocks in write() for good: it then answers nobody, whatever PostgreSQL does. The report
says where its thread sleeps (/proc/<pid>/wchan), how full the pipe is, and SHOW POOLS.
Everything listens on 127.0.0.1; PostgreSQL and PgBouncer are stopped by pid on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import asyncpg

from service.embedded_postgres import EmbeddedPostgres
from tests.support.pgbouncer import PgBouncer


def _start_with_unread_stderr(bouncer: PgBouncer) -> None:
    """The harness before the fix: `stderr=subprocess.PIPE`, never read."""
    config = bouncer.write_config()
    bouncer.process = subprocess.Popen(
        [bouncer.binary, str(config)],
        user=bouncer.os_user,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    bouncer.wait_listening()


def _thread_state(bouncer: PgBouncer) -> dict[str, Any]:
    assert bouncer.process is not None
    state: dict[str, Any] = {
        "wchan": Path(f"/proc/{bouncer.process.pid}/wchan").read_text(),
        "logfile_bytes": len(bouncer.log().encode()),
    }
    if bouncer.process.stderr is not None:
        queued = fcntl.ioctl(bouncer.process.stderr.fileno(), termios.FIONREAD, b"\0\0\0\0")
        state["stderr_pipe_bytes"] = struct.unpack("i", queued)[0]
    return state


def _show_pools(bouncer: PgBouncer) -> str:
    """The admin console speaks only the simple query protocol: psql, not asyncpg."""
    try:
        shown = subprocess.run(
            ["psql", "-X", "-d", bouncer.admin_dsn(), "-c", "SHOW POOLS"],
            capture_output=True,
            text=True,
            timeout=3,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"admin console did not answer: {error!r}"
    return shown.stdout + shown.stderr


async def run(
    clients: int,
    down_s: float,
    watch_s: float,
    unread_stderr: bool,
    settings: dict[str, str],
) -> dict[str, Any]:
    postgres = EmbeddedPostgres()
    server_url = postgres.start()
    local = postgres.restartable
    if local is None:
        postgres.stop()
        raise SystemExit("needs PostgreSQL binaries (initdb, pg_ctl) to restart the server")
    try:
        bouncer = PgBouncer(server_url, pool_size=2, settings=settings)
    except ValueError:
        postgres.stop()
        raise
    outcomes: list[tuple[float, str]] = []
    stop = asyncio.Event()
    dsn = bouncer.url("postgres").replace("+asyncpg", "")

    async def client() -> None:
        while not stop.is_set():
            at = time.monotonic()
            try:
                connection = await asyncpg.connect(dsn, statement_cache_size=0, timeout=2)
                try:
                    # Bounded: a frozen pooler accepted the connection but never answers.
                    await connection.fetchval("SELECT 1", timeout=2)
                finally:
                    await connection.close(timeout=1)
                outcomes.append((at, "ok"))
            except (
                OSError,
                TimeoutError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
            ) as e:  # every way a client fails, recorded
                outcomes.append((at, f"{type(e).__name__}: {e}"[:110]))
                await asyncio.sleep(0.05)

    try:
        if unread_stderr:
            _start_with_unread_stderr(bouncer)
        else:
            bouncer.start()
        tasks = [asyncio.create_task(client()) for _ in range(clients)]
        await asyncio.sleep(1.5)
        before = sum(1 for _, outcome in outcomes if outcome == "ok")
        stopped_at = time.monotonic()
        await asyncio.to_thread(local.stop_server)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(local.start_server)
        back_at = time.monotonic()
        recovered_s = None
        while recovered_s is None and time.monotonic() - back_at < watch_s:
            await asyncio.sleep(0.05)
            after = [at for at, outcome in outcomes if outcome == "ok" and at >= back_at]
            recovered_s = round(min(after) - back_at, 2) if after else None
        report: dict[str, Any] = {
            "harness": "unread stderr pipe (before)" if unread_stderr else "stderr to a file",
            "clients": clients,
            "settings": settings,
            "ok_before_stop": before,
            "down_s": round(back_at - stopped_at, 2),
            "recovered_s": recovered_s,
            "pgbouncer": _thread_state(bouncer),
        }
        if recovered_s is None:
            report["show_pools"] = _show_pools(bouncer)
        stop.set()
        await asyncio.gather(*tasks)
        errors: dict[str, int] = {}
        for at, outcome in outcomes:
            if outcome != "ok" and at >= stopped_at:
                errors[outcome] = errors.get(outcome, 0) + 1
        report["errors_from_stop"] = errors
        return report
    finally:
        stop.set()
        bouncer.stop()
        postgres.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drill.pgbouncer_restart", description=__doc__)
    parser.add_argument("--clients", type=int, default=10, help="reconnecting clients (1-50)")
    parser.add_argument("--down-s", type=float, default=2.0, help="seconds PostgreSQL is down")
    parser.add_argument("--watch-s", type=float, default=10.0, help="wait this long for recovery")
    parser.add_argument("--unread-stderr", action="store_true", help="start PgBouncer as before")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a PgBouncer setting on top of the harness's (e.g. server_login_retry=0)",
    )
    args = parser.parse_args(argv)
    settings = {}
    for pair in args.set:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip() or not value.strip():
            parser.error(f"--set {pair!r}: expected NAME=VALUE")
        settings[name.strip()] = value.strip()
    if not 1 <= args.clients <= 50:
        parser.error("--clients: 1 to 50")
    if not 0 <= args.down_s <= 10 or not 1 <= args.watch_s <= 30:
        parser.error("--down-s: 0 to 10 seconds; --watch-s: 1 to 30 seconds")
    with contextlib.suppress(KeyboardInterrupt):
        try:
            coroutine = run(args.clients, args.down_s, args.watch_s, args.unread_stderr, settings)
            report = asyncio.run(coroutine)
        except ValueError as error:  # a setting the harness refuses
            parser.error(str(error))
        print(json.dumps(report, indent=2, default=str))
        return 0 if report["recovered_s"] is not None else 1
    return 130


if __name__ == "__main__":
    sys.exit(main())
