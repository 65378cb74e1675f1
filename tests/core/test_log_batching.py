"""JSON log lines leave in one write per event-loop iteration, and none is lost or torn."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager, redirect_stdout
from typing import Any

import pytest
import structlog

from service.core import logging as service_logging
from service.core.logging import configure_logging, flush_logs
from service.main import create_app
from tests.conftest import make_settings
from tests.support.logs import json_log_lines

NOT_RUNNING = "postgresql://nobody@127.0.0.1:1/none"
UNKNOWN_PATH = "/api/v1/no-such-route"  # routed, answered (404) without a database


class CountingStdout(io.StringIO):
    """A real text stream that counts the `write` calls it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def events(self) -> list[dict[str, Any]]:
        return json_log_lines(self.getvalue())


@pytest.fixture(autouse=True)
def json_logging() -> Iterator[None]:
    flush_logs()  # nothing from an earlier test lands in this one's stream
    configure_logging(make_settings(NOT_RUNNING))
    yield
    flush_logs()


@contextmanager
def counting_stdout() -> Iterator[CountingStdout]:
    """Swapped inside the test body: pytest's own capture replaces sys.stdout between phases."""
    stream = CountingStdout()
    with redirect_stdout(stream):
        yield stream


def _scope(request_id: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": UNKNOWN_PATH,
        "raw_path": UNKNOWN_PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"t"), (b"x-request-id", request_id.encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
    }


async def test_access_lines_of_many_requests_in_one_iteration_leave_in_one_write() -> None:
    with counting_stdout() as stdout:
        app = create_app(make_settings(NOT_RUNNING))
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        # Awaiting a request that never suspends gives the loop no turn: all 30 are answered
        # within one iteration.
        for n in range(30):
            await app(_scope(f"req-{n}"), receive, send)
        assert statuses == [404] * 30
        assert stdout.writes == 0, "lines were written before the iteration ended"

        await asyncio.sleep(0)  # the iteration ends; the batch's callback runs before we resume

        assert stdout.writes == 1
        access = [e for e in stdout.events() if e.get("event") == "request"]
        assert [e["request_id"] for e in access] == [f"req-{n}" for n in range(30)]
        assert all(e["status"] == 404 and e["path"] == UNKNOWN_PATH for e in access)
        assert stdout.getvalue().endswith("\n")


async def test_an_error_line_is_written_at_once_after_the_lines_before_it() -> None:
    with counting_stdout() as stdout:
        log = structlog.get_logger("test.batching")
        log.info("before")
        log.error("failed")

        assert stdout.writes == 1
        assert [e["event"] for e in stdout.events()] == ["before", "failed"]


async def test_an_exception_line_is_written_at_once() -> None:
    with counting_stdout() as stdout:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            structlog.get_logger("test.batching").exception("crashed")

        [event] = stdout.events()
        assert event["event"] == "crashed"
        assert "RuntimeError: boom" in event["exception"]


async def test_a_stdlib_error_is_written_at_once_in_order() -> None:
    with counting_stdout() as stdout:
        import logging

        structlog.get_logger("test.batching").info("ours")
        logging.getLogger("some.library").error("theirs")

        assert stdout.writes == 1
        assert [(e["event"], e["logger"]) for e in stdout.events()] == [
            ("ours", "test.batching"),
            ("theirs", "some.library"),
        ]


def test_a_line_logged_without_a_running_loop_is_written_at_once() -> None:
    with counting_stdout() as stdout:
        structlog.get_logger("test.batching").info("from the cli")

        assert stdout.writes == 1
        assert [e["event"] for e in stdout.events()] == ["from the cli"]


async def test_a_line_from_another_thread_is_written_at_once_after_the_pending_batch() -> None:
    with counting_stdout() as stdout:
        log = structlog.get_logger("test.batching")
        log.info("on the loop")
        # Joined without awaiting, so the loop gets no turn: the batch is still pending when the
        # thread logs.
        worker = threading.Thread(target=log.info, args=("in a thread",))
        worker.start()
        worker.join()

        assert stdout.writes == 1
        assert [e["event"] for e in stdout.events()] == ["on the loop", "in a thread"]


class BlockingStdout(CountingStdout):
    """Holds its first write until released, and records whether two writes ever overlapped."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.inside = 0
        self.overlapped = False
        self._first = True

    def write(self, text: str) -> int:
        self.inside += 1
        self.overlapped |= self.inside > 1
        if self._first:
            self._first = False
            self.release.wait(timeout=10)
        written = super().write(text)
        self.inside -= 1
        return written


def test_a_thread_never_writes_into_another_threads_write() -> None:
    """The first thread's write is held open; the second thread's line must wait for it, not
    enter the stream alongside it (0.2 s is ample for it to try)."""
    log = structlog.get_logger("test.batching")
    stream = BlockingStdout()
    first = threading.Thread(target=log.info, args=("first",))
    second = threading.Thread(target=log.info, args=("second",))
    with redirect_stdout(stream):
        first.start()
        while stream.inside == 0:
            time.sleep(0.001)
        second.start()
        time.sleep(0.2)
        stream.release.set()
        first.join(timeout=10)
        second.join(timeout=10)

    assert not stream.overlapped
    assert stream.writes == 2
    assert [e["event"] for e in stream.events()] == ["first", "second"]


async def test_a_batch_over_the_bound_is_written_before_the_iteration_ends() -> None:
    with counting_stdout() as stdout:
        log = structlog.get_logger("test.batching")
        padding = "x" * 1000
        lines = service_logging.MAX_PENDING_BYTES // 1000 + 5
        for n in range(lines):
            log.info("big", n=n, padding=padding)

        assert stdout.writes == 1
        written = stdout.events()
        assert [e["n"] for e in written] == list(range(len(written)))
        assert len(stdout.getvalue()) > service_logging.MAX_PENDING_BYTES
        assert len(stdout.getvalue()) < service_logging.MAX_PENDING_BYTES + 2000

        await asyncio.sleep(0)
        assert [e["n"] for e in stdout.events()] == list(range(lines))


async def test_lines_pending_when_the_lifespan_ends_are_written() -> None:
    with counting_stdout() as stdout:
        app = create_app(make_settings(NOT_RUNNING))
        async with app.router.lifespan_context(app):
            pass
        # No await since the lifespan ended: only its own flush can have written
        # "shutdown_complete".
        events = [e["event"] for e in stdout.events()]
        assert events[0] == "startup"
        assert events[-1] == "shutdown_complete"


def test_lines_pending_when_the_process_exits_are_written() -> None:
    """The loop stops for good with the batch's callback never run (SystemExit inside a task);
    the atexit hook writes what is pending."""
    script = """
import asyncio
import structlog
from service.core.logging import configure_logging
from tests.conftest import make_settings

configure_logging(make_settings("postgresql://nobody@127.0.0.1:1/none"))

async def main():
    structlog.get_logger("exiting").info("last words")
    raise SystemExit(3)

asyncio.new_event_loop().run_until_complete(main())
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 3, result.stderr
    [event] = json_log_lines(result.stdout)
    assert (event["event"], event["logger"]) == ("last words", "exiting")
    assert json.loads(result.stdout.strip()) == event  # one whole line, nothing else
