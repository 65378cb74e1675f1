"""The database: one AsyncEngine and session factory per process, and the per-request session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from service.core.config import Settings


def build_engine(settings: Settings) -> AsyncEngine:
    """Pool and timeouts come from Settings so operators size them against the DB's budget."""
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        pool_recycle=settings.db_pool_recycle_s,
        pool_pre_ping=settings.db_pool_pre_ping,
        # Errors must not carry statement parameters into logs: they can hold password hashes.
        hide_parameters=True,
        connect_args={
            "timeout": settings.db_connect_timeout_s,
            "server_settings": {
                "application_name": "keelson",
                "statement_timeout": str(settings.db_statement_timeout_ms),
                "idle_in_transaction_session_timeout": str(
                    max(settings.db_statement_timeout_ms * 2, 10_000)
                ),
            },
        },
    )


@dataclass(slots=True)
class Database:
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        engine = build_engine(settings)
        return cls(engine=engine, sessionmaker=session_factory(engine))

    async def dispose(self) -> None:
        await self.engine.dispose()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects stay readable after commit, so responses never lazy-load.
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def _request_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request: committed when the endpoint returns, rolled back if it raises.

    Used with scope="function" so the commit happens before the response is sent: a client never
    sees a 2xx for a write that then fails to commit.
    """
    database: Database = request.app.state.db
    async with database.sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        if session.in_transaction():
            await session.commit()


SessionDep = Annotated[AsyncSession, Depends(_request_session, scope="function")]
