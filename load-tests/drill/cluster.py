"""The drill's processes: PostgreSQL (service/embedded_postgres.py), PgBouncer, `keelson serve`
replicas and haproxy in front, all on 127.0.0.1, each stopped by pid."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from service.core.migrations import expected_heads
from service.embedded_postgres import EmbeddedPostgres, LocalPostgres
from tests.support.pgbouncer import PgBouncer

ROOT = Path(__file__).resolve().parents[2]
LOAD_TESTS = ROOT / "load-tests"
HAPROXY = "/usr/sbin/haproxy"
LOCAL = "127.0.0.1"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "drill-admin-pass-1"  # noqa: S105 - a throwaway cluster's admin
SLOTS = 8  # haproxy server slots; at most N + 1 replicas run at once (maxSurge 1)
DRILL_REVISION = "d7111"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Lifecycle:
    """The chart's pod lifecycle (charts/keelson/values.yaml) and readiness probe."""

    prestop_s: float
    shutdown_timeout_s: float
    termination_margin_s: float
    readiness_period_s: float
    readiness_failure_threshold: int

    @property
    def grace_s(self) -> float:
        """terminationGracePeriodSeconds: preStop + shutdown + margin, then SIGKILL."""
        return self.prestop_s + self.shutdown_timeout_s + self.termination_margin_s

    @classmethod
    def from_chart(cls) -> Lifecycle:
        values = yaml.safe_load((ROOT / "charts/keelson/values.yaml").read_text())
        lifecycle, readiness = values["lifecycle"], values["probes"]["readiness"]
        return cls(
            prestop_s=float(lifecycle["preStopSleepSeconds"]),
            shutdown_timeout_s=float(lifecycle["shutdownTimeoutSeconds"]),
            termination_margin_s=float(lifecycle["terminationMarginSeconds"]),
            readiness_period_s=float(readiness["periodSeconds"]),
            readiness_failure_threshold=int(readiness["failureThreshold"]),
        )


@dataclass
class Replica:
    name: str  # the haproxy server name (slot), also answered in X-Served-By
    port: int
    release: str  # "old" (migrations/versions) or "new" (plus the drill's revision)
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        return f"http://{LOCAL}:{self.port}"


