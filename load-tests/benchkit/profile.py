"""--profile: py-spy samples the server under load (keelson, the template): where time goes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cases import Case
    from .target import Target
    from .wrk import Result

# Where a sample's innermost frame lives -> a bucket a reader can act on. First match wins.
PROFILE_BUCKETS = [
    ("argon2", "argon2 (password hashing)"),
    ("asyncpg/", "asyncpg (driver)"),
    ("psycopg", "psycopg (the template's driver)"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("sqlmodel/", "SQLModel"),
    ("pydantic", "pydantic (validation/serialisation)"),
    ("fastapi/", "FastAPI"),
    ("starlette/", "Starlette"),
    ("uvicorn/", "uvicorn"),
    ("httptools", "httptools"),
    ("uvloop", "uvloop"),
    ("structlog/", "structlog (logging)"),
    ("logging/", "stdlib logging"),
    ("prometheus_client/", "prometheus_client (metrics)"),
    ("opentelemetry", "OpenTelemetry"),
    ("jwt/", "PyJWT"),
    ("orjson", "orjson"),
    ("json/", "stdlib json"),
    ("email_validator", "email-validator"),
    ("service/", "service/ (Keelson code)"),
    ("backend/app/", "app/ (the template's code)"),
    ("asyncio/", "asyncio"),
    ("anyio/", "anyio (threadpool)"),
]
SAMPLE_RATE_HZ = 200


def start_profiler(
    target: Target, case: Case, seconds: float
) -> tuple[subprocess.Popen[bytes], Path] | None:
    if target.profile_dir is None or target.server is None:
        return None
    if case.server not in {"keelson", "template"}:
        return None
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        sys.exit("bench: --profile needs py-spy: uv run --with py-spy python load-tests/bench.py")
    target.profile_dir.mkdir(parents=True, exist_ok=True)
    out = target.profile_dir / f"{case.key.replace('/', '_').replace(':', '_')}.txt"
    proc = subprocess.Popen(
        [
            pyspy,
            "record",
            "--pid",
            str(target.server.pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(SAMPLE_RATE_HZ),
            "--format",
            "raw",
            "--nonblocking",
            "--threads",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, out


def finish_profiler(proc: subprocess.Popen[bytes], out: Path) -> dict[str, Any]:
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    if not out.exists():
        return {"error": "py-spy wrote nothing (ptrace not permitted?)"}
    return summarize_profile(out)


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Event-loop (MainThread) self time by component and function, inclusive time of service/
    functions, and the share of samples on other threads, from py-spy's raw --threads output."""
    buckets: dict[str, int] = {}
    functions: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = main_total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, _, frames_text = stack.partition(";")
        name = thread.split(": ", 1)[-1]
        total += count
        threads[name] = threads.get(name, 0) + count
        if name != "MainThread":
            continue
        main_total += count
        frames = frames_text.split(";")
        leaf = frames[-1]
        bucket = next((label for key, label in PROFILE_BUCKETS if key in leaf), "other")
        buckets[bucket] = buckets.get(bucket, 0) + count
        functions[leaf] = functions.get(leaf, 0) + count
        for frame in set(frames):
            if "(service/" in frame:
                inclusive[frame] = inclusive.get(frame, 0) + count

    def share(table: dict[str, int], of: int) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda kv: kv[1], reverse=True)[:top]
        return [(k, round(100 * v / of, 1)) for k, v in ranked] if of else []

    return {
        "file": str(path),
        "samples": total,
        "event_loop_samples": main_total,
        "threads_pct": share(threads, total),
        "self_by_bucket_pct": share(buckets, main_total),
        "self_by_function_pct": share(functions, main_total),
        "inclusive_service_pct": share(inclusive, main_total),
    }


def profile_report(results: dict[str, Result]) -> str:
    sections = [
        ("samples by thread:", "threads_pct", 5),
        ("event loop (MainThread) self time by component:", "self_by_bucket_pct", None),
        ("event loop hottest functions (self):", "self_by_function_pct", 12),
        ("service/ functions (inclusive, event loop):", "inclusive_service_pct", 12),
    ]
    lines = []
    for r in results.values():
        prof = r.extra.get("profile")
        if not prof or "samples" not in prof:
            continue
        lines.append(f"\n-- profile: {r.label} ({prof['samples']} samples)")
        for title, key, limit in sections:
            lines.append(f"   {title}")
            lines += [f"     {pct:5.1f}%  {name}" for name, pct in prof[key][:limit]]
    return "\n".join(lines)
