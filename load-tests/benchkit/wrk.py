"""wrk: the command for one load, running it bounded in time, and parsing its WRK_JSON line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from .machine import LOAD_TESTS

WRK_DIR = LOAD_TESTS / "wrk"
WRK_TIMEOUT_S = 10  # login p99 is seconds under 32 clients; wrk's default 2 s would drop those


@dataclass
class Load:
    threads: int
    connections: int
    duration_s: float
    warmup_s: float


@dataclass
class Result:
    case: str
    label: str
    url: str
    threads: int
    connections: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    non_2xx: int
    socket_errors: dict[str, int]
    server_cpu_s: float | None = None
    db_cpu_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed_requests(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


def wrk_binary() -> str:
    found = os.environ.get("WRK") or shutil.which("wrk")
    if not found:
        sys.exit("bench: wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    return found


def wrk_command(url: str, script: str, threads: int, connections: int, seconds: float) -> list[str]:
    threads = max(1, min(threads, connections))
    return [
        wrk_binary(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={WRK_TIMEOUT_S}s",
        "-s",
        str(WRK_DIR / script),
        url,
    ]


def parse_wrk(key: str, url: str, cmd: list[str], stdout: str, label: str = "") -> Result:
    """The Result of one wrk run, named `key` (and `label`, else the key) in the report."""
    line = next((x for x in stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        sys.exit(f"bench: wrk printed no result for {url}:\n{stdout}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    lat = raw["latency_us"]
    errors = raw["errors"]
    seconds = raw["duration_us"] / 1e6
    return Result(
        case=key,
        label=label or key,
        url=url,
        threads=int(cmd[1][2:]),
        connections=int(cmd[2][2:]),
        duration_s=round(seconds, 3),
        requests=raw["requests"],
        rps=raw["requests"] / seconds if seconds else 0.0,
        p50_ms=lat["p50"] / 1000,
        p75_ms=lat["p75"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        p999_ms=lat["p999"] / 1000,
        max_ms=lat["max"] / 1000,
        mean_ms=lat["mean"] / 1000,
        non_2xx=errors["status"],
        socket_errors={k: errors[k] for k in ("connect", "read", "write", "timeout")},
    )


def run_wrk(cmd: list[str], env: dict[str, str], seconds: float) -> str:
    result = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=seconds + WRK_TIMEOUT_S + 30
    )
    if result.returncode != 0:
        sys.exit(f"bench: wrk failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout
