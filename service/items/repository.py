"""Queries on the items table."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.items.models import Item


async def get_item(session: AsyncSession, item_id: uuid.UUID) -> Item | None:
    return await session.get(Item, item_id)


async def get_item_for_update(session: AsyncSession, item_id: uuid.UUID) -> Item | None:
    """The item with its row locked (FOR UPDATE) until the transaction ends, freshly read."""
    query = (
        select(Item)
        .where(col(Item.id) == item_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.exec(query)).first()


async def list_items(
    session: AsyncSession, *, owner_id: uuid.UUID | None, skip: int, limit: int
) -> tuple[Sequence[Item], int]:
    """Newest first; owner_id=None lists everyone's items (superuser view)."""
    page = select(Item)
    count = select(func.count()).select_from(Item)
    if owner_id is not None:
        page = page.where(col(Item.owner_id) == owner_id)
        count = count.where(col(Item.owner_id) == owner_id)
    page = page.order_by(col(Item.created_at).desc(), col(Item.id).desc()).offset(skip).limit(limit)
    rows = (await session.exec(page)).all()
    total = (await session.exec(count)).one()
    return rows, total


async def add_item(session: AsyncSession, item: Item) -> Item:
    session.add(item)
    await session.flush()
    return item


async def save_item(session: AsyncSession, item: Item, changes: dict[str, Any]) -> Item:
    for field, value in changes.items():
        setattr(item, field, value)
    session.add(item)
    await session.flush()
    return item


async def delete_item(session: AsyncSession, item_id: uuid.UUID) -> None:
    await session.exec(delete(Item).where(col(Item.id) == item_id))
