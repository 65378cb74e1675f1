"""The pool serves waiting requests in arrival order: a connection coming back goes to the oldest
waiter, never to a request that arrived after it, and no connection is lost on a timeout or a
cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.queue import Empty

from service.core.db import Database
from service.core.pool import HandOffQueue
from tests.conftest import make_settings


def _entry(name: str) -> ConnectionPoolEntry:
    return cast(ConnectionPoolEntry, name)  # the queue never looks inside its entries


async def _waiting_get(queue: HandOffQueue, wait_s: float = 5.0) -> asyncio.Task[Any]:
    task = asyncio.create_task(greenlet_spawn(queue.get, True, wait_s))
    await asyncio.sleep(0)  # let it register as a waiter
    return task


async def test_a_returned_connection_goes_to_the_oldest_waiter_not_to_a_newcomer() -> None:
    queue = HandOffQueue(maxsize=2)
    first, second = await _waiting_get(queue), await _waiting_get(queue)
    queue.put_nowait(_entry("a"))
    with pytest.raises(Empty):  # a request arriving now finds nothing idle: it must wait too
        queue.get_nowait()
    queue.put_nowait(_entry("b"))
    assert (await first, await second) == ("a", "b")
    queue.put_nowait(_entry("c"))  # nobody waits: it stays idle for the next request
    assert queue.qsize() == 1
    assert queue.get_nowait() == _entry("c")


async def test_a_waiter_that_times_out_gets_empty_and_is_skipped() -> None:
    queue = HandOffQueue(maxsize=1)
    with pytest.raises(Empty):
        await greenlet_spawn(queue.get, True, 0.01)
    late = await _waiting_get(queue)
    queue.put_nowait(_entry("a"))
    assert await late == "a"


async def test_a_connection_handed_to_a_cancelled_waiter_is_passed_on() -> None:
    queue = HandOffQueue(maxsize=1)
    doomed, next_in_line = await _waiting_get(queue), await _waiting_get(queue)
    queue.put_nowait(_entry("a"))  # handed to `doomed`...
    doomed.cancel()  # ...which is cancelled (a client hung up) before it could run
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert await next_in_line == "a"


async def test_the_engine_pool_serves_in_arrival_order_and_still_times_out(
    database_url: str,
) -> None:
    settings = make_settings(database_url, db_pool_size=1, db_max_overflow=0, db_pool_timeout_s=0.5)
    database = Database.from_settings(settings)
    served: list[str] = []

    async def use(name: str) -> None:
        async with database.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            served.append(name)

    try:
        holder = await database.engine.connect()
        await holder.execute(text("SELECT 1"))
        waiters = [asyncio.create_task(use(name)) for name in ("w1", "w2")]
        await asyncio.sleep(0.05)  # both are waiting for the one connection
        await holder.close()
        await use("newcomer")  # asks in the same instant, before the woken w1 could run
        await asyncio.gather(*waiters)
        assert served == ["w1", "w2", "newcomer"]

        holder = await database.engine.connect()
        await holder.execute(text("SELECT 1"))
        with pytest.raises(PoolTimeout):
            await use("too late")
        await holder.close()
        assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await database.dispose()


async def _backend_pids(database: Database, how_many: int) -> set[int]:
    """Checks `how_many` connections out at once and gives them back: their backends' pids."""
    connections = []
    try:
        for _ in range(how_many):
            connections.append(await database.engine.connect())
        return {
            (await c.execute(text("SELECT pg_backend_pid()"))).scalar_one() for c in connections
        }
    finally:
        for connection in connections:
            await connection.close()


async def _open_backends(database_url: str, pids: set[int]) -> set[int]:
    probe = Database.from_settings(make_settings(database_url, db_pool_size=1, db_max_overflow=0))
    try:
        async with probe.engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT pid FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                {"pids": list(pids)},
            )
            return {row[0] for row in rows}
    finally:
        await probe.dispose()


