"""Named statements on the asyncpg connection, against real PostgreSQL: they run in the session's
transaction (begun through SQLAlchemy's adapter when they come first), autocommit in a read
session, and their driver errors keep their HTTP answers (504, 503 with the broken connection
never lent again) without a statement parameter in any error."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import pytest
from fastapi import FastAPI, HTTPException
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import make_url, select, text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.core import statements
from service.core.db import Database, end_session
from service.core.errors import install_error_handlers
from service.core.routing import ReadSession, WriteSession, api_router
from service.core.statements import Statement
from service.items import repository as items_repository
from service.main import create_app
from service.users import repository as users_repository
from service.users.models import User
from tests.conftest import bearer, make_settings, problem
from tests.support.clients import asgi_client
from tests.support.postgres import asyncpg_dsn

_NOW = Statement(sql="SELECT transaction_timestamp() AS at, pg_backend_pid() AS pid", params=())
_SLEEP = Statement(sql="SELECT pg_sleep(0.005)", params=())
_INSERT = Statement(sql="INSERT INTO t VALUES ($1)", params=("x",))


async def _driver_stamp(session: ReadSession | WriteSession) -> datetime:
    row = await statements.fetch_one(session, _NOW)
    assert row is not None
    stamp: datetime = row["at"]
    return stamp


async def _orm_stamp(session: ReadSession | WriteSession) -> datetime:
    connection = await session.connection()  # SQLAlchemy's own execution path
    result = await connection.execute(text("SELECT transaction_timestamp()"))
    stamp: datetime = result.scalar_one()
    return stamp


def _statements_app(database: Database) -> FastAPI:
    """Endpoints mixing driver and ORM statements over a one-connection pool (the TEMP table
    stays visible)."""
    app = FastAPI()
    install_error_handlers(app)
    app.state.db = database
    router = api_router()

    @router.post("/setup")
    async def setup(session: WriteSession) -> None:
        connection = await session.connection()
        await connection.execute(text("CREATE TEMP TABLE IF NOT EXISTS t (x int)"))

    @router.post("/driver-then-orm")
    async def driver_then_orm(session: WriteSession) -> list[bool]:
        first = await _driver_stamp(session)
        driver = await _driver_connection(session)
        began = driver.is_in_transaction()  # the driver statement began it
        await statements.fetch(session, _SLEEP)
        return [began, first == await _orm_stamp(session), first == await _driver_stamp(session)]

    @router.post("/orm-then-driver")
    async def orm_then_driver(session: WriteSession) -> bool:
        first = await _orm_stamp(session)
        await statements.fetch(session, _SLEEP)
        return first == await _driver_stamp(session)

    @router.get("/read")
    async def read(session: ReadSession) -> list[bool]:
        first = await _driver_stamp(session)
        began = (await _driver_connection(session)).is_in_transaction()
        await statements.fetch(session, _SLEEP)
        return [began, first == await _driver_stamp(session)]

    @router.post("/insert/{x}")
    async def insert(session: WriteSession, x: int, fail: bool = False) -> str:
        tag = await statements.execute(session, _INSERT, x=x)
        if fail:
            raise HTTPException(409, "refused after writing")
        return tag

    @router.get("/rows")
    async def rows(session: ReadSession) -> list[int]:
        found = await statements.fetch(session, Statement("SELECT x FROM t ORDER BY x", ()))
        return [row["x"] for row in found]

    app.include_router(router)
    return app


async def _driver_connection(session: ReadSession | WriteSession) -> asyncpg.Connection:
    raw = await (await session.connection()).get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    return driver


@pytest.fixture
async def one_connection(database_url: str) -> AsyncIterator[Database]:
    database = Database.from_settings(make_settings(database_url, db_pool_size=1))
    try:
        yield database
    finally:
        await database.dispose()


async def test_a_driver_statement_first_in_a_write_session_begins_the_transaction_all_share(
    one_connection: Database,
) -> None:
    async with asgi_client(_statements_app(one_connection), base_url="http://t") as client:
        response = await client.post("/driver-then-orm")
    assert response.status_code == 200
    assert response.json() == [True, True, True]


async def test_a_driver_statement_after_an_orm_one_joins_its_transaction(
    one_connection: Database,
) -> None:
    async with asgi_client(_statements_app(one_connection), base_url="http://t") as client:
        response = await client.post("/orm-then-driver")
    assert response.status_code == 200
    assert response.json() is True


async def test_driver_statements_in_a_read_session_begin_nothing(one_connection: Database) -> None:
    async with asgi_client(_statements_app(one_connection), base_url="http://t") as client:
        response = await client.get("/read")
    assert response.status_code == 200
    assert response.json() == [False, False]  # no transaction: each statement is its own


async def test_a_driver_write_is_committed_by_end_session_and_rolled_back_when_the_endpoint_fails(
    one_connection: Database,
) -> None:
    async with asgi_client(_statements_app(one_connection), base_url="http://t") as client:
        assert (await client.post("/setup")).status_code == 200
        kept = await client.post("/insert/1")
        assert kept.status_code == 200
        assert kept.json() == "INSERT 0 1"
        assert (await client.post("/insert/2", params={"fail": True})).status_code == 409
        assert (await client.get("/rows")).json() == [1]
    assert one_connection.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    async with one_connection.engine.connect() as connection:  # nothing left open on it
        pid_row = await connection.exec_driver_sql("SELECT count(*) FROM t")
        assert pid_row.scalar_one() == 1


# -- a write session's own connection -------------------------------------------------------------
_CREATE_T = "CREATE TEMP TABLE IF NOT EXISTS t (x int)"


async def _rows_of_t(database: Database) -> list[int]:
    async with database.engine.connect() as connection:  # the pool's one connection, so its TEMP t
        rows = await connection.exec_driver_sql("SELECT x FROM t ORDER BY x")
        return [x for (x,) in rows]


async def test_a_write_of_statements_alone_never_begins_an_orm_transaction(
    one_connection: Database,
) -> None:
    """The statements take the session's connection and begin on it through the adapter: no
    Session transaction, no ORM commit; end_session commits on the adapter and gives the
    connection back."""
    async with one_connection.engine.connect() as connection:
        await connection.exec_driver_sql(_CREATE_T)
        await connection.commit()
    session = one_connection.sessionmaker()
    await statements.execute(session, _INSERT, x=1)
    await statements.execute(session, _INSERT, x=2)
    assert session.in_transaction() is False  # the ORM never began
    assert one_connection.engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    await end_session(session, writes=True)
    assert one_connection.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await _rows_of_t(one_connection) == [1, 2]


async def test_the_session_api_ends_the_statements_transaction_too(
    one_connection: Database,
) -> None:
    """commit() commits what the statements did, rollback() and close() drop it, and each
    gives the connection back: a session is ended the same way whichever kind ran first."""
    async with one_connection.engine.connect() as connection:
        await connection.exec_driver_sql(_CREATE_T)
        await connection.commit()
    async with one_connection.sessionmaker() as session:
        await statements.execute(session, _INSERT, x=1)
        await session.commit()
        assert one_connection.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        await statements.execute(session, _INSERT, x=2)  # a new transaction, a new checkout
        await session.rollback()
        await statements.execute(session, _INSERT, x=3)
    # closed by the block without a commit
    assert one_connection.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await _rows_of_t(one_connection) == [1]

    async with one_connection.sessionmaker() as session:
        await statements.execute(session, _INSERT, x=4)
        async with session.begin():  # the ORM takes the connection over: its commit ends both
            await statements.execute(session, _INSERT, x=5)
        assert one_connection.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await _rows_of_t(one_connection) == [1, 4, 5]


async def test_a_commit_the_database_refuses_raises_and_stores_nothing(
    one_connection: Database,
) -> None:
    """A deferred unique constraint fails at COMMIT: end_session raises SQLAlchemy's
    IntegrityError (so the client gets an error, never a 2xx), and the rows are not stored."""
    async with one_connection.engine.connect() as connection:
        await connection.exec_driver_sql(
            "CREATE TEMP TABLE IF NOT EXISTS t (x int UNIQUE DEFERRABLE INITIALLY DEFERRED)"
        )
        await connection.commit()
    session = one_connection.sessionmaker()
    await statements.execute(session, _INSERT, x=7)
    await statements.execute(session, _INSERT, x=7)  # accepted until COMMIT checks it
    with pytest.raises(IntegrityError) as refused:
        await end_session(session, writes=True)
    assert "t_x_key" in str(refused.value)
    assert one_connection.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await _rows_of_t(one_connection) == []


@dataclass
class SharedTable:
    """A real table (other connections see its rows as soon as they commit), its INSERT, and
    the rows as a connection of the test's own sees them."""

    insert: Statement
    observer: asyncpg.Connection
    name: str

    async def rows(self) -> list[int]:
        found = await self.observer.fetch(f"SELECT x FROM {self.name} ORDER BY x")  # noqa: S608
        return [row["x"] for row in found]


