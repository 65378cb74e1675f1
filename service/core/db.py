"""The database: one AsyncEngine per process, its read and write sessions, and the one commit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from service.core import metrics
from service.core.config import Settings
from service.core.errors import DomainError
from service.core.pool import pool_class
from service.core.statements import (
    LENT_PER_STATEMENT,
    OWNS_CONNECTION,
    StatementsSession,
    end_statements,
    orm_began,
)

# A connection back in the pool for less than this is lent without a ping. Under load connections
# come back within milliseconds, and a ping is three round trips (BEGIN; SELECT; ROLLBACK) on
# asyncpg: pinging every checkout doubled the statements of GET /users/me. A connection that dies
# while "fresh" (the server restarted this very second) fails one request with a retryable 503, and
# that disconnect invalidates the whole pool, so the next requests reconnect.
PING_IF_IDLE_FOR_S = 1.0


def driver_connect_args(settings: Settings) -> dict[str, Any]:
    """asyncpg's connect arguments for this deployment: direct to PostgreSQL, or behind PgBouncer.

    Direct, the session timeouts travel as startup parameters: free, and set before any query.
    Behind a transaction-mode pooler (DB_POOLER=pgbouncer) they cannot: PgBouncer refuses unknown
    startup parameters ("unsupported startup parameter: statement_timeout") and a server
    connection serves many clients anyway. There `keelson migrate` stores them as the role's
    defaults (ALTER ROLE ... IN DATABASE ... SET), which every server connection PgBouncer opens
    picks up; see service/core/migrations.py.

    Behind the pooler both statement caches are off. asyncpg then prepares every statement as the
    unnamed statement and sends its Parse again in the same message batch as Bind/Execute/Sync, so
    each statement is complete on whatever server connection PgBouncer picked, inside a
    transaction or not. Unique statement names (SQLAlchemy's prepared_statement_name_func) are
    not enough: an autocommit read prepares in one round trip and executes in the next, and
    measured through PgBouncer 1.18 (server pool of 2, 10 clients, 500 connections each running
    two autocommit statements), 291 of 500 failed with "prepared statement ... does not exist";
    with unnamed statements none did, in autocommit or in transactions.
    """
    server_settings = {"application_name": "keelson"}
    args: dict[str, Any] = {"timeout": settings.db_connect_timeout_s}
    if settings.db_pooler == "pgbouncer":
        args["statement_cache_size"] = 0  # asyncpg's own cache of named statements
        args["prepared_statement_cache_size"] = 0  # SQLAlchemy's, on top of it
    else:
        server_settings.update(session_timeouts(settings))
    args["server_settings"] = server_settings
    return args


def session_timeouts(settings: Settings) -> dict[str, str]:
    """The per-session limits every database connection of the service runs under (ms)."""
    return {
        "statement_timeout": str(settings.db_statement_timeout_ms),
        "idle_in_transaction_session_timeout": str(
            max(settings.db_statement_timeout_ms * 2, 10_000)
        ),
    }


def build_engine(settings: Settings) -> AsyncEngine:
    """Pool and timeouts come from Settings so operators size them against the DB's budget."""
    pool = pool_class(
        ping_if_idle_for_s=PING_IF_IDLE_FOR_S if settings.db_pool_pre_ping else None,
        keep_overflow_idle_s=settings.db_pool_overflow_idle_s,
    )
    engine = create_async_engine(
        settings.sqlalchemy_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        pool_recycle=settings.db_pool_recycle_s,
        pool_pre_ping=False,  # see poolclass
        # Waiting requests are served in arrival order; idle connections are pinged before use;
        # a burst's extra connections are kept while they are needed (core/pool.py).
        poolclass=pool,
        # Errors must not carry statement parameters into logs: they can hold password hashes.
        hide_parameters=True,
        connect_args=driver_connect_args(settings),
    )
    # A pool event, so it follows the pool through engine.dispose(); fires once per new
    # connection, never per checkout.
    event.listen(engine.sync_engine, "connect", _count_opened_connection)
    return engine


def _count_opened_connection(dbapi_connection: Any, record: Any) -> None:
    metrics.DB_CONNECTIONS_OPENED.inc()


@dataclass(slots=True)
class Database:
    """`sessionmaker` opens transactional sessions (writes), `read_sessionmaker` autocommit ones
    (reads: no BEGIN/COMMIT, one statement is one round trip). Without a read factory (the
    tests' savepoint harness, which runs everything in one outer transaction) reads use the
    transactional one."""

    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    read_sessionmaker: async_sessionmaker[AsyncSession] | None = field(default=None)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        engine = build_engine(settings)
        return cls(
            engine=engine,
            # core/statements.py: a write's first statement takes the session's connection
            sessionmaker=session_factory(engine, info={OWNS_CONNECTION: True}),
            read_sessionmaker=session_factory(
                engine.execution_options(isolation_level="AUTOCOMMIT"),
                # core/statements.py: its statements borrow a pooled connection each
                info={LENT_PER_STATEMENT: True},
            ),
        )

    def sessions(self, *, writes: bool) -> async_sessionmaker[AsyncSession]:
        if not writes and self.read_sessionmaker is not None:
            return self.read_sessionmaker
        return self.sessionmaker

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One transaction, committed when the block ends (before anything after it runs),
        rolled back when it raises, unless the error `keeps_writes` (see `end_session`)."""
        session = self.sessionmaker()
        try:
            yield session
        except BaseException as error:
            await end_session(session, writes=True, error=error)
            raise
        await end_session(session, writes=True)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """An autocommit session: each statement commits itself; the block writes nothing."""
        session = self.sessions(writes=False)()
        try:
            yield session
        finally:
            await end_session(session, writes=False)

    async def dispose(self) -> None:
        await self.engine.dispose()


def session_factory(
    engine: AsyncEngine, info: dict[str, Any] | None = None
) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects stay readable after commit, so responses never lazy-load.
    return async_sessionmaker(
        engine,
        class_=AsyncSession,
        sync_session_class=StatementsSession,
        expire_on_commit=False,
        info=info,
    )


async def end_session(
    session: AsyncSession, *, writes: bool, error: BaseException | None = None
) -> None:
    """The one place a session's writes are committed, then its connection given back.

    Committed when the work returned, or raised a DomainError that records something the answer
    reports (`keeps_writes`: a throttle count, a revoked token family); otherwise rolled back.
    A failing commit raises, so a client gets its error, never a 2xx for a write not stored.

    A session the ORM never used (a read's statements, or a write of statements alone) is ended
    without the ORM: closing an unused session still costs ~20 us (measured).
    """
    keep = writes and (error is None or keeps_writes(error))
    if not orm_began(session):
        await end_statements(session, commit=keep)
        return
    try:
        if keep and session.in_transaction():
            await session.commit()  # also the statements' own connection (StatementsSession)
    finally:
        await session.close()  # rolls back whatever was not committed


def keeps_writes(error: BaseException) -> bool:
    return isinstance(error, DomainError) and error.keeps_writes
