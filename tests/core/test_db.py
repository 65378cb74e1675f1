"""Sessions against real PostgreSQL: a ReadSession autocommits, a WriteSession is committed once
before the answer, Transactions hold no connection between blocks, and only connections idle
long enough to have been dropped are pinged before use."""

from __future__ import annotations

from typing import Annotated

import asyncpg
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from service.core import db
from service.core.db import Database
from service.core.errors import Conflict, install_error_handlers
from service.core.routing import (
    ReadSession,
    RequestSession,
    SessionMode,
    Transactions,
    WriteSession,
    api_router,
)
from tests.conftest import make_settings
from tests.support.clients import asgi_client
from tests.support.postgres import asyncpg_dsn


async def _statements_share_a_transaction(session: AsyncSession) -> bool:
    """now() is frozen at the transaction's start: it moves between statements only when each
    statement is its own transaction, i.e. when no BEGIN was sent."""
    connection = await session.connection()
    before = (await connection.execute(text("SELECT now()"))).scalar_one()
    await connection.execute(text("SELECT pg_sleep(0.005)"))
    after = (await connection.execute(text("SELECT now()"))).scalar_one()
    return bool(before == after)


async def _kill_backend(database_url: str, pid: int) -> None:
    """What a database restart or an idle timeout in a proxy does to a pooled connection."""
    killer = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid) is True
    finally:
        await killer.close()


async def _pooled_backend_pid(database: Database) -> int:
    """Use a connection once and give it back to the pool; its server process id."""
    async with database.engine.connect() as connection:
        pid: int = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    return pid


async def test_read_sessions_send_no_begin_while_write_sessions_get_a_transaction(
    database_url: str,
) -> None:
    database = Database.from_settings(make_settings(database_url))
    try:
        for writes in (False, True):
            async with database.sessions(writes=writes)() as session:
                assert await _statements_share_a_transaction(session) is writes
    finally:
        await database.dispose()


async def test_autocommit_reads_leave_the_pooled_connection_in_its_default_mode(
    database_url: str,
) -> None:
    database = Database.from_settings(make_settings(database_url, db_pool_size=1))
    try:
        async with database.sessions(writes=False)() as session:
            assert await _statements_share_a_transaction(session) is False
        async with database.sessions(writes=True)() as session:  # the same connection
            assert await _statements_share_a_transaction(session) is True
    finally:
        await database.dispose()