@pytest.fixture
async def shared_table(database_url: str) -> AsyncIterator[SharedTable]:
    name = f"standalone_{uuid.uuid4().hex[:8]}"
    observer = await asyncpg.connect(asyncpg_dsn(database_url))
    await observer.execute(f"CREATE TABLE {name} (x int)")
    try:
        insert = Statement(sql=f"INSERT INTO {name} VALUES ($1)", params=("x",))  # noqa: S608
        yield SharedTable(insert=insert, observer=observer, name=name)
    finally:
        await observer.execute(f"DROP TABLE {name}")
        await observer.close()


async def test_a_standalone_write_commits_by_itself_and_nothing_may_follow_it(
    one_connection: Database, shared_table: SharedTable
) -> None:
    session = one_connection.sessionmaker()
    await statements.execute_standalone(session, shared_table.insert, x=1)
    assert await shared_table.rows() == [1]  # committed before the session ends
    with pytest.raises(RuntimeError, match="whole write"):
        await statements.execute(session, shared_table.insert, x=2)
    with pytest.raises(RuntimeError, match="whole write"):
        await session.connection()  # nor may the ORM
    await end_session(session, writes=True)
    assert one_connection.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await shared_table.rows() == [1]


async def test_a_standalone_write_after_another_is_part_of_its_transaction(
    one_connection: Database, shared_table: SharedTable
) -> None:
    session = one_connection.sessionmaker()
    await statements.execute(session, shared_table.insert, x=1)
    await statements.execute_standalone(session, shared_table.insert, x=2)
    await statements.execute(session, shared_table.insert, x=3)  # still open: one transaction
    assert await shared_table.rows() == []
    await end_session(session, writes=True, error=HTTPException(409))  # rolled back: all of it
    assert await shared_table.rows() == []
    assert one_connection.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_only_a_select_without_a_locking_clause_is_a_plain_read() -> None:
    users = User.metadata.tables["users"]
    plain = statements.compile_statement(select(users.c.id), plain_read=True)
    assert plain.plain_read is True
    for not_plain in (
        select(users.c.id).with_for_update(),
        select(users.c.id).with_for_update(read=True, key_share=True),
        users.delete(),
    ):
        with pytest.raises(ValueError, match="not a plain read"):
            statements.compile_statement(not_plain, plain_read=True)


