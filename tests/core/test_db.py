"""The engine's round-trip economy against real PostgreSQL: reads run in autocommit, and only
connections idle long enough to have been dropped are pinged before use."""

from __future__ import annotations

import asyncpg
import pytest
from fastapi import APIRouter, FastAPI, HTTPException, Request
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from service.core import db
from service.core.db import Database, SessionDep, SessionRoute
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


def _request(method: str) -> Request:
    return Request({"type": "http", "method": method, "headers": [], "path": "/"})


async def test_get_and_head_sessions_send_no_begin_while_writes_get_a_transaction(
    database_url: str,
) -> None:
    route = SessionRoute("/", lambda: None)
    database = Database.from_settings(make_settings(database_url))
    try:
        for method, autocommit in (("GET", True), ("HEAD", True), ("POST", False)):
            assert route.autocommit(_request(method)) is autocommit
            async with database.sessions(autocommit=autocommit)() as session:
                assert await _statements_share_a_transaction(session) is not autocommit
    finally:
        await database.dispose()


async def test_autocommit_reads_leave_the_pooled_connection_in_its_default_mode(
    database_url: str,
) -> None:
    database = Database.from_settings(make_settings(database_url, db_pool_size=1))
    try:
        async with database.sessions(autocommit=True)() as session:
            assert await _statements_share_a_transaction(session) is False
        async with database.sessions(autocommit=False)() as session:  # the same connection
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


class _AutocommitWhenAsked(SessionRoute):
    def autocommit(self, request: Request) -> bool:
        return "x-autocommit" in request.headers


def _session_app(database: Database) -> FastAPI:
    """Endpoints on a SessionRoute over a one-connection pool (so a TEMP table stays visible)."""
    app = FastAPI()
    app.state.db = database
    router = APIRouter(route_class=_AutocommitWhenAsked)
    plain = APIRouter()

    @router.post("/setup")
    async def setup(session: SessionDep) -> None:
        await (await session.connection()).execute(
            text("CREATE TEMP TABLE IF NOT EXISTS t (x int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
        )

    @router.post("/insert/{x}")
    async def insert(session: SessionDep, x: int, fail: bool = False, twice: bool = False) -> int:
        connection = await session.connection()
        for _ in range(2 if twice else 1):
            await connection.execute(text("INSERT INTO t VALUES (:x)"), {"x": x})
        if fail:
            raise HTTPException(409, "refused after writing")
        return x

    @router.get("/rows")
    async def rows(session: SessionDep) -> list[int]:
        result = await (await session.connection()).execute(text("SELECT x FROM t ORDER BY x"))
        return list(result.scalars())

    @plain.get("/misconfigured")
    async def misconfigured(session: SessionDep) -> None:
        return None

    app.include_router(router)
    app.include_router(plain)
    return app


async def test_session_route_commits_before_answering_and_rolls_back_on_error(
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
            assert (await client.get("/rows")).json() == [1]
            assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
            with pytest.raises(RuntimeError, match="SessionRoute"):
                await client.get("/misconfigured")

            # A route that asks for autocommit: each statement commits itself, so a write made
            # before an error stays (what a one-statement write like POST /items/ relies on).
            autocommit = {"x-autocommit": "1"}
            assert (await client.post("/insert/4", headers=autocommit)).json() == 4
            failed = await client.post("/insert/5", params={"fail": True}, headers=autocommit)
            assert failed.status_code == 409
            assert (await client.get("/rows")).json() == [1, 4, 5]
            assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await database.dispose()
