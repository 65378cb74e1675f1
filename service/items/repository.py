"""Queries on the items table: named statements compiled once from the table, run on the driver.

Every query returns items as `ItemRow`, exactly what the API shows (ids as text, cast by
PostgreSQL: orjson writes a str natively but falls back to Python for asyncpg's UUID type, 200
times per page), built from the asyncpg Record by column name: no ORM objects to build, track
and validate again. (core/statements.py runs them.)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import (
    BigInteger,
    DateTime,
    Table,
    Text,
    Uuid,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.sql import Select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.core.statements import (
    Statement,
    compile_statement,
    execute,
    execute_standalone,
    fetch,
    fetch_one,
)
from service.items.models import ALL_ITEMS_SCOPE, Item, ItemCounter, ItemRow

items: Table = Item.metadata.tables["items"]
item_counters: Table = ItemCounter.metadata.tables["item_counters"]

_COLUMNS = (
    items.c.id.cast(Text).label("id"),
    items.c.title,
    items.c.description,
    items.c.owner_id.cast(Text).label("owner_id"),
    items.c.created_at,
)
_ITEM_ID = bindparam("item_id", type_=Uuid)


def _row(row: asyncpg.Record) -> ItemRow:
    item: ItemRow = {
        "id": row["id"],
        "title": row["title"],
        "description": row["description"],
        "owner_id": row["owner_id"],
        "created_at": row["created_at"],
    }
    return item


_GET = compile_statement(select(*_COLUMNS).where(items.c.id == _ITEM_ID))
_GET_FOR_UPDATE = compile_statement(
    select(*_COLUMNS).where(items.c.id == _ITEM_ID).with_for_update()
)


async def get_item(session: AsyncSession, item_id: uuid.UUID) -> ItemRow | None:
    row = await fetch_one(session, _GET, item_id=item_id)
    return None if row is None else _row(row)


async def get_item_for_update(session: AsyncSession, item_id: uuid.UUID) -> ItemRow | None:
    """The item with its row locked (FOR UPDATE) until the transaction ends."""
    row = await fetch_one(session, _GET_FOR_UPDATE, item_id=item_id)
    return None if row is None else _row(row)


@dataclass(frozen=True, slots=True)
class ListedPage:
    """A page and the scope's total count, from the same round trip."""

    rows: list[ItemRow]
    total: int


# The count of one scope, O(1) from the trigger-kept counters. The listing carries the same
# expression as an InitPlan (evaluated once): page and count in one round trip.
_TOTAL_EXPR = (
    select(func.coalesce(func.sum(item_counters.c.n), literal_column("0")).cast(BigInteger))
    .where(item_counters.c.scope == bindparam("scope", type_=Uuid))
    .scalar_subquery()
)
_TOTAL = compile_statement(select(_TOTAL_EXPR))


def _listing(*, by_owner: bool, after: bool, skip: bool) -> Statement:
    """The page is one range of ix_items_owner_id_created_at_id (ix_items_created_at_id for a
    superuser): the row comparison (created_at, id) < (after_at, after_id) costs the same at any
    depth, without a sort. An empty page carries no count: list_page then asks for it alone."""
    query: Select[Any] = select(_TOTAL_EXPR.label("total"), *_COLUMNS)
    if by_owner:
        query = query.where(items.c.owner_id == bindparam("owner_id", type_=Uuid))
    if after:
        position = tuple_(
            bindparam("after_at", type_=DateTime(timezone=True)),
            bindparam("after_id", type_=Uuid),
        )
        query = query.where(tuple_(items.c.created_at, items.c.id) < position)
    query = query.order_by(items.c.created_at.desc(), items.c.id.desc()).limit(bindparam("limit"))
    if skip:
        query = query.offset(bindparam("skip"))
    return compile_statement(query)


_LISTINGS = {
    (by_owner, after, skip): _listing(by_owner=by_owner, after=after, skip=skip)
    for by_owner in (False, True)
    for after in (False, True)
    for skip in (False, True)
}


def listing_statement(*, by_owner: bool, after: bool, skip: bool) -> Statement:
    return _LISTINGS[by_owner, after, skip]


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
    statement = listing_statement(
        by_owner=owner_id is not None, after=after is not None, skip=skip > 0
    )
    scope = ALL_ITEMS_SCOPE if owner_id is None else owner_id
    values: dict[str, Any] = {"scope": scope, "limit": limit, "owner_id": owner_id, "skip": skip}
    if after is not None:
        values["after_at"], values["after_id"] = after
    fetched = await fetch(session, statement, **values)
    if not fetched:  # past the end (or nothing yet): the count alone
        counted = await fetch_one(session, _TOTAL, scope=scope)
        assert counted is not None  # an aggregate always returns its row
        return ListedPage(rows=[], total=int(counted[0]))
    return ListedPage(rows=[_row(row) for row in fetched], total=int(fetched[0]["total"]))


_INSERT = compile_statement(
    insert(items).values(
        id=bindparam("new_id", type_=Uuid),
        title=bindparam("new_title"),
        description=bindparam("new_description"),
        owner_id=bindparam("new_owner_id", type_=Uuid),
        created_at=bindparam("new_created_at", type_=DateTime(timezone=True)),
    )
)


async def add_item(session: AsyncSession, item: ItemRow) -> None:
    """One INSERT (the owner's count follows in its trigger): a whole write by itself, so a
    create with nothing else to store is one round trip, not BEGIN/INSERT/COMMIT; under an
    Idempotency-Key it is one statement of the key's transaction."""
    await execute_standalone(
        session,
        _INSERT,
        new_id=item["id"],
        new_title=item["title"],
        new_description=item["description"],
        new_owner_id=item["owner_id"],
        new_created_at=item["created_at"],
    )


def _save(columns: tuple[str, ...]) -> Statement:
    changes: dict[str, Any] = {column: bindparam(f"new_{column}") for column in columns}
    return compile_statement(
        update(items).where(items.c.id == _ITEM_ID).values(changes).returning(*_COLUMNS)
    )


# What an update may change; one statement per combination.
_SAVES: dict[tuple[str, ...], Statement] = {
    columns: _save(columns) for columns in (("title",), ("description",), ("title", "description"))
}


async def save_item(
    session: AsyncSession, item_id: uuid.UUID, changes: dict[str, Any]
) -> ItemRow | None:
    columns = tuple(column for column in ("title", "description") if column in changes)
    values = {f"new_{column}": changes[column] for column in columns}
    row = await fetch_one(session, _SAVES[columns], item_id=item_id, **values)
    return None if row is None else _row(row)


_DELETE = compile_statement(delete(items).where(items.c.id == _ITEM_ID))


async def delete_item(session: AsyncSession, item_id: uuid.UUID) -> None:
    await execute(session, _DELETE, item_id=item_id)