# -- errors on the driver path -----------------------------------------------------------------


async def test_an_update_stuck_behind_a_row_lock_is_504_and_changes_nothing(
    database_url: str, committed_user: uuid.UUID
) -> None:
    """get_item_for_update (SELECT ... FOR UPDATE on the driver) waits on a lock a second
    connection holds until statement_timeout (57014) cancels it."""
    settings = make_settings(database_url, db_statement_timeout_ms=300)
    database = Database.from_settings(settings)
    app = create_app(settings, database=database)
    headers = bearer(app, User(id=committed_user, email="o@example.com", hashed_password="-"))
    locker = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with asgi_client(app) as client:
            created = await client.post("/api/v1/items/", headers=headers, json={"title": "old"})
            assert created.status_code == 200
            item_id = created.json()["id"]
            lock = locker.transaction()
            await lock.start()
            await locker.execute("SELECT 1 FROM items WHERE id = $1 FOR UPDATE", uuid.UUID(item_id))
            response = await client.put(
                f"/api/v1/items/{item_id}", headers=headers, json={"title": "new"}
            )
            await lock.rollback()
            body = problem(response, 504)
            assert body["detail"] == "The database did not answer in time"
            assert response.headers["retry-after"] == "2"
            title = await locker.fetchval(
                "SELECT title FROM items WHERE id = $1", uuid.UUID(item_id)
            )
            assert title == "old"
            assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
            after = await client.put(
                f"/api/v1/items/{item_id}", headers=headers, json={"title": "new"}
            )
            assert after.status_code == 200
            assert after.json()["title"] == "new"
    finally:
        await locker.close()
        await database.dispose()


