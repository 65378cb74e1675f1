"""Queries on the items table, in SQLAlchemy Core on the session's connection.

Rows come back as plain `ItemRow` dicts of exactly what the API shows: no ORM objects to build,
track and validate again on the hot paths.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from service.items.models import ALL_ITEMS_SCOPE, Item, ItemCounter, ItemRow

items: Table = Item.metadata.tables["items"]
item_counters: Table = ItemCounter.metadata.tables["item_counters"]
_COLUMNS = (items.c.id, items.c.title, items.c.description, items.c.owner_id, items.c.created_at)
_KEYS = tuple(column.key for column in _COLUMNS)


async def _connection(session: AsyncSession) -> AsyncConnection:
    """The session's connection, in the session's transaction."""
    return await session.connection()


def _row(row: Any) -> ItemRow:
    return cast(ItemRow, dict(zip(_KEYS, row, strict=True)))


async def get_item(session: AsyncSession, item_id: uuid.UUID) -> ItemRow | None:
    connection = await _connection(session)
    row = (await connection.execute(select(*_COLUMNS).where(items.c.id == item_id))).first()
    return None if row is None else _row(row)


async def get_item_for_update(session: AsyncSession, item_id: uuid.UUID) -> ItemRow | None:
    """The item with its row locked (FOR UPDATE) until the transaction ends."""
    query = select(*_COLUMNS).where(items.c.id == item_id).with_for_update()
    row = (await (await _connection(session)).execute(query)).first()
    return None if row is None else _row(row)


@dataclass(frozen=True, slots=True)
class ListedPage:
    """A page as the list answer shows it: ids already text (JSON-ready without a per-value
    conversion), and the scope's total count from the same round trip."""

    rows: list[dict[str, Any]]
    total: int


# The scope's count rides along as an InitPlan (evaluated once): page and count in one round trip.
# _LISTING_HEAD spells out the _TOTAL subquery rather than formatting it in, so the statement stays
# one literal; tests/items/test_cursor.py checks that the two agree.
_TOTAL = "SELECT coalesce(sum(n), 0)::bigint FROM item_counters WHERE scope = $1"
_LISTING_HEAD = (
    "SELECT (SELECT coalesce(sum(n), 0)::bigint FROM item_counters WHERE scope = $1),"
    " id::text, title, description, owner_id::text, created_at FROM items"
)


@cache
def _listing_sql(*, by_owner: bool, after: bool, skip: bool) -> str:
    """The page and the count in one statement, one round trip. Plain SQL for the driver: this
    runs on every GET /items/, and compiling a Core statement cost more than the query.

    The page is one range of ix_items_owner_id_created_at_id (ix_items_created_at_id for a
    superuser): the row comparison (created_at, id) < ($c, $i) costs the same at any depth,
    without a sort. An empty page carries no count: list_page then asks for it alone.
    $1 counter scope, $2 limit, then the owner, the keyset position and the offset when used.
    """
    params = iter(range(3, 9))
    where: list[str] = []
    if by_owner:
        where.append(f"owner_id = ${next(params)}")
    if after:
        where.append(f"(created_at, id) < (${next(params)}, ${next(params)})")
    offset = f" OFFSET ${next(params)}" if skip else ""
    filters = f" WHERE {' AND '.join(where)}" if where else ""
    # Fixed fragments and $n placeholders only: every value is bound by the driver.
    # Qualified: a bare "id" would be the text output column, and sort as text without the index.
    order = " ORDER BY items.created_at DESC, items.id DESC LIMIT $2"
    return f"{_LISTING_HEAD}{filters}{order}{offset}"


async def list_page(
    session: AsyncSession,
    *,
    owner_id: uuid.UUID | None,
    after: tuple[datetime, uuid.UUID] | None,
    skip: int,
    limit: int,
) -> ListedPage:
    """Up to `limit` items newest first (after the keyset position `after`, or from offset
    `skip`) and the count of every item in scope, O(1) from the counters."""
    sql = _listing_sql(by_owner=owner_id is not None, after=after is not None, skip=skip > 0)
    scope = ALL_ITEMS_SCOPE if owner_id is None else owner_id
    params: list[Any] = [scope, limit]
    if owner_id is not None:
        params.append(owner_id)
    if after is not None:
        params.extend(after)
    if skip:
        params.append(skip)
    result = await (await _connection(session)).exec_driver_sql(sql, tuple(params))
    fetched: Sequence[Sequence[Any]] = result.all()
    if not fetched:  # past the end (or nothing yet): the count alone
        total = await (await _connection(session)).exec_driver_sql(_TOTAL, (scope,))
        return ListedPage(rows=[], total=int(total.scalar_one()))
    rows = [
        {
            "id": row[1],
            "title": row[2],
            "description": row[3],
            "owner_id": row[4],
            "created_at": row[5],
        }
        for row in fetched
    ]
    return ListedPage(rows=rows, total=int(fetched[0][0]))


# Plain SQL: building and compiling a Core INSERT per request cost more than PostgreSQL's work.
_INSERT = (
    "INSERT INTO items (id, title, description, owner_id, created_at) VALUES ($1, $2, $3, $4, $5)"
)


async def add_item(session: AsyncSession, item: ItemRow) -> None:
    values = (item["id"], item["title"], item["description"], item["owner_id"], item["created_at"])
    await (await _connection(session)).exec_driver_sql(_INSERT, values)


async def save_item(
    session: AsyncSession, item_id: uuid.UUID, changes: dict[str, Any]
) -> ItemRow | None:
    query = update(items).where(items.c.id == item_id).values(**changes).returning(*_COLUMNS)
    row = (await (await _connection(session)).execute(query)).first()
    return None if row is None else _row(row)


async def delete_item(session: AsyncSession, item_id: uuid.UUID) -> None:
    await (await _connection(session)).execute(delete(items).where(items.c.id == item_id))