async def test_an_idle_connection_dropped_by_the_server_is_replaced_before_use(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_IF_IDLE_FOR_S", 0.0)  # every pooled connection counts as idle
    database = Database.from_settings(make_settings(database_url, db_pool_size=1))
    try:
        first_pid = await _pooled_backend_pid(database)
        await _kill_backend(database_url, first_pid)
        assert await _pooled_backend_pid(database) != first_pid
    finally:
        await database.dispose()


async def test_a_fresh_connection_is_not_pinged_and_a_drop_fails_once_then_recovers(
    database_url: str,
) -> None:
    database = Database.from_settings(make_settings(database_url, db_pool_size=2))
    try:
        await _kill_backend(database_url, await _pooled_backend_pid(database))
        with pytest.raises(DBAPIError) as failure:
            async with database.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        assert failure.value.connection_invalidated
        async with database.engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await database.dispose()


async def test_pre_ping_off_never_pings(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "PING_IF_IDLE_FOR_S", 0.0)
    database = Database.from_settings(make_settings(database_url, db_pool_pre_ping=False))
    try:
        await _kill_backend(database_url, await _pooled_backend_pid(database))
        with pytest.raises(DBAPIError):
            async with database.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    finally:
        await database.dispose()


class _Recorded(Conflict):
    """An error that reports what the request recorded: its writes are committed with it."""

    keeps_writes = True

    def __init__(self) -> None:
        super().__init__("recorded, then refused")


async def _caller(session: RequestSession) -> int:
    """What CurrentUser does: a dependency reading on the request's session."""
    connection = await session.connection()
    pid: int = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    return pid


Caller = Annotated[int, Depends(_caller)]


def _session_app(database: Database) -> FastAPI:
    """Endpoints on the service's router over a one-connection pool (a TEMP table stays visible)."""
    app = FastAPI()
    install_error_handlers(app)
    app.state.db = database
    router = api_router()
    plain = APIRouter()

    @router.post("/setup")
    async def setup(session: WriteSession) -> None:
        await (await session.connection()).execute(
            text("CREATE TEMP TABLE IF NOT EXISTS t (x int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
        )

    @router.post("/insert/{x}")
    async def insert(
        session: WriteSession, x: int, fail: bool = False, twice: bool = False, keep: bool = False
    ) -> int:
        connection = await session.connection()
        for _ in range(2 if twice else 1):
            await connection.execute(text("INSERT INTO t VALUES (:x)"), {"x": x})
        if keep:
            raise _Recorded
        if fail:
            raise HTTPException(409, "refused after writing")
        return x

    @router.get("/rows")
    async def rows(session: ReadSession) -> list[int]:
        result = await (await session.connection()).execute(text("SELECT x FROM t ORDER BY x"))
        return list(result.scalars())

    @router.get("/read-is-one-transaction")
    async def read_shares(session: ReadSession) -> bool:
        return await _statements_share_a_transaction(session)

    @router.post("/write-is-one-transaction")
    async def write_shares(session: WriteSession) -> bool:
        return await _statements_share_a_transaction(session)

    @router.post("/units/{x}")
    async def units(transactions: Transactions, pid: Caller, x: int) -> int:
        async with transactions.write() as session:
            await (await session.connection()).execute(text("INSERT INTO t VALUES (:x)"), {"x": x})
        # Between the blocks (where argon2 runs) the request holds no connection.
        held = database.engine.pool.checkedout()  # type: ignore[attr-defined]
        async with transactions.write() as session:
            await (await session.connection()).execute(
                text("INSERT INTO t VALUES (:x)"), {"x": x + 1}
            )
        return int(held)

    @plain.get("/misconfigured")
    async def misconfigured(session: ReadSession) -> None:
        return None

    app.include_router(router)
    app.include_router(plain)
    return app


async def test_write_session_commits_before_answering_and_rolls_back_on_error(
    database_url: str,
) -> None:
    database = Database.from_settings(make_settings(database_url, db_pool_size=1))
    app = _session_app(database)
    try:
        async with asgi_client(app, base_url="http://t") as client:
            assert (await client.post("/setup")).status_code == 200
            assert (await client.post("/insert/1")).json() == 1
            assert (await client.post("/insert/2", params={"fail": True})).status_code == 409
            # The deferred unique check fires at COMMIT: the error reaches the client, no 2xx.
            with pytest.raises(IntegrityError):
                await client.post("/insert/3", params={"twice": True})
            # An error that keeps its writes: committed, and still answered as the error.
            kept = await client.post("/insert/4", params={"keep": True})
            assert kept.status_code == 409
            assert kept.json()["detail"] == "recorded, then refused"
            assert (await client.get("/rows")).json() == [1, 4]
            assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
            with pytest.raises(RuntimeError, match=r"service\.core\.routing"):
                await client.get("/misconfigured")
    finally:
        await database.dispose()


async def test_the_session_type_not_the_method_chooses_autocommit(database_url: str) -> None:
    database = Database.from_settings(make_settings(database_url))
    try:
        async with asgi_client(_session_app(database), base_url="http://t") as client:
            assert (await client.get("/read-is-one-transaction")).json() is False
            assert (await client.post("/write-is-one-transaction")).json() is True
    finally:
        await database.dispose()


async def test_transactions_commit_each_block_and_hold_no_connection_between_them(
    database_url: str,
) -> None:
    database = Database.from_settings(make_settings(database_url, db_pool_size=1))
    try:
        async with asgi_client(_session_app(database), base_url="http://t") as client:
            assert (await client.post("/setup")).status_code == 200
            # The caller's read (on the request's session) was given back before the first block.
            assert (await client.post("/units/10")).json() == 0
            assert (await client.get("/rows")).json() == [10, 11]
            assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await database.dispose()


def test_a_route_declaring_two_session_kinds_is_refused_when_it_is_built() -> None:
    router = api_router()

    async def both(read: ReadSession, write: WriteSession) -> None:
        return None

    with pytest.raises(TypeError, match="read and write sessions: choose one"):
        router.add_api_route("/both", both, methods=["POST"])


def test_the_mode_comes_from_the_declared_type() -> None:
    router = api_router()

    async def read(session: ReadSession) -> None:
        return None

    async def write(session: WriteSession) -> None:
        return None

    async def units(transactions: Transactions) -> None:
        return None

    async def dependency_only(session: RequestSession) -> None:
        return None

    async def nothing() -> None:
        return None

    for endpoint in (read, write, units, dependency_only, nothing):
        router.add_api_route(f"/{endpoint.__name__}", endpoint, methods=["GET"])
    modes = {route.path: route.session_mode for route in router.routes}  # type: ignore[attr-defined]
    assert modes == {
        "/read": SessionMode.READ,
        "/write": SessionMode.WRITE,
        "/units": SessionMode.UNITS,
        "/dependency_only": SessionMode.READ,
        "/nothing": SessionMode.NONE,
    }
