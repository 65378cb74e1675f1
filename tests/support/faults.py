"""Network faults between the service and PostgreSQL, on 127.0.0.1 only, for fault tests.

- `blackhole()`: a port that is listening but never accepts, its one-slot backlog already
  taken, so a new connection's SYN is dropped and connect() hangs until the client's timeout:
  the "host that answers nothing" case, which a refused port (RST at once) never exercises.
- `CommitCutter`: a TCP proxy to PostgreSQL that cuts the connection at the COMMIT of a
  transaction that wrote a given table, either before the COMMIT reaches the server or after
  the server committed but before its answer reaches the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def blackhole() -> Iterator[int]:
    """Yields a loopback port on which every new connection attempt hangs."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind((LOOPBACK, 0))
        listener.listen(0)  # Linux queues backlog + 1 = one connection, never accepted
        port: int = listener.getsockname()[1]
        filler.connect((LOOPBACK, port))  # takes that one slot: later SYNs are dropped
        yield port
    finally:
        filler.close()
        listener.close()


class CommitCutter:
    """Relays bytes between the service and PostgreSQL; cuts one connection at its COMMIT.

    Armed for the first connection that sends a statement naming `marker` (e.g.
    b"INSERT INTO items"); at that connection's next COMMIT it either drops the COMMIT and
    closes (`deliver_commit=False`: the server rolls back) or forwards it, waits for the
    server's CommandComplete, and closes without relaying it (`deliver_commit=True`: the write
    is durable but the service never hears so). `cut` is set once it happened.
    """

    def __init__(self, upstream_port: int, *, marker: bytes, deliver_commit: bool) -> None:
        self.upstream_port = upstream_port
        self.marker = marker
        self.deliver_commit = deliver_commit
        self.cut = asyncio.Event()
        self.port = 0
        self._armed = True
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CommitCutter:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        server_r, server_w = await asyncio.open_connection(LOOPBACK, self.upstream_port)
        state = {"wrote": False, "swallow": False}
        committed = asyncio.Event()

        async def to_server() -> None:
            while data := await client_r.read(65536):
                if self._armed and self.marker in data:
                    self._armed, state["wrote"] = False, True
                if state["wrote"] and _is_commit(data):
                    if self.deliver_commit:
                        state["swallow"] = True
                        server_w.write(data)
                        await server_w.drain()
                        async with asyncio.timeout(5):  # bounded: a test must not hang
                            await committed.wait()
                    self.cut.set()
                    return
                server_w.write(data)
                await server_w.drain()

        async def to_client() -> None:
            while data := await server_r.read(65536):
                if state["swallow"]:
                    if b"C\x00\x00\x00\x0bCOMMIT\x00" in data:  # CommandComplete "COMMIT"
                        committed.set()
                    continue
                client_w.write(data)
                await client_w.drain()

        pumps = [asyncio.create_task(to_server()), asyncio.create_task(to_client())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for writer in (client_w, server_w):
                writer.close()
            self._tasks.discard(task)


def _is_commit(data: bytes) -> bool:
    """A simple-query COMMIT (asyncpg ends a transaction with Query 'COMMIT;')."""
    return data.startswith(b"Q") and data[5:11].upper() == b"COMMIT"