async def test_a_pooled_connection_terminated_by_the_server_is_503_then_replaced(
    database_url: str, committed_user: uuid.UUID
) -> None:
    """The pool holds one connection, fresh enough to be lent without a ping; the server ends
    its backend. The user lookup on it fails: 503 and the connection invalidated, so the next
    request runs on a new backend."""
    settings = make_settings(database_url, db_pool_size=1, db_max_overflow=0)
    database = Database.from_settings(settings)
    app = create_app(settings, database=database)
    headers = bearer(app, User(id=committed_user, email="o@example.com", hashed_password="-"))
    killer = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with asgi_client(app) as client:
            assert (await client.get("/api/v1/users/me", headers=headers)).status_code == 200
            first_pid = await _pooled_pid(database)
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", first_pid) is True
            await _until_gone(killer, first_pid)

            failed = await client.get("/api/v1/users/me", headers=headers)
            body = problem(failed, 503)
            assert body["detail"] == "The database is unavailable; retry shortly"
            assert failed.headers["retry-after"] == "2"
            assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]

            recovered = await client.get("/api/v1/users/me", headers=headers)
            assert recovered.status_code == 200
            assert recovered.json()["id"] == str(committed_user)
            assert await _pooled_pid(database) != first_pid
    finally:
        await killer.close()
        await database.dispose()


@pytest.fixture
async def refused_role_url(database_url: str) -> AsyncIterator[str]:
    """A URL whose role may open no connection: PostgreSQL refuses at connect time with
    "too many connections for role" (SQLSTATE 53300), as it does with "the database system is
    shutting down" (57P03) during a restart."""
    role = f"keelson_refused_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(asyncpg_dsn(database_url))
    await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    try:
        yield make_url(database_url).set(username=role).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/api/v1/users/me", None), ("POST", "/api/v1/items/", {"title": "never stored"})],
    ids=["read", "write"],
)
async def test_a_connection_the_server_refuses_is_503_not_500(
    refused_role_url: str, method: str, path: str, body: dict[str, str] | None
) -> None:
    """The first statement of a read or a write takes its connection from the pool itself; when
    PostgreSQL refuses the new connection the answer is the retryable 503 SQLAlchemy's own
    checkout gave, not the adapter's error as a 500 (seen in the outage drill: "the database
    system is shutting down" as 500s)."""
    settings = make_settings(refused_role_url, db_pool_size=1, db_max_overflow=0)
    database = Database.from_settings(settings)
    app = create_app(settings, database=database)
    headers = bearer(app, User(id=uuid.uuid4(), email="r@example.com", hashed_password="-"))
    try:
        async with asgi_client(app) as client:
            refused = await client.request(method, path, headers=headers, json=body)
        answer = problem(refused, 503)
        assert answer["detail"] == "The database is unavailable; retry shortly"
        assert refused.headers["retry-after"] == "2"
        assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await database.dispose()


