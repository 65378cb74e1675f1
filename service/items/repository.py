"""Queries on the items table, in SQLAlchemy Core on the session's connection.

Rows come back as plain `ItemRow` dicts of exactly what the API shows: no ORM objects to build,
track and validate again on the hot paths.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, delete, func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from service.items.models import ALL_ITEMS_SCOPE, Item, ItemCounter, ItemRow

items: Table = Item.metadata.tables["items"]
item_counters: Table = ItemCounter.metadata.tables["item_counters"]
_COLUMNS = (items.c.id, items.c.title, items.c.description, items.c.owner_id, items.c.created_at)
_KEYS = tuple(column.key for column in _COLUMNS)
_NEWEST_FIRST = (items.c.created_at.desc(), items.c.id.desc())


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


@cache
def _page_statement(*, by_owner: bool, after: bool, skip: bool) -> Select[Any]:
    """Built once per shape: constructing a select costs more CPU than PostgreSQL's answer."""
    page = select(*_COLUMNS)
    if by_owner:
        page = page.where(items.c.owner_id == bindparam("owner_id"))
    if after:
        page = page.where(
            tuple_(items.c.created_at, items.c.id)
            < tuple_(
                bindparam("after_created_at", type_=items.c.created_at.type),
                bindparam("after_id", type_=items.c.id.type),
            )
        )
    page = page.order_by(*_NEWEST_FIRST).limit(bindparam("limit"))
    return page.offset(bindparam("skip")) if skip else page


def page_query(
    *,
    owner_id: uuid.UUID | None,
    after: tuple[datetime, uuid.UUID] | None,
    skip: int,
    limit: int,
) -> tuple[Select[Any], dict[str, Any]]:
    """Up to `limit` items newest first, older than `after` (a keyset position) if given.

    owner_id=None lists everyone's items (superuser view). The row comparison
    (created_at, id) < (:c, :i) is a range of ix_items_owner_id_created_at_id (or
    ix_items_created_at_id): a page costs the same at any depth, without a sort.
    """
    statement = _page_statement(
        by_owner=owner_id is not None, after=after is not None, skip=skip > 0
    )
    params: dict[str, Any] = {"owner_id": owner_id, "limit": limit, "skip": skip}
    if after is not None:
        params["after_created_at"], params["after_id"] = after
    return statement, params


async def list_items(
    session: AsyncSession,
    *,
    owner_id: uuid.UUID | None,
    after: tuple[datetime, uuid.UUID] | None,
    skip: int,
    limit: int,
) -> list[ItemRow]:
    query, params = page_query(owner_id=owner_id, after=after, skip=skip, limit=limit)
    rows = (await (await _connection(session)).execute(query, params)).all()
    return [_row(row) for row in rows]


_COUNT = select(func.coalesce(func.sum(item_counters.c.n), 0)).where(
    item_counters.c.scope == bindparam("scope")
)


async def count_items(session: AsyncSession, *, owner_id: uuid.UUID | None) -> int:
    """O(1): the sum of the scope's counter shards (kept by triggers), not count(*) on items."""
    scope = ALL_ITEMS_SCOPE if owner_id is None else owner_id
    total = (await (await _connection(session)).execute(_COUNT, {"scope": scope})).scalar_one()
    return int(total)


async def add_item(session: AsyncSession, item: ItemRow) -> None:
    await (await _connection(session)).execute(insert(items).values(**item))


async def save_item(
    session: AsyncSession, item_id: uuid.UUID, changes: dict[str, Any]
) -> ItemRow | None:
    query = update(items).where(items.c.id == item_id).values(**changes).returning(*_COLUMNS)
    row = (await (await _connection(session)).execute(query)).first()
    return None if row is None else _row(row)


async def delete_item(session: AsyncSession, item_id: uuid.UUID) -> None:
    await (await _connection(session)).execute(delete(items).where(items.c.id == item_id))
