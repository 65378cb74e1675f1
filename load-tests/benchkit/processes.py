"""Server processes the runner starts on 127.0.0.1 (keelson, the baselines, the template)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .machine import LOCAL, ROOT

KEELSON_CMD: list[str] = []  # --keelson-cmd: run a patched or alternative build instead


class Server:
    """One HTTP server process on 127.0.0.1, started and stopped (by pid) by the runner."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        port: int,
        logdir: Path,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.port = port
        self.cwd = cwd
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
                cwd=self.cwd,
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