async def _pooled_pid(database: Database) -> int:
    """The backend of the one pooled connection (pool_size=1: the one requests use)."""
    async with database.engine.connect() as connection:
        pid: int = (await connection.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
    return pid


async def _keelson_backends(connection: asyncpg.Connection) -> list[int]:
    rows = await connection.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'keelson'"
        " AND datname = current_database()"
    )
    return [row["pid"] for row in rows]


async def _until_gone(connection: asyncpg.Connection, pid: int) -> None:
    for _ in range(100):
        if pid not in await _keelson_backends(connection):
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"backend {pid} still connected")


async def test_a_statement_cancelled_midway_invalidates_its_connection(database_url: str) -> None:
    """Cancelled while the server runs it, the connection's state is unknown: as SQLAlchemy
    does, it is invalidated (the backend goes) and the pool lends a new one."""
    database = Database.from_settings(make_settings(database_url, db_pool_size=1))
    watcher = await asyncpg.connect(asyncpg_dsn(database_url))
    started = asyncio.Event()
    backend: list[int] = []

    async def slow_read() -> None:
        async with database.sessions(writes=False)() as session:
            backend.append(await _pid(session))
            started.set()
            await statements.fetch(session, Statement("SELECT pg_sleep(30)", ()))

    try:
        task = asyncio.create_task(slow_read())
        await started.wait()
        await _until_running(watcher, backend[0], "SELECT pg_sleep(30)")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        await _until_gone(watcher, backend[0])
        async with database.sessions(writes=False)() as session:
            assert await _pid(session) != backend[0]
    finally:
        await watcher.close()
        await database.dispose()


async def _until_running(connection: asyncpg.Connection, pid: int, query: str) -> None:
    for _ in range(100):
        running = await connection.fetchval(
            "SELECT query FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", pid
        )
        if running == query:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"backend {pid} never ran {query!r}")


async def test_a_disconnect_on_the_driver_invalidates_the_connection_and_the_pool_generation(
    database_url: str,
) -> None:
    """What SQLAlchemy does on a disconnect: the error says so (connection_invalidated) and every
    connection made before it is recycled rather than lent (after a restart they are all dead)."""
    database = Database.from_settings(make_settings(database_url, db_pool_size=2))
    killer = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        first, second = database.sessions(writes=False)(), database.sessions(writes=False)()
        await first.connection()  # each holds its own (a read session's statements alone would
        await second.connection()  # borrow the same one in turn)
        pids = [await _pid(first), await _pid(second)]
        assert pids[0] != pids[1]
        await first.close()  # back in the pool in this order: first is lent next
        await second.close()
        assert await killer.fetchval("SELECT pg_terminate_backend($1)", pids[0]) is True
        await _until_gone(killer, pids[0])

        async with database.sessions(writes=False)() as session:
            with pytest.raises(DBAPIError) as failure:
                await statements.fetch_one(session, _NOW)
        assert failure.value.connection_invalidated
        assert failure.value.params is None

        async with database.sessions(writes=False)() as session:
            fresh = await _pid(session)  # not the second one: its generation was invalidated
        assert fresh not in pids
        await _until_gone(killer, pids[1])  # closed, not just set aside
    finally:
        await killer.close()
        await database.dispose()


async def test_a_read_sessions_statement_gives_its_connection_back_as_soon_as_it_is_done(
    database_url: str,
) -> None:
    """Autocommit keeps no state between statements, so each borrows a pooled connection for
    itself; once the ORM holds one for the session, statements run on that one, never a second."""
    database = Database.from_settings(make_settings(database_url, db_pool_size=2))
    try:
        async with database.sessions(writes=False)() as session:
            lent = await _pid(session)
            assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
            assert await _pid(session) == lent  # the same idle connection, lent again

            connection = await session.connection()  # the ORM's: held until the session ends
            held = (await connection.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
            assert database.engine.pool.checkedout() == 1  # type: ignore[attr-defined]
            assert await _pid(session) == held
            assert database.engine.pool.checkedout() == 1  # type: ignore[attr-defined]
        assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]

        async with database.sessions(writes=True)() as session:  # a write session holds its own
            await _pid(session)
            assert database.engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    finally:
        await database.dispose()


