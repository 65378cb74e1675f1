"""A real PgBouncer in transaction mode in front of a test PostgreSQL, for the suite and the drill.

Debian's `pgbouncer` package (1.18) is started as a foreground process we own by pid, listening on
127.0.0.1 only, with `default_pool_size` small so that clients really share server connections.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from sqlalchemy.engine import make_url

PGBOUNCER = "/usr/sbin/pgbouncer"
_RUN_AS = "postgres"  # pgbouncer refuses to run as root
_SETTING_NAME = re.compile(r"[a-z_]+")


class PgBouncerUnavailable(RuntimeError):
    pass


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or (PGBOUNCER if Path(PGBOUNCER).exists() else None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgBouncer:
    """`with PgBouncer(server_url) as bouncer:` then connect to `bouncer.url(database)`.

    Auth is `trust` (the test PostgreSQL trusts 127.0.0.1 too); the user list names the server
    URL's user, whom PgBouncer passes through to PostgreSQL unchanged.
    """

    def __init__(
        self,
        server_url: str,
        *,
        pool_size: int = 2,
        max_client_conn: int = 400,
        idle_transaction_timeout_s: int = 0,
        settings: Mapping[str, str | int] | None = None,
    ) -> None:
        binary = find_pgbouncer()
        if binary is None:
            raise PgBouncerUnavailable(
                "pgbouncer is not installed (Debian: apt-get install pgbouncer)"
            )
        self.binary = binary
        server = make_url(server_url)
        self.server_host = server.host or "127.0.0.1"
        self.server_port = server.port or 5432
        self.user = server.username or "postgres"
        # PgBouncer logs in to PostgreSQL with the password the user list holds for the user.
        self.password = server.password or ""
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.idle_transaction_timeout_s = idle_transaction_timeout_s
        self.settings = dict(settings or {})
        for name, value in self.settings.items():
            if not _SETTING_NAME.fullmatch(name) or "\n" in str(value):
                raise ValueError(f"invalid pgbouncer setting {name}={value!r}")
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="keelson-pgbouncer-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.os_user: str | None = None
        if os.geteuid() == 0:
            entry = pwd.getpwnam(_RUN_AS)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self.os_user = _RUN_AS

    def _config(self) -> str:
        return "\n".join(
            [
                "[databases]",
                f"* = host={self.server_host} port={self.server_port}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {self.port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {self.root / 'userlist.txt'}",
                f"admin_users = {self.user}",
                "pool_mode = transaction",
                f"default_pool_size = {self.pool_size}",
                "min_pool_size = 0",
                "reserve_pool_size = 0",
                f"max_client_conn = {self.max_client_conn}",
                # Clients wait for a server connection instead of failing; keelson's own pool
                # timeout bounds the wait on its side.
                "query_wait_timeout = 30",
                f"idle_transaction_timeout = {self.idle_transaction_timeout_s}",
                # A restarted PostgreSQL is retried at once rather than after the 15 s default.
                "server_login_retry = 1",
                "server_connect_timeout = 2",
                f"logfile = {self.root / 'pgbouncer.log'}",
                f"pidfile = {self.root / 'pgbouncer.pid'}",
                # Last: PgBouncer keeps the last value of a repeated setting.
                *(f"{name} = {value}" for name, value in self.settings.items()),
                "",
            ]
        )

    def write_config(self) -> Path:
        """pgbouncer.ini and its user list in the temp dir; returns the config's path."""
        userlist = self.root / "userlist.txt"
        userlist.write_text(f'"{self.user}" "{self.password}"\n')
        userlist.chmod(0o600)
        config = self.root / "pgbouncer.ini"
        config.write_text(self._config())
        if self.os_user is not None:
            entry = pwd.getpwnam(self.os_user)
            for path in (config, self.root / "userlist.txt"):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        return config

    def start(self) -> PgBouncer:
        config = self.write_config()
        # PgBouncer writes every log line to stderr as well as to its logfile. A pipe nobody reads
        # holds 64 KiB: after ~230 client logins (or one PostgreSQL restart under load) the
        # single-threaded pooler blocked in write() for good (wchan anon_pipe_write) and served
        # nobody. A file never fills, and keeps what it prints before its logfile is open.
        with (self.root / "stderr.log").open("wb") as stderr:
            self.process = subprocess.Popen(
                [self.binary, str(config)],
                user=self.os_user,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self.wait_listening()
        return self

    def wait_listening(self, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                stderr = (self.root / "stderr.log").read_text(errors="replace")
                raise PgBouncerUnavailable(f"pgbouncer exited at start:\n{stderr[-3000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        raise PgBouncerUnavailable(f"pgbouncer did not listen within {timeout_s} s")

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of `database` through PgBouncer."""
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{database}"

    def admin_dsn(self) -> str:
        """The admin console (SHOW POOLS, RECONNECT, ...): a plain asyncpg DSN."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/pgbouncer"

    def log(self) -> str:
        path = self.root / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # immediate shutdown: nothing here must outlive us
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
