"""Rules about items: everyone owns their items; a superuser may act on all of them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlmodel.ext.asyncio.session import AsyncSession

from service.core.errors import Forbidden, NotFound
from service.items import repository
from service.items.models import Item
from service.items.schemas import ItemCreate, ItemUpdate
from service.users.models import User


class ItemNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("Item not found")


class NotItemOwner(Forbidden):
    def __init__(self) -> None:
        super().__init__("Not enough permissions")


async def list_items(
    session: AsyncSession, viewer: User, *, skip: int, limit: int
) -> tuple[Sequence[Item], int]:
    owner_id = None if viewer.is_superuser else viewer.id
    return await repository.list_items(session, owner_id=owner_id, skip=skip, limit=limit)


async def create_item(session: AsyncSession, owner: User, data: ItemCreate) -> Item:
    return await repository.add_item(session, Item(**data.model_dump(), owner_id=owner.id))


async def get_item_for(session: AsyncSession, actor: User, item_id: uuid.UUID) -> Item:
    item = await repository.get_item(session, item_id)
    if item is None:
        raise ItemNotFound
    if item.owner_id != actor.id and not actor.is_superuser:
        raise NotItemOwner
    return item


async def update_item(
    session: AsyncSession, actor: User, item_id: uuid.UUID, data: ItemUpdate
) -> Item:
    item = await get_item_for(session, actor, item_id)
    sent = data.model_dump(exclude_unset=True)
    # title is required: a null means "leave it"; description is optional, a null clears it.
    changes = {k: v for k, v in sent.items() if v is not None or k == "description"}
    return await repository.save_item(session, item, changes)


async def delete_item(session: AsyncSession, actor: User, item_id: uuid.UUID) -> None:
    await get_item_for(session, actor, item_id)
    await repository.delete_item(session, item_id)
