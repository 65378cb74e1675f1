"""Named statements: SQLAlchemy Core built from the tables, compiled once to asyncpg's SQL.

The request path's queries are written against the SQLModel tables (so a renamed column breaks
them at import, not in production) and compiled when their module is imported: compiling a Core
statement per request cost more than PostgreSQL's work for the query (GET /items/, POST /items/).
They run as plain driver SQL on the session's connection, so the session's transaction, the
pool and SQLAlchemy's translation of driver errors (core/db_errors.py) stay what they are, and
they are unnamed statements, which a transaction-mode pooler with asyncpg's statement cache off
(DB_POOLER=pgbouncer) accepts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.sql import Executable
from sqlmodel.ext.asyncio.session import AsyncSession

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class Statement:
    """SQL with `$n` placeholders and the bind-parameter name each one takes."""

    sql: str
    params: tuple[str, ...]

    def values(self, given: Mapping[str, Any]) -> tuple[Any, ...]:
        missing = set(self.params) - given.keys()
        if missing:
            raise TypeError(f"statement needs {sorted(missing)}")
        return tuple(given[name] for name in self.params)


def compile_statement(statement: Executable) -> Statement:
    """Compile once, at import. Every value must be a named `bindparam` (a literal would be a
    parameter with a generated name the caller cannot pass)."""
    compiled = statement.compile(dialect=_DIALECT)  # type: ignore[attr-defined]
    return Statement(sql=compiled.string, params=tuple(compiled.positiontup or ()))


async def fetch(
    session: AsyncSession, statement: Statement, **values: Any
) -> Sequence[Sequence[Any]]:
    """Every row the statement returns (none for a write without RETURNING)."""
    connection = await session.connection()
    result = await connection.exec_driver_sql(statement.sql, statement.values(values))
    if not result.returns_rows:
        return []
    rows: Sequence[Sequence[Any]] = result.all()
    return rows