async def _pid(session: ReadSession) -> int:
    row = await statements.fetch_one(session, _NOW)
    assert row is not None
    pid: int = row["pid"]
    return pid


async def test_a_value_the_database_refuses_raises_a_data_error_without_the_value(
    session: ReadSession,
) -> None:
    secret = "parameter-that-must-not-leak"
    with pytest.raises(DataError) as refused:  # SQLSTATE 22021: class 22, answered 400
        await statements.fetch(
            session, Statement("SELECT $1::text", ("value",)), value=f"{secret}\x00"
        )
    assert refused.value.orig is not None
    assert getattr(refused.value.orig, "sqlstate", None) == "22021"
    assert refused.value.params is None
    assert refused.value.hide_parameters
    assert secret not in str(refused.value)


async def test_a_value_the_driver_cannot_encode_is_not_echoed_in_the_error(
    session: ReadSession,
) -> None:
    """asyncpg's own message quotes the argument ("invalid input for query argument $1:
    '...'"): the error keeps which argument, not its value, nor the driver's error as cause.
    asyncpg raises it as its DataError (SQLSTATE 22000), answered 400 like a value PostgreSQL
    refuses."""
    secret = "parameter-that-must-not-leak"
    with pytest.raises(DBAPIError) as refused:
        await statements.fetch(session, Statement("SELECT $1::int", ("value",)), value=secret)
    assert secret not in str(refused.value)
    assert secret not in str(refused.value.orig)
    assert "query argument $1" in str(refused.value)
    assert refused.value.__cause__ is None
    assert refused.value.__suppress_context__
    assert isinstance(refused.value, DataError)
    assert getattr(refused.value.orig, "sqlstate", None) == "22000"

    with pytest.raises(DataError) as malformed:  # not a UUID: the same, through its codec
        await statements.fetch(session, Statement("SELECT $1::uuid", ("value",)), value=secret)
    assert "query argument $1" in str(malformed.value)
    assert secret not in str(malformed.value)


# -- tracing -----------------------------------------------------------------------------------


async def test_each_statement_is_a_client_span_of_the_request_with_its_sql_and_no_value(
    traced: tuple[FastAPI, InMemorySpanExporter], engine: AsyncEngine, user: User
) -> None:
    app, exporter = traced
    async with asgi_client(app) as client:
        created = await client.post(
            "/api/v1/items/", headers=bearer(app, user), json={"title": "traced-title-value"}
        )
    assert created.status_code == 200

    spans = exporter.get_finished_spans()
    [server] = [s for s in spans if s.name == "POST /api/v1/items/"]
    ours = {
        items_repository._INSERT.sql: "INSERT",
        users_repository._USER_RECORD.sql: "SELECT",
    }
    statement_spans = [
        s for s in spans if s.attributes and s.attributes.get("db.statement") in ours
    ]
    assert len(statement_spans) == 2, [(s.name, s.attributes) for s in spans]
    database_name = engine.url.database
    for span in statement_spans:
        assert span.attributes is not None
        assert span.name == f"{ours[str(span.attributes['db.statement'])]} {database_name}"
        assert span.kind is SpanKind.CLIENT
        assert span.attributes["db.system"] == "postgresql"
        assert span.context is not None
        assert server.context is not None
        assert span.context.trace_id == server.context.trace_id
        assert span.parent is not None
        assert "traced-title-value" not in str(span.attributes)
        assert str(user.id) not in str(span.attributes)


def test_without_a_tracer_provider_statements_make_no_span(app: FastAPI) -> None:
    assert app.state.tracer_provider is None
    assert statements._tracer is None
