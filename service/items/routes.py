"""HTTP routes for /items (template-compatible)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import CurrentUser, SessionDep
from service.core.schemas import Message
from service.items import service
from service.items.schemas import ItemCreate, ItemPublic, ItemsPublic, ItemUpdate

router = APIRouter(prefix="/items", tags=["items"])

Skip = Annotated[int, Query(ge=0, le=1_000_000)]
Limit = Annotated[int, Query(ge=1, le=1000)]


@router.get("/", response_model=ItemsPublic)
async def read_items(
    session: SessionDep, user: CurrentUser, skip: Skip = 0, limit: Limit = 100
) -> ItemsPublic:
    items, count = await service.list_items(session, user, skip=skip, limit=limit)
    return ItemsPublic(data=[ItemPublic.model_validate(i) for i in items], count=count)


@router.post("/", response_model=ItemPublic)
async def create_item(session: SessionDep, user: CurrentUser, body: ItemCreate) -> ItemPublic:
    return ItemPublic.model_validate(await service.create_item(session, user, body))


@router.get("/{id}", response_model=ItemPublic)
async def read_item(session: SessionDep, user: CurrentUser, id: uuid.UUID) -> ItemPublic:
    return ItemPublic.model_validate(await service.get_item_for(session, user, id))


@router.put("/{id}", response_model=ItemPublic)
async def update_item(
    session: SessionDep,
    user: CurrentUser,
    id: uuid.UUID,
    body: ItemUpdate,
) -> ItemPublic:
    return ItemPublic.model_validate(await service.update_item(session, user, id, body))


@router.delete("/{id}", response_model=Message)
async def delete_item(session: SessionDep, user: CurrentUser, id: uuid.UUID) -> Message:
    await service.delete_item(session, user, id)
    return Message(message="Item deleted successfully")
