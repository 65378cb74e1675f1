"""The database: one AsyncEngine and session factory per process, and the per-request session."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.responses import Response

from service.core.config import Settings
from service.core.pool import HandOffQueuePool, pinging_pool

# A connection back in the pool for less than this is lent without a ping. Under load connections
# come back within milliseconds, and a ping is three round trips (BEGIN; SELECT; ROLLBACK) on
# asyncpg: pinging every checkout doubled the statements of GET /users/me. A connection that dies
# while "fresh" (the server restarted this very second) fails one request with a retryable 503, and
# that disconnect invalidates the whole pool, so the next requests reconnect.
PING_IF_IDLE_FOR_S = 1.0

# Methods whose requests only read: their session runs in autocommit, so a one-statement read is
# one round trip instead of BEGIN + statement + COMMIT.
READ_ONLY_METHODS = frozenset({"GET", "HEAD"})


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
    pool_class = pinging_pool(PING_IF_IDLE_FOR_S) if settings.db_pool_pre_ping else HandOffQueuePool
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        pool_recycle=settings.db_pool_recycle_s,
        pool_pre_ping=False,  # see poolclass
        # Waiting requests are served in arrival order; idle connections are pinged before use.
        poolclass=pool_class,
        # Errors must not carry statement parameters into logs: they can hold password hashes.
        hide_parameters=True,
        connect_args=driver_connect_args(settings),
    )


@dataclass(slots=True)
class Database:
    """`sessionmaker` serves requests that may write; `read_sessionmaker` those that only read
    (autocommit). Tests pass one savepoint-bound factory for both."""

    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    read_sessionmaker: async_sessionmaker[AsyncSession] | None = field(default=None)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        engine = build_engine(settings)
        return cls(
            engine=engine,
            sessionmaker=session_factory(engine),
            read_sessionmaker=session_factory(
                engine.execution_options(isolation_level="AUTOCOMMIT")
            ),
        )

    def sessions(self, *, autocommit: bool) -> async_sessionmaker[AsyncSession]:
        if autocommit and self.read_sessionmaker is not None:
            return self.read_sessionmaker
        return self.sessionmaker

    async def dispose(self) -> None:
        await self.engine.dispose()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects stay readable after commit, so responses never lazy-load.
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


class RequestSession:
    """The request's session: opened on first use, ended by SessionRoute once the endpoint
    returns, before the answer is sent.

    This replaces a `yield` dependency with scope="function": FastAPI's machinery for those
    cost ~110 us per request, more than the whole rest of dependency solving.
    """

    __slots__ = ("_autocommit", "_factory", "session")

    def __init__(self, database: Database, *, autocommit: bool) -> None:
        self._factory = database.sessions(autocommit=autocommit)
        # Without an autocommit factory (tests' savepoint sessions) the session is transactional.
        self._autocommit = autocommit and database.read_sessionmaker is not None
        self.session: AsyncSession | None = None

    def get(self) -> AsyncSession:
        if self.session is None:
            self.session = self._factory()
        return self.session

    async def finish(self) -> None:
        """Commit what the endpoint wrote (in autocommit each statement committed itself), then
        give the connection back. A failing commit raises: the client gets its error, never a
        2xx for a write that was not stored."""
        session = self.session
        if session is None:
            return
        try:
            if not self._autocommit and session.in_transaction():
                await session.commit()
        finally:
            await session.close()

    async def abandon(self) -> None:
        if self.session is not None:
            await self.session.close()  # rolls back whatever was not committed


class SessionRoute(APIRoute):
    """One session per request, committed when the endpoint returns, rolled back if it raises.

    The commit happens inside the route handler, so before the response is sent: a client never
    sees a 2xx for a write that then fails to commit. GET and HEAD run in autocommit: no
    BEGIN/COMMIT round trips for reads (a read spanning two statements sees two snapshots).
    """

    def autocommit(self, request: Request) -> bool:
        """Whether this request's statements may each commit on their own."""
        return request.method in READ_ONLY_METHODS

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_session(request: Request) -> Response:
            holder = RequestSession(request.app.state.db, autocommit=self.autocommit(request))
            request.state.db_session = holder
            try:
                response = await handler(request)
            except BaseException:
                await holder.abandon()
                raise
            await holder.finish()
            return response

        return with_session


async def _request_session(request: Request) -> AsyncSession:
    holder: RequestSession | None = getattr(request.state, "db_session", None)
    if holder is None:
        raise RuntimeError("SessionDep is only available on routes whose class is a SessionRoute")
    return holder.get()


SessionDep = Annotated[AsyncSession, Depends(_request_session)]
