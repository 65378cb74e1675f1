"""A connection pool that serves waiting requests in arrival order.

SQLAlchemy's async pool waits on an asyncio.Queue. A returned connection wakes the first waiter,
but any request arriving before that waiter runs takes the connection first (it tries the queue
without waiting), and the woken waiter goes back to the *end* of the line. Under load, with more
requests in flight than connections, some requests lose again and again: measured on GET
/users/me with 32 clients and 15 connections, p99 726 ms against 124 ms when nobody waited,
and each lost race costs another wake-up, timer and greenlet switch (~300 us of CPU per request).

Here a returned connection is handed straight to the oldest waiter; a newcomer takes a connection
from the pool only when nobody is waiting for one.

The pool also pings a connection before lending it, but only one that sat idle long enough to
have been dropped (a database restart or failover, an idle timeout in a proxy): SQLAlchemy's
pre-ping costs three round trips on every checkout with asyncpg, and pool event listeners for a
home-made idle check cost ~60 us per request; a method override costs nothing measurable.

And it keeps a burst's extra connections (max_overflow) for a while instead of closing each one
the moment it comes back with nobody waiting, as QueuePool does. Under steady load the number in
use swings around pool_size, so QueuePool closed and reopened them all the time: 44 connects in
one process during a three-case bench run (each a new PostgreSQL backend, its authentication,
and every statement prepared again on it), 15 with them kept. They are closed once the pool has
had more idle connections than pool_size for `keep_overflow_idle_s`: the ones no request needed
in that time.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from functools import cache
from typing import Any

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util import await_
from sqlalchemy.util.queue import Empty, Full, QueueCommon

from service.core.greenlets import run_in_greenlet


class HandOffQueue(QueueCommon[ConnectionPoolEntry]):
    """The pool's queue of idle connections, with first-come first-served hand-off to waiters.

    Runs on one event loop (the pool's callers are greenlets of it), so no locking is needed.
    """

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self.maxsize = maxsize
        self.use_lifo = use_lifo
        self.spare = 0  # idle room beyond maxsize: the pool's overflow connections it keeps
        self._idle: deque[ConnectionPoolEntry] = deque()
        self._waiters: deque[asyncio.Future[ConnectionPoolEntry]] = deque()

    def empty(self) -> bool:
        return not self._idle

    def full(self) -> bool:
        return self.maxsize > 0 and self.maxsize + self.spare <= len(self._idle)

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


_RETURNED_AT = "keelson_returned_at"


class HandOffQueuePool(AsyncAdaptedQueuePool):
    """AsyncAdaptedQueuePool (pool_size, max_overflow, timeout, recycle...) with a fair queue.

    `ping_if_idle_for_s` None never pings; `keep_overflow_idle_s` 0 closes an overflow connection
    as soon as it is returned with nobody waiting (QueuePool's way). See pool_class().
    """

    _queue_class = HandOffQueue
    ping_if_idle_for_s: float | None = None
    keep_overflow_idle_s: float = 0.0

    def __init__(self, creator: Any, pool_size: int = 5, max_overflow: int = 10, **kw: Any):
        super().__init__(creator, pool_size=pool_size, max_overflow=max_overflow, **kw)
        queue = self._pool
        assert isinstance(queue, HandOffQueue)  # built from _queue_class by QueuePool
        self._idle_queue = queue
        if self.keep_overflow_idle_s > 0 and pool_size > 0 and max_overflow > 0:
            queue.spare = max_overflow
        # Since when more than pool_size connections have been idle, and the fewest idle since.
        self._surplus_since: float | None = None
        self._fewest_idle = 0
        self._reaper: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        if self.ping_if_idle_for_s is not None:
            record.info[_RETURNED_AT] = time.monotonic()
        super()._do_return_conn(record)
        self._count_idle()

    def _do_get(self) -> ConnectionPoolEntry:
        record = super()._do_get()
        self._count_idle()
        idle_limit = self.ping_if_idle_for_s
        if idle_limit is not None and record.dbapi_connection is not None:
            returned_at = record.info.get(_RETURNED_AT)
            if returned_at is not None and time.monotonic() - returned_at >= idle_limit:
                try:
                    self._ping(record)
                except Exception as error:  # dropped while idle: the checkout reconnects it
                    record.invalidate(error)
        return record

    def _ping(self, record: ConnectionPoolEntry) -> None:
        # The pool's _dialect is the engine's dialect (a PGDialect_asyncpg) once the engine is
        # built; its declared type is a minimal stand-in.
        dialect: Any = self._dialect
        dialect.do_ping(record.dbapi_connection)

    # -- keeping overflow connections ------------------------------------------------------

    def _count_idle(self) -> None:
        queue = self._idle_queue
        idle = len(queue._idle)
        if idle <= queue.maxsize:  # every idle one is within pool_size (or nothing is kept)
            self._surplus_since = None
        elif self._surplus_since is None:
            self._surplus_since = time.monotonic()
            self._fewest_idle = idle
            self._arm_reaper(self.keep_overflow_idle_s)
        elif idle < self._fewest_idle:
            self._fewest_idle = idle

    def _arm_reaper(self, delay_s: float) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(delay_s, self._reap)

    def _reap(self) -> None:
        """Closes the connections that stayed idle beyond pool_size for keep_overflow_idle_s."""
        self._reaper = None
        since = self._surplus_since
        if since is None:  # requests used them since: keep them
            return
        remaining_s = since + self.keep_overflow_idle_s - time.monotonic()
        if remaining_s > 0:  # the surplus began again after the timer was set
            self._arm_reaper(remaining_s)
            return
        queue = self._idle_queue
        unneeded = min(self._fewest_idle, len(queue._idle)) - queue.maxsize
        self._surplus_since = None
        loop = asyncio.get_running_loop()
        for _ in range(unneeded):
            # The longest idle first (FIFO), as the next checkout would take the other end.
            record = queue._idle.popleft()
            task = loop.create_task(run_in_greenlet(self._close_overflow, record))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        # More may be idle now than the fewest of the period (returned since): their period
        # starts now.
        self._count_idle()

    def _close_overflow(self, record: ConnectionPoolEntry) -> None:
        try:
            record.close()  # the pool logs a driver's error on close; the connection is gone
        finally:
            self._dec_overflow()

    def dispose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        self._surplus_since = None
        super().dispose()
        if self._closing:  # closes started by the reaper finish before the pool is gone
            await_(asyncio.wait(list(self._closing)))


@cache
def pool_class(
    *, ping_if_idle_for_s: float | None, keep_overflow_idle_s: float
) -> type[HandOffQueuePool]:
    """The pool class that pings connections idle for at least `ping_if_idle_for_s` before
    lending them (None: never) and keeps overflow connections as long as pool_size is not enough
    for `keep_overflow_idle_s` (0: closes them when returned). Class attributes, not instance
    ones: engine.dispose() recreates the pool from its class with QueuePool's arguments only."""
    return type(
        "KeelsonPool",
        (HandOffQueuePool,),
        {"ping_if_idle_for_s": ping_if_idle_for_s, "keep_overflow_idle_s": keep_overflow_idle_s},
    )
