"""Running `keelson` as a real process in tests: ports, environments, readiness, logs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.support.clients import sync_http_client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SMTP_"))}
    # A free METRICS_PORT too: the default 9090 would collide between servers run side by side.
    env.update(
        {"LOG_FORMAT": "json", "ENVIRONMENT": "local", "METRICS_PORT": str(free_port())}, **extra
    )
    return env


@contextmanager
def keelson(*args: str, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def wait_ready(port: int, process: subprocess.Popen[str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    with sync_http_client(f"http://127.0.0.1:{port}", timeout=1) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                pytest.fail(f"process exited early ({process.returncode}):\n{output}")
            try:
                if http.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    pytest.fail("server did not become ready in time")


def log_events(output: str) -> list[dict[str, object]]:
    events = []
    for line in output.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def run_keelson(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One-shot subcommand (migrate, seed, ...) that must succeed; returns its output."""
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", command],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


class OutputWatcher:
    """Reads a running process's output on a thread, so a test can wait for a line to appear."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None, "start the process with stdout=PIPE"
        self._stream = process.stdout
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._stream:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:  # the output closed: a waiter must stop waiting for more
            self._changed.notify_all()

    def wait_for(self, text: str, timeout_s: float) -> str:
        """The first line containing `text`, waiting up to `timeout_s` for it."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = next((line for line in self._lines if text in line), None)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._reader.is_alive():
                    output = "".join(self._lines)
                    pytest.fail(f"no line with {text!r} within {timeout_s} s:\n{output}")
                self._changed.wait(remaining)

    def finish(self, timeout_s: float = 10) -> str:
        """Everything the process printed, once it has closed its output."""
        self._reader.join(timeout_s)
        with self._changed:
            return "".join(self._lines)
