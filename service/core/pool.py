"""A connection pool that serves waiting requests in arrival order.

SQLAlchemy's async pool waits on an asyncio.Queue. A returned connection wakes the first waiter,
but any request arriving before that waiter runs takes the connection first (it tries the queue
without waiting), and the woken waiter goes back to the *end* of the line. Under load, with more
requests in flight than connections, some requests lose again and again: measured on GET
/users/me with 32 clients and 15 connections, p99 726 ms against 124 ms when nobody waited,
and each lost race costs another wake-up, timer and greenlet switch (~300 us of CPU per request).

Here a returned connection is handed straight to the oldest waiter; a newcomer takes a connection
from the pool only when nobody is waiting for one.
"""

from __future__ import annotations

import asyncio
from collections import deque

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util import await_
from sqlalchemy.util.queue import Empty, Full, QueueCommon


class HandOffQueue(QueueCommon[ConnectionPoolEntry]):
    """The pool's queue of idle connections, with first-come first-served hand-off to waiters.

    Runs on one event loop (the pool's callers are greenlets of it), so no locking is needed.
    """

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self.maxsize = maxsize
        self.use_lifo = use_lifo
        self._idle: deque[ConnectionPoolEntry] = deque()
        self._waiters: deque[asyncio.Future[ConnectionPoolEntry]] = deque()

    def empty(self) -> bool:
        return not self._idle

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._idle)

    def qsize(self) -> int:
        return len(self._idle)

    def put_nowait(self, item: ConnectionPoolEntry) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a waiter that timed out or was cancelled is skipped
                waiter.set_result(item)
                return
        if self.full():
            raise Full
        self._idle.append(item)

    def put(
        self, item: ConnectionPoolEntry, block: bool = True, timeout: float | None = None
    ) -> None:
        self.put_nowait(item)  # never blocks: the pool only returns what it handed out

    def get_nowait(self) -> ConnectionPoolEntry:
        if not self._idle:
            raise Empty
        return self._idle.pop() if self.use_lifo else self._idle.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> ConnectionPoolEntry:
        if self._idle or not block:
            return self.get_nowait()
        return await_(self._wait(timeout))

    async def _wait(self, wait_s: float | None) -> ConnectionPoolEntry:
        waiter: asyncio.Future[ConnectionPoolEntry] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(wait_s):
                return await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():  # handed over as time ran out
                return waiter.result()
            raise Empty from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():  # handed over as we were cancelled
                self.put_nowait(waiter.result())  # pass it on: never lose a connection
            raise
        finally:
            if not waiter.done():
                waiter.cancel()


class HandOffQueuePool(AsyncAdaptedQueuePool):
    """AsyncAdaptedQueuePool (pool_size, max_overflow, timeout, recycle...) with a fair queue."""

    _queue_class = HandOffQueue