class Cluster:
    """Start with `with Cluster(...) as cluster:`; everything started is stopped on exit."""

    def __init__(
        self,
        *,
        replicas: int,
        lifecycle: Lifecycle,
        check_interval_s: float,
        fall: int,
        rise: int = 1,
        pgbouncer_pool_size: int = 4,
        db_pool_size: int = 4,
        login_max_failures: int = 5,
    ) -> None:
        self.replica_count = replicas
        self.lifecycle = lifecycle
        self.check_interval_s = check_interval_s
        self.fall = fall
        self.rise = rise
        self.root = Path(tempfile.mkdtemp(prefix="keelson-drill-"))
        self.postgres = EmbeddedPostgres()
        self.bouncer: PgBouncer | None = None
        self.pgbouncer_pool_size = pgbouncer_pool_size
        self.db_pool_size = db_pool_size
        self.login_max_failures = login_max_failures
        self.slot_ports = [free_port() for _ in range(SLOTS)]
        self.replicas: dict[str, Replica] = {}
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.haproxy_port = free_port()
        self.versions_dir = self.root / "drill_versions"
        self.direct_url = ""
        self.pooled_url = ""

    # -- start and stop ----------------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def local_postgres(self) -> LocalPostgres:
        local = self.postgres.restartable
        if local is None:
            raise RuntimeError("the drill needs PostgreSQL binaries (initdb, pg_ctl) to restart")
        return local

    def start(self) -> None:
        server_url = self.postgres.start()
        self.direct_url = server_url
        self.bouncer = PgBouncer(server_url, pool_size=self.pgbouncer_pool_size).start()
        self.pooled_url = self.bouncer.url("postgres")
        self._write_drill_migration()
        for command in ("migrate", "seed"):
            self.run_keelson("old", command)
        self._start_haproxy()
        for _ in range(self.replica_count):
            self.start_replica("old")
        self.wait_all_up()

    def stop(self) -> None:
        for replica in list(self.replicas.values()):
            self._kill(replica)
        self.replicas.clear()
        if self.haproxy is not None:
            self._stop_process(self.haproxy, signal.SIGTERM, 5)
            self.haproxy = None
        if self.bouncer is not None:
            self.bouncer.stop()
            self.bouncer = None
        self.postgres.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _stop_process(process: subprocess.Popen[bytes], sig: int, wait_s: float) -> None:
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(wait_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def _kill(self, replica: Replica) -> None:
        self._stop_process(replica.process, signal.SIGKILL, 5)

    # -- keelson -----------------------------------------------------------------------

    def env(self, release: str, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DATABASE_URL", "MIGRATION_", "SMTP_", "DB_"))
        }
        env.update(
            ENVIRONMENT="local",
            SECRET_KEY="drill-secret-key-0123456789-abcdefghijklmnop",  # noqa: S106 - throwaway
            DATABASE_URL=self.pooled_url,
            MIGRATION_DATABASE_URL=self.direct_url,
            DB_POOLER="pgbouncer",
            DB_POOL_SIZE=str(self.db_pool_size),
            DB_MAX_OVERFLOW="2",
            DB_POOL_TIMEOUT_S="2",
            DB_CONNECT_TIMEOUT_S="1",
            SHUTDOWN_TIMEOUT_S=str(self.lifecycle.shutdown_timeout_s),
            FIRST_SUPERUSER=ADMIN_EMAIL,
            FIRST_SUPERUSER_PASSWORD=ADMIN_PASSWORD,
            LOGIN_MAX_FAILURES_PER_ACCOUNT=str(self.login_max_failures),
            LOGIN_MAX_FAILURES_PER_IP="100000",
            ARGON2_MEMORY_KIB="1024",
            ARGON2_TIME_COST="1",
            ARGON2_PARALLELISM="1",
            ACCESS_LOG_ENABLED="false",
            LOG_FORMAT="json",
            PYTHONPATH=os.pathsep.join([str(ROOT), str(LOAD_TESTS)]),
            KEELSON_DRILL_VERSIONS=str(self.versions_dir),
        )
        env.update(extra)
        return env

    def _command(self, release: str) -> list[str]:
        module = "drill.new_code" if release == "new" else "service.cli"
        return [sys.executable, "-m", module]

    def run_keelson(
        self, release: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self._command(release), *args],
            env=self.env(release),
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"keelson {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done

    def _write_drill_migration(self) -> None:
        """The test-only expand migration, written next to no real one: a nullable column and an
        index built CONCURRENTLY would be the real thing; a nullable column is enough here."""
        [head] = expected_heads()
        self.versions_dir.mkdir()
        (self.versions_dir / f"{DRILL_REVISION}_drill_expand.py").write_text(
            textwrap.dedent(
                f'''\
                """drill: expand-only, a nullable column old code never reads."""
                from alembic import op
                import sqlalchemy as sa

                revision = "{DRILL_REVISION}"
                down_revision = "{head}"
                branch_labels = None
                depends_on = None


                def upgrade() -> None:
                    op.add_column("items", sa.Column("drill_note", sa.Text(), nullable=True))


                def downgrade() -> None:
                    op.drop_column("items", "drill_note")
                '''
            )
        )

    def free_slot(self) -> str:
        for index in range(SLOTS):
            name = f"s{index}"
            if name not in self.replicas:
                return name
        raise RuntimeError("no free haproxy slot")

    def start_replica(self, release: str) -> Replica:
        name = self.free_slot()
        port = self.slot_ports[int(name[1:])]
        log_path = self.root / f"{name}-{time.monotonic_ns()}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*self._command(release), "serve", "--host", LOCAL, "--port", str(port)],
                env=self.env(release, METRICS_PORT=str(free_port())),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        replica = Replica(name, port, release, process, log_path)
        self.replicas[name] = replica
        return replica

    def terminate(self, replica: Replica) -> tuple[float, bool]:
        """A pod deletion: out of the endpoints (haproxy maint, as the endpoints controller),
        preStop sleep, SIGTERM, SIGKILL after the grace period. Returns (seconds, killed)."""
        started = time.monotonic()
        self.haproxy_command(f"set server keelson/{replica.name} state maint")
        time.sleep(self.lifecycle.prestop_s)
        replica.process.send_signal(signal.SIGTERM)
        left = self.lifecycle.grace_s - (time.monotonic() - started)
        killed = False
        try:
            replica.process.wait(max(left, 0.1))
        except subprocess.TimeoutExpired:
            replica.process.kill()
            replica.process.wait(5)
            killed = True
        del self.replicas[replica.name]
        return time.monotonic() - started, killed

    def sigkill(self, replica: Replica) -> None:
        """The node or the container dies: nobody tells the balancer; its checks notice."""
        replica.process.send_signal(signal.SIGKILL)
        replica.process.wait(5)

    def forget(self, replica: Replica) -> None:
        self.haproxy_command(f"set server keelson/{replica.name} state maint")
        self.replicas.pop(replica.name, None)

    def readyz(self, replica: Replica) -> tuple[int, dict[str, object]]:
        response = httpx.get(f"{replica.url}/readyz", timeout=3)
        return response.status_code, response.json()

    # -- haproxy -----------------------------------------------------------------------

    @property
    def balancer_url(self) -> str:
        return f"http://{LOCAL}:{self.haproxy_port}"

    def _start_haproxy(self) -> None:
        servers = "\n".join(
            f"    server s{i} {LOCAL}:{port} check disabled"
            for i, port in enumerate(self.slot_ports)
        )
        check = f"inter {int(self.check_interval_s * 1000)}ms fall {self.fall} rise {self.rise}"
        problem = (
            '{"type":"about:blank","title":"Service Unavailable","status":503,'
            '"detail":"No ready replica; retry shortly"}'
        )
        config = textwrap.dedent(
            f"""\
            global
                maxconn 4000
                stats socket {self.root / "haproxy.sock"} mode 600 level admin
            defaults
                mode http
                timeout connect 2s
                timeout client 60s
                timeout server 60s
                # A refused connection (a replica that just died) is retried once on another
                # replica, as ingress-nginx's proxy_next_upstream does; a sent request never is.
                retries 1
                option redispatch 1
            frontend api
                bind {LOCAL}:{self.haproxy_port}
                default_backend keelson
            backend keelson
                balance roundrobin
                # The readiness probe: /readyz, every interval, out after `fall` failures.
                option httpchk GET /readyz
                http-check expect status 200
                default-server {check}
                http-response set-header X-Served-By %s
                errorfile 503 {self.root / "503.http"}
            {servers}
            """
        )
        (self.root / "503.http").write_text(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
            f"Retry-After: 2\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{problem}\n"
        )
        path = self.root / "haproxy.cfg"
        path.write_text(config)
        check = subprocess.run(
            [HAPROXY, "-c", "-q", "-f", str(path)], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy config invalid:\n{check.stderr}")
        self.haproxy = subprocess.Popen(
            [HAPROXY, "-f", str(path), "-db"],
            stdout=(self.root / "haproxy.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while not (self.root / "haproxy.sock").exists():
            if time.monotonic() > deadline or self.haproxy.poll() is not None:
                raise RuntimeError("haproxy did not start")
            time.sleep(0.05)

    def haproxy_command(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.root / "haproxy.sock"))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_status(self) -> dict[str, str]:
        """haproxy's view of each slot: UP, DOWN, MAINT, ..."""
        text = self.haproxy_command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == "keelson" and row["svname"].startswith("s")
        }

    def wait_up(self, replica: Replica, timeout_s: float = 60) -> float:
        """As a kubelet and the endpoints controller: once /readyz answers 200 the replica joins
        the balancer, whose own checks then keep it honest. Returns seconds since its start."""
        deadline = time.monotonic() + timeout_s
        joined = False
        while time.monotonic() < deadline:
            if replica.process.poll() is not None:
                raise RuntimeError(
                    f"{replica.name} exited:\n{replica.log_path.read_text()[-3000:]}"
                )
            if not joined:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    if self.readyz(replica)[0] == 200:
                        self.haproxy_command(f"set server keelson/{replica.name} state ready")
                        joined = True
            elif self.server_status().get(replica.name) == "UP":
                return time.monotonic() - replica.started_at
            time.sleep(0.05)
        raise RuntimeError(f"{replica.name} never became UP in haproxy")

    def wait_all_up(self) -> None:
        for replica in list(self.replicas.values()):
            self.wait_up(replica)

    def wait_down(self, replica: Replica, timeout_s: float = 30) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.server_status().get(replica.name, "DOWN").startswith("DOWN"):
                return time.monotonic() - started
            time.sleep(0.02)
        raise RuntimeError(f"{replica.name} never marked DOWN")

    def bouncer_log_tail(self, lines: int = 15) -> str:
        """PgBouncer's own lines about server connections (for a report that did not recover)."""
        log = self.bouncer.log() if self.bouncer is not None else ""
        return "\n".join([line for line in log.splitlines() if " S-" in line][-lines:])

    def wait_all_routed(self, names: list[str], timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.server_status()
            if all(status.get(name) == "UP" for name in names):
                return
            time.sleep(0.05)
        raise RuntimeError(f"not all of {names} UP in haproxy: {self.server_status()}")
