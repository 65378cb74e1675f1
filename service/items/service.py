"""Rules about items: everyone owns their items; a superuser may act on all of them.

Writes may be made safe to retry (an Idempotency-Key on create) and safe against lost updates
(If-Match on update and delete, compared with the item's ETag).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from service.core.errors import BadRequest, DomainError, Forbidden, NotFound
from service.idempotency import service as idempotency
from service.items import repository
from service.items.models import Item
from service.items.schemas import ItemCreate, ItemPublic, ItemUpdate
from service.users.models import User

# What an Idempotency-Key on item creation is bound to, besides the body.
CREATE_OPERATION = "POST /api/v1/items/"


class ItemNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("Item not found")


class NotItemOwner(Forbidden):
    def __init__(self) -> None:
        super().__init__("Not enough permissions")


class ItemChanged(DomainError):
    status = HTTPStatus.PRECONDITION_FAILED

    def __init__(self) -> None:
        super().__init__("The item has changed: If-Match does not match its current ETag")


class InvalidIfMatch(BadRequest):
    def __init__(self) -> None:
        super().__init__('If-Match must be "*" or a comma-separated list of quoted entity tags')


@dataclass(frozen=True, slots=True)
class IfMatch:
    """A parsed If-Match header: `*` (any current item), or the strong entity tags it lists."""

    any: bool = False
    tags: frozenset[str] = frozenset()

    def matches(self, etag: str) -> bool:
        return self.any or etag in self.tags


def etag_for(item: Item | ItemPublic) -> str:
    """A strong ETag: the SHA-256 of the item as the API shows it, so it changes exactly when the
    representation does (and comes back if an edit is undone, which is harmless for If-Match)."""
    public = ItemPublic.model_validate(item).model_dump(mode="json")
    canonical = json.dumps(public, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f'"{hashlib.sha256(canonical.encode()).hexdigest()}"'


async def list_items(
    session: AsyncSession, viewer: User, *, skip: int, limit: int
) -> tuple[Sequence[Item], int]:
    owner_id = None if viewer.is_superuser else viewer.id
    return await repository.list_items(session, owner_id=owner_id, skip=skip, limit=limit)


async def create_item(session: AsyncSession, owner: User, data: ItemCreate) -> Item:
    return await repository.add_item(session, Item(**data.model_dump(), owner_id=owner.id))


async def create_item_once(
    session: AsyncSession, owner: User, data: ItemCreate, *, key: str, ttl_s: int
) -> idempotency.Answer:
    """Create the item unless `owner` already sent `key`; the answer is then the first one."""

    async def create() -> tuple[int, dict[str, Any]]:
        item = await create_item(session, owner, data)
        return HTTPStatus.OK, ItemPublic.model_validate(item).model_dump(mode="json")

    return await idempotency.run_once(
        session,
        user_id=owner.id,
        key=key,
        fingerprint=idempotency.fingerprint(CREATE_OPERATION, data.model_dump(mode="json")),
        ttl_s=ttl_s,
        action=create,
    )


def _check_access(actor: User, item: Item | None) -> Item:
    if item is None:
        raise ItemNotFound
    if item.owner_id != actor.id and not actor.is_superuser:
        raise NotItemOwner
    return item


async def get_item_for(session: AsyncSession, actor: User, item_id: uuid.UUID) -> Item:
    return _check_access(actor, await repository.get_item(session, item_id))


async def _get_item_to_change(
    session: AsyncSession, actor: User, item_id: uuid.UUID, if_match: IfMatch | None
) -> Item:
    """The item, row-locked until the transaction ends, so the If-Match check holds for the write.

    404 and 403 come before 412: a precondition only matters for a request that could succeed.
    """
    item = _check_access(actor, await repository.get_item_for_update(session, item_id))
    if if_match is not None and not if_match.matches(etag_for(item)):
        raise ItemChanged
    return item


async def update_item(
    session: AsyncSession,
    actor: User,
    item_id: uuid.UUID,
    data: ItemUpdate,
    *,
    if_match: IfMatch | None = None,
) -> Item:
    item = await _get_item_to_change(session, actor, item_id, if_match)
    sent = data.model_dump(exclude_unset=True)
    # title is required: a null means "leave it"; description is optional, a null clears it.
    changes = {k: v for k, v in sent.items() if v is not None or k == "description"}
    return await repository.save_item(session, item, changes)


async def delete_item(
    session: AsyncSession, actor: User, item_id: uuid.UUID, *, if_match: IfMatch | None = None
) -> None:
    await _get_item_to_change(session, actor, item_id, if_match)
    await repository.delete_item(session, item_id)