@asynccontextmanager
async def _one_plus_two(database_url: str, keep_s: float) -> AsyncIterator[tuple[Database, Any]]:
    """A pool of 1 connection and 2 of overflow that keeps them for `keep_s`, and its engine's
    pool (its counters are QueuePool's: overflow() is 0 with exactly pool_size connections)."""
    settings = make_settings(
        database_url, db_pool_size=1, db_max_overflow=2, db_pool_overflow_idle_s=keep_s
    )
    database = Database.from_settings(settings)
    try:
        yield database, database.engine.pool
    finally:
        await database.dispose()


async def test_a_bursts_extra_connections_are_kept_while_needed_then_closed(
    database_url: str,
) -> None:
    async with _one_plus_two(database_url, keep_s=1.0) as (database, pool):
        burst = await _backend_pids(database, 3)
        assert len(burst) == 3
        # Returned with nobody waiting: QueuePool closed the two beyond pool_size at once (and
        # the next burst opened two new backends); here they stay idle.
        assert (pool.checkedin(), pool.checkedout(), pool.overflow()) == (3, 0, 2)
        await asyncio.sleep(0.5)
        assert await _backend_pids(database, 3) == burst  # needed again: the same backends
        # Given back one by one, so in the second after it no fewer than 2 were idle: only one
        # was never needed in that time, and only it is closed; a second later the other.
        await asyncio.sleep(0.5)
        assert pool.checkedin() == 3
        await asyncio.sleep(1.0)
        assert (pool.checkedin(), pool.checkedout(), pool.overflow()) == (2, 0, 1)
        await asyncio.sleep(1.0)
        assert (pool.checkedin(), pool.checkedout(), pool.overflow()) == (1, 0, 0)
        assert len(await _open_backends(database_url, burst)) == 1
        # The pool may grow again to pool_size + max_overflow, and no further.
        assert len(await _backend_pids(database, 3)) == 3
        with pytest.raises(PoolTimeout):
            await _backend_pids(database, 4)
        assert pool.checkedout() == 0
    assert await _open_backends(database_url, burst) == set()  # disposed: every one closed


async def test_a_request_that_needs_the_extra_connections_keeps_them_longer(
    database_url: str,
) -> None:
    async with _one_plus_two(database_url, keep_s=1.0) as (database, pool):
        burst = await _backend_pids(database, 3)
        await asyncio.sleep(0.6)
        assert await _backend_pids(database, 3) == burst  # all in use again: the period restarts
        await asyncio.sleep(0.7)  # 1.3 s after the first burst, 0.7 s after the second
        assert (pool.checkedin(), pool.overflow()) == (3, 2)
        await asyncio.sleep(0.6)  # 1.3 s after the second: the one never needed is closed
        assert (pool.checkedin(), pool.overflow()) == (2, 1)


async def test_without_keeping_an_overflow_connection_is_closed_when_returned(
    database_url: str,
) -> None:
    async with _one_plus_two(database_url, keep_s=0) as (database, pool):
        burst = await _backend_pids(database, 3)
        assert (pool.checkedin(), pool.overflow()) == (1, 0)
        assert len(await _open_backends(database_url, burst)) == 1


def _connections_opened() -> float:
    value = REGISTRY.get_sample_value("keelson_db_connections_opened_total")
    assert value is not None
    return value


@pytest.mark.parametrize(("keep_s", "reopened"), [(0, 2), (30.0, 0)])
async def test_the_connections_the_pool_opens_are_counted_and_churn_shows(
    database_url: str, keep_s: float, reopened: int
) -> None:
    async with _one_plus_two(database_url, keep_s=keep_s) as (database, _):
        before = _connections_opened()
        await _backend_pids(database, 3)
        assert _connections_opened() - before == 3
        await _backend_pids(database, 3)  # closed when returned: opened again
        assert _connections_opened() - before == 3 + reopened
