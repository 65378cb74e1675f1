"""Named statements: SQLAlchemy Core built from the tables, compiled once, run on the driver.

The request path's queries are written against the SQLModel tables (so a renamed column breaks
them at import, not in production) and compiled when their module is imported: compiling a Core
statement per request cost more than PostgreSQL's work for the query (GET /items/, POST /items/).

They run straight on the asyncpg connection under the session's SQLAlchemy connection: looked
up once per session, then every statement is one `await` on the driver, with no greenlet hop,
execution context, cursor or Result per statement (SQLAlchemy's share of one autocommit user
lookup measured ~125 us over a raw asyncpg fetchrow). Rows are asyncpg Records (index and key
access). What SQLAlchemy did for these statements is kept here, in one place:

- the transaction: a statement in a WriteSession runs inside the session's transaction. When it
  comes first, it takes the session's connection from the pool itself (`_Owned`) and begins the
  transaction *through the adapter* (`_start_transaction`); core/db.end_session commits it on the
  adapter, and an ORM statement later in the session runs on the same connection
  (`StatementsSession`). When the ORM came first, statements run on its connection and
  transaction. A `plain_read` statement begins nothing, and `execute_standalone` runs a whole
  write as its own transaction when none is open. In autocommit (a ReadSession) nothing begins.
  Inside the tests' savepoint harness the session's SAVEPOINT was already sent, so the adapter is
  in its transaction and nothing is added.
- errors: a driver error becomes SQLAlchemy's public `DBAPIError` (the subclass for its SQLSTATE
  class; `orig` the driver's error; statement parameters never attached), so core/db_errors.py
  maps it as before. A connection the error closed is invalidated, with the pool's older
  connections (what SQLAlchemy does on a disconnect), so the pool never lends it again; an
  interrupted statement (cancellation) invalidates the connection, as SQLAlchemy does.
- tracing: one span per statement when core/telemetry.py installed a tracer, nothing otherwise.
- in a ReadSession that holds no connection, a statement borrows one from the pool for itself
  and returns it as soon as it is done (`LENT_PER_STATEMENT` below).

That relies on three private members of SQLAlchemy's asyncpg adapter and pool (`_transaction`,
`_start_transaction`, `Pool._invalidate`) and on `Connection(engine, connection=<pooled>)`:
tests/core/test_pool_private_api.py fails when they change, under the SQLAlchemy minor
pyproject.toml pins.

Statements are unnamed behind a transaction-mode pooler: with DB_POOLER=pgbouncer asyncpg's own
statement cache is off (core/db.driver_connect_args), so each statement's Parse travels with its
Bind/Execute, and PgBouncer may put it on any server connection.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import asyncpg
from opentelemetry.trace import SpanKind, Tracer
from sqlalchemy import Table, bindparam, event, exc
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import SessionTransaction
from sqlalchemy.sql import Executable, Select
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.util import await_
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from service.core.greenlets import run_in_greenlet

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class Statement:
    """SQL with `$n` placeholders and the bind-parameter name each one takes.

    `plain_read`: a SELECT that takes no lock. In a write session it does not begin the
    transaction: under READ COMMITTED (the service's isolation) a statement sees the same rows
    inside a transaction as outside one, so a lookup before the first write (CurrentUser's)
    spends no round trip on BEGIN earlier than needed.
    """

    sql: str
    params: tuple[str, ...]
    plain_read: bool = False

    def values(self, given: Mapping[str, Any]) -> tuple[Any, ...]:
        missing = set(self.params) - given.keys()
        if missing:
            raise TypeError(f"statement needs {sorted(missing)}")
        return tuple(given[name] for name in self.params)

    @property
    def verb(self) -> str:
        """The first keyword (SELECT, INSERT...): what a span is named after."""
        return self.sql.split(None, 1)[0].upper()


_LOCKING_CLAUSE = re.compile(r"\bFOR (?:NO KEY |KEY )?(?:UPDATE|SHARE)\b")


def compile_statement(statement: Executable, *, plain_read: bool = False) -> Statement:
    """Compile once, at import. Every value must be a named `bindparam` (a literal would be a
    parameter with a generated name the caller cannot pass). `plain_read` (see Statement) is
    refused for anything but a SELECT without a locking clause; a SELECT that calls a function
    with effects (an advisory transaction lock) must not be declared one."""
    compiled = statement.compile(dialect=_DIALECT)  # type: ignore[attr-defined]
    sql: str = compiled.string
    if plain_read and (not isinstance(statement, Select) or _LOCKING_CLAUSE.search(sql)):
        raise ValueError(f"not a plain read: {sql}")
    return Statement(sql=sql, params=tuple(compiled.positiontup or ()), plain_read=plain_read)


def row_columns(table: Table, row_type: type[DataclassInstance]) -> tuple[ColumnElement[Any], ...]:
    """The table's columns the dataclass `row_type` has fields for, in its order: a SELECT of
    these returns rows that `row_type(**row)` takes."""
    return tuple(table.c[field.name] for field in fields(row_type))


def bound_columns(table: Table, *columns: str) -> dict[str, BindParameter[Any]]:
    """`{column: bindparam(column)}` for `insert(table).values(...)`, each typed as its column:
    an INSERT whose values are named after the columns they fill."""
    return {name: bindparam(name, type_=table.c[name].type) for name in columns}


# -- tracing -------------------------------------------------------------------------------------
# One tracer for the process, set while core/telemetry.py instruments the engine (as SQLAlchemy's
# instrumentor, whose uninstrument() is process-wide too). None: tracing costs one comparison.
_tracer: Tracer | None = None


def trace_statements(tracer: Tracer | None) -> None:
    global _tracer
    _tracer = tracer


# -- the driver connection of a session -------------------------------------------------------
# The session.info key core/db.py sets on autocommit (ReadSession) sessions. Such a session's
# statements each borrow a pooled connection for themselves and give it back at once, unless the
# session already holds one (the ORM ran first: then they use that one, so a request never holds
# two). Autocommit keeps no state between statements, so nothing is lost; what is saved is the
# Session's transaction and Connection around the checkout (measured: a session's checkout and
# close cost ~115 us of CPU, the pool's own checkout and return ~27 us).
LENT_PER_STATEMENT = "keelson.lent_per_statement"
# The session.info key core/db.py sets on transactional (WriteSession) sessions. The first
# statement of such a session, when the ORM has not begun anything, takes a pooled connection
# and begins the transaction on it through the adapter (`_Owned`); the ORM joins that connection
# if it is used later (`StatementsSession`). A write of statements alone so never makes a
# Session transaction, Connection or ORM commit (measured: ~60 us of CPU per POST /items/).
OWNS_CONNECTION = "keelson.owns_connection"
_HELD = "keelson.statements"  # the session.info key of its _Held
_OWNED = "keelson.owned"  # the session.info key of its _Owned
_COMMIT = Statement(sql="COMMIT", params=())


@dataclass(slots=True)
class _Held:
    """A session's connection at each level, valid while its root transaction lasts (after a
    commit, rollback or close the session may run on another pooled connection)."""

    transaction: SessionTransaction
    connection: AsyncConnection
    adapter: Any  # SQLAlchemy's AsyncAdapt_asyncpg_connection
    driver: asyncpg.Connection
    span_attributes: dict[str, str]
    invalidated: bool = False

    @property
    def dbapi(self) -> Any:
        return self.connection.dialect.loaded_dbapi

    @property
    def begins(self) -> bool:
        return True

    async def invalidate(self, error: BaseException, *, whole_pool: bool) -> None:
        """The pool never lends this connection again; with whole_pool, neither any connection
        made before it (a disconnect usually means the server restarted: they are all dead)."""
        self.invalidated = True
        connection = self.connection
        if connection.invalidated or connection.sync_connection is None:
            return
        if whole_pool:
            connection.sync_engine.pool._invalidate(
                connection.sync_connection.connection, error, False
            )
        await connection.invalidate(error)


@dataclass(slots=True)
class _Lent:
    """A pooled connection lent for one autocommit statement, straight from the pool: no
    Session transaction, no Connection object around it (see `LENT_PER_STATEMENT`)."""

    pooled: Any  # SQLAlchemy's PoolProxiedConnection
    engine: Engine
    driver: asyncpg.Connection
    adapter: Any
    invalidated: bool = False

    @property
    def dbapi(self) -> Any:
        return self.engine.dialect.loaded_dbapi

    @property
    def begins(self) -> bool:
        return False  # autocommit: the statement is its own transaction

    @property
    def span_attributes(self) -> dict[str, str]:
        return {"db.system": "postgresql", "db.name": self.engine.url.database or ""}

    async def invalidate(self, error: BaseException, *, whole_pool: bool) -> None:
        if self.invalidated:
            return
        self.invalidated = True
        if whole_pool:
            self.engine.pool._invalidate(self.pooled, error, False)
        await run_in_greenlet(self.pooled.invalidate, error)


@dataclass(slots=True)
class _Owned(_Lent):
    """A write session's connection, taken by its first statement and held until the session
    ends: the transaction is the adapter's (begun by `_run`), committed by `end` or by the ORM
    once it joined (`orm`)."""

    orm: Connection | None = None
    # A standalone statement ran (see execute_standalone): it was the session's whole write.
    finished_by: Statement | None = None

    @property
    def begins(self) -> bool:
        return True

    def check_open(self) -> None:
        if self.finished_by is not None:
            raise RuntimeError(
                f"{self.finished_by.sql!r} ran as this session's whole write (its own"
                " transaction): nothing may follow it; use execute() for a statement that is"
                " one of several"
            )

    def orm_connection(self) -> Connection:
        """The SQLAlchemy Connection the ORM runs on: this pooled connection, so the ORM's
        statements share the transaction (its commit is the adapter's, which ends it)."""
        if self.orm is None:
            self.orm = Connection(self.engine, connection=self.pooled)
        return self.orm

    async def end(self, *, commit: bool) -> None:
        """Commit (a failing COMMIT raises as a DBAPIError) or roll back, then give the
        connection back to the pool (whose reset on return rolls back what is left): one
        greenlet for both."""
        await run_in_greenlet(self.finish, commit)

    def finish(self, commit: bool) -> None:
        """`end`, from a greenlet (the ORM session's own commit and close)."""
        try:
            # No transaction to commit after a standalone statement (it was its own).
            if commit and not self.invalidated and self.adapter._transaction is not None:
                try:
                    self.adapter.commit()  # DB-API commit: the adapter's
                except Exception as error:
                    translated, cause = await_(_on_error(self, _COMMIT, error))
                    if translated is None:
                        raise
                    raise translated from cause
        finally:
            self._give_back()

    def _give_back(self) -> None:
        if self.orm is not None:
            self.orm.close()  # closes the pooled connection it was made with
        else:
            self.pooled.close()


class StatementsSession(Session):
    """The ORM session of core/db.py's sessions: it runs on the connection a write's statements
    took (`_Owned`), and its commit, rollback and close end that connection's transaction too,
    so a session is ended the same way whichever kind of statement came first."""

    def get_bind(self, mapper: Any = None, **kw: Any) -> Engine | Connection:
        owned: _Owned | None = self.info.get(_OWNED)
        if owned is not None:
            owned.check_open()
            return owned.orm_connection()
        return super().get_bind(mapper, **kw)

    def commit(self) -> None:
        super().commit()  # flushes; when the ORM joined, its commit was the adapter's
        self._end_owned(commit=True)

    def rollback(self) -> None:
        super().rollback()
        self._end_owned(commit=False)

    def close(self) -> None:
        super().close()
        self._end_owned(commit=False)

    def reset(self) -> None:
        super().reset()
        self._end_owned(commit=False)

    def invalidate(self) -> None:
        owned: _Owned | None = self.info.get(_OWNED)
        if owned is not None and owned.orm is None:
            await_(owned.invalidate(RuntimeError("session invalidated"), whole_pool=False))
        super().invalidate()
        self._end_owned(commit=False)

    def _end_owned(self, *, commit: bool) -> None:
        owned: _Owned | None = self.info.pop(_OWNED, None)
        if owned is not None:
            owned.finish(commit)


@event.listens_for(StatementsSession, "after_transaction_end")
def _give_back_after_the_orm(session: Session, transaction: SessionTransaction) -> None:
    """Once the ORM joined the statements' connection, its transaction's end is the
    connection's (commit, rollback, close, or a `session.begin()` block): the session holds a
    connection only while a transaction lasts, as SQLAlchemy's sessions do."""
    if transaction.parent is not None:  # a SAVEPOINT ended: the transaction goes on
        return
    owned: _Owned | None = session.info.get(_OWNED)
    if owned is not None and owned.orm is not None:
        del session.info[_OWNED]
        owned.orm.close()


def orm_began(session: AsyncSession) -> bool:
    """Whether the ORM has anything of its own to end: a transaction, or objects."""
    return session.in_transaction() or bool(
        session.identity_map or session.new or session.dirty or session.deleted
    )


async def end_statements(session: AsyncSession, *, commit: bool) -> None:
    """Commit or roll back what a write session's statements did on their own connection and
    give it back (nothing when they took none)."""
    owned: _Owned | None = session.sync_session.info.pop(_OWNED, None)
    if owned is not None:
        await owned.end(commit=commit)


def _checkout(engine: Engine) -> Any:
    """A connection from the pool; a failure to connect raises as SQLAlchemy's DBAPIError (as
    Engine.connect would), so core/db_errors.py answers it (503 while the server shuts down or
    refuses more connections), never the adapter's own error as a 500.

    The pool's checkout and return are synchronous SQLAlchemy code that may wait (a full pool,
    a reconnect): call it in a greenlet, as everywhere in SQLAlchemy's asyncio API."""
    dialect = engine.dialect
    try:
        return engine.pool.connect()
    except dialect.loaded_dbapi.Error as error:
        raise exc.DBAPIError.instance(
            None,
            None,
            error,
            dialect.loaded_dbapi.Error,
            hide_parameters=True,
            connection_invalidated=dialect.is_disconnect(error, None, None),
            dialect=dialect,
        ) from error


async def _own(session: AsyncSession, engine: Engine) -> _Owned:
    pooled = await run_in_greenlet(_checkout, engine)
    owned = _Owned(
        pooled=pooled,
        engine=engine,
        driver=pooled.driver_connection,
        adapter=pooled.dbapi_connection,
    )
    session.sync_session.info[_OWNED] = owned
    return owned


async def _held(session: AsyncSession) -> _Held:
    sync = session.sync_session
    held: _Held | None = sync.info.get(_HELD)
    if held is not None and held.transaction is sync.get_transaction() and not held.invalidated:
        return held
    connection = await session.connection()
    transaction = sync.get_transaction()
    assert transaction is not None  # connection() began it
    raw = connection.sync_connection
    # .connection needs a greenlet only to revalidate an invalidated connection (which raises
    # inside a transaction anyway).
    if raw is not None and not raw.invalidated:
        proxied = raw.connection
    else:
        proxied = await connection.get_raw_connection()
    url = connection.engine.url
    held = _Held(
        transaction=transaction,
        connection=connection,
        adapter=proxied.dbapi_connection,
        driver=proxied.driver_connection,
        span_attributes={"db.system": "postgresql", "db.name": url.database or ""},
    )
    sync.info[_HELD] = held
    return held


# -- running statements ----------------------------------------------------------------------


async def fetch(session: AsyncSession, statement: Statement, **values: Any) -> list[asyncpg.Record]:
    """Every row the statement returns."""
    rows: list[asyncpg.Record] = await _on_driver(session, statement, values, "fetch")
    return rows


async def fetch_one(
    session: AsyncSession, statement: Statement, **values: Any
) -> asyncpg.Record | None:
    """The statement's first row, or None when it returns none."""
    row: asyncpg.Record | None = await _on_driver(session, statement, values, "fetchrow")
    return row


async def execute(session: AsyncSession, statement: Statement, **values: Any) -> str:
    """Run a statement for its effect; PostgreSQL's command tag ("DELETE 1")."""
    tag: str = await _on_driver(session, statement, values, "execute")
    return tag


def rows_affected(tag: str) -> int:
    """The row count of a command tag `execute` returned ("UPDATE 3" -> 3, "INSERT 0 1" -> 1)."""
    return int(tag.rsplit(" ", 1)[1])


async def execute_standalone(session: AsyncSession, statement: Statement, **values: Any) -> str:
    """`execute` for a statement that is a whole write by itself (one INSERT).

    In a write session that has begun no transaction it runs as its own, on the session's
    connection: one round trip instead of three (BEGIN, the statement, COMMIT), committed when
    it returns. The session then refuses any further statement, ORM or named, with a
    RuntimeError, so what was meant to be one transaction is never split in two. Inside a
    transaction (an earlier write, the ORM, the tests' savepoint) it is one statement of it,
    committed with the rest.
    """
    tag: str = await _on_driver(session, statement, values, "execute", standalone=True)
    return tag


async def _on_driver(
    session: AsyncSession,
    statement: Statement,
    values: Mapping[str, Any],
    method: str,
    *,
    standalone: bool = False,
) -> Any:
    """asyncpg's `method` (fetch, fetchrow, execute) with the statement and its values."""
    args = statement.values(values)
    sync = session.sync_session
    info = sync.info
    owned: _Owned | None = info.get(_OWNED)
    held: _Held | _Owned
    if owned is not None:
        owned.check_open()
        held = owned
        if owned.orm is None and sync.get_transaction() is not None:
            # The ORM began a transaction since (session.begin()): it takes the connection
            # over, so its commit is the one that ends what these statements did.
            await session.connection()
    elif sync.get_transaction() is None and (
        info.get(LENT_PER_STATEMENT) or info.get(OWNS_CONNECTION)
    ):
        bind = sync.get_bind()
        if not isinstance(bind, Engine):  # never, for the sessions core/db.py marks
            held = await _held(session)
        elif info.get(LENT_PER_STATEMENT):
            return await _on_lent_connection(bind, statement, args, method)
        else:
            held = await _own(session, bind)
    else:
        held = await _held(session)
    begin = not statement.plain_read
    if (
        standalone
        and isinstance(held, _Owned)
        and held.orm is None
        and held.adapter._transaction is None
    ):
        begin = False
        held.finished_by = statement
    if _tracer is None:
        return await _run(held, statement, getattr(held.driver, method), args, begin=begin)
    with _span(_tracer, held, statement):
        return await _run(held, statement, getattr(held.driver, method), args, begin=begin)


async def _on_lent_connection(
    engine: Engine, statement: Statement, args: tuple[Any, ...], method: str
) -> Any:
    """One autocommit statement on a connection lent by the pool and given back right after.

    Checkout, statement and return run in one greenlet: a greenlet for the checkout and another
    for the return cost ~35 us a statement, one for both ~17 us (waiting on the statement from
    inside it is a switch to the event loop's task and back), one reused greenlet
    (core/greenlets.py) ~5 us more than a plain await of the driver."""
    return await run_in_greenlet(_lent_statement, engine, statement, args, method)


def _lent_statement(
    engine: Engine, statement: Statement, args: tuple[Any, ...], method: str
) -> Any:
    pooled = _checkout(engine)
    try:
        lent = _Lent(
            pooled=pooled,
            engine=engine,
            driver=pooled.driver_connection,
            adapter=pooled.dbapi_connection,
        )
        call = getattr(lent.driver, method)
        if _tracer is None:
            return await_(_run(lent, statement, call, args))
        with _span(_tracer, lent, statement):
            return await_(_run(lent, statement, call, args))
    finally:
        pooled.close()


def _span(tracer: Tracer, held: _Held | _Lent, statement: Statement) -> Any:
    # Named and described as SQLAlchemy's instrumentation did ("SELECT keelson"), never with a
    # parameter value.
    attributes = {**held.span_attributes, "db.statement": statement.sql}
    return tracer.start_as_current_span(
        f"{statement.verb} {held.span_attributes['db.name']}".rstrip(),
        kind=SpanKind.CLIENT,
        attributes=attributes,
    )


async def _run(
    held: _Held | _Lent,
    statement: Statement,
    call: Any,
    args: tuple[Any, ...],
    *,
    begin: bool = True,
) -> Any:
    # The adapter's cursor also takes its _execute_mutex; not needed here: a session serves one
    # task at a time (SQLAlchemy refuses concurrent use of an AsyncSession) and asyncpg refuses
    # an overlapping operation itself ("another operation is in progress").
    adapter = held.adapter
    try:
        if begin and held.begins and adapter._transaction is None and not adapter.autocommit:
            await adapter._start_transaction()  # BEGIN, owned by the adapter: see the docstring
        return await call(statement.sql, *args)
    except Exception as error:
        translated, cause = await _on_error(held, statement, error)
        if translated is None:
            raise
        raise translated from cause
    except BaseException as error:  # cancelled mid-statement: the connection's state is unknown
        await held.invalidate(error, whole_pool=False)
        raise


# asyncpg's message for an argument it could not encode names it, then quotes its value (a
# DataError, SQLSTATE 22000, for a value of the wrong type; an InterfaceError "query argument $1:
# ..." when a codec's own check refused it).
_ARGUMENT = re.compile(r"(?:invalid input for )?query argument (\$\d+)")

# SQLSTATE class -> the SQLAlchemy error SQLAlchemy's own translation would raise for it.
_ERROR_CLASSES: dict[str, type[exc.DBAPIError]] = {
    "08": exc.OperationalError,  # connection exception
    "22": exc.DataError,
    "23": exc.IntegrityError,
    "42": exc.ProgrammingError,
    "53": exc.OperationalError,  # insufficient resources
    "57": exc.OperationalError,  # operator intervention, query_canceled (statement_timeout)
    "XX": exc.InternalError,
}


async def _on_error(
    held: _Held | _Lent, statement: Statement, error: Exception
) -> tuple[exc.DBAPIError | None, Exception | None]:
    """The DBAPIError to raise for a driver error, and its cause (None: re-raise the error as
    it is). Parameters are never attached (hide_parameters): they can hold password hashes or a
    client's values."""
    disconnected = held.driver.is_closed()
    if disconnected:
        await held.invalidate(error, whole_pool=True)
    elif isinstance(error, TimeoutError):  # an interrupted statement, as SQLAlchemy sees it
        await held.invalidate(error, whole_pool=False)
    # The adapter's own errors (from a BEGIN it sent) carry the driver's SQLSTATE too.
    adapter_errors = held.dbapi
    error_class: type[exc.DBAPIError]
    client_errors = (
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        adapter_errors.InterfaceError,
    )
    if isinstance(error, client_errors):
        error_class = exc.InterfaceError
    elif isinstance(error, (asyncpg.PostgresError, adapter_errors.Error)):
        sqlstate = str(getattr(error, "sqlstate", None) or "")
        error_class = _ERROR_CLASSES.get(sqlstate[:2], exc.DBAPIError)
    else:
        return None, None  # OSError and the like: core/db_errors.py maps them as raised
    orig: Exception = error
    argument = _ARGUMENT.match(str(error.args[0]) if error.args else "")
    if argument is not None:  # asyncpg quotes the value it could not encode: hide it
        orig = type(error)(f"invalid input for query argument {argument[1]} (value hidden)")
    translated = error_class(
        statement.sql, None, orig, hide_parameters=True, connection_invalidated=disconnected
    )
    return translated, (error if orig is error else None)
