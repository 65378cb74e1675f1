"""Rules about items: everyone owns their items; a superuser may act on all of them.

Update and delete may carry a precondition on the item as stored (the route's If-Match against
its ETag), checked under the row lock the write holds. Lists page by offset or by a keyset
cursor; their count comes from trigger-kept counters, so neither grows with the table. (Making a
create safe to retry is the route's: idempotency/ around this module's create_item.)
"""

from __future__ import annotations

import base64
import hmac
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

from sqlmodel.ext.asyncio.session import AsyncSession

from service.core.errors import BadRequest, Forbidden, NotFound, PreconditionFailed
from service.core.tables import utcnow
from service.items import repository
from service.items.models import ItemRow
from service.items.schemas import ItemCreate, ItemUpdate
from service.users.models import UserRecord

# Whether the item as stored is the one the client expects (the route's If-Match).
type Precondition = Callable[[ItemRow], bool]


class ItemNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("Item not found")


class NotItemOwner(Forbidden):
    def __init__(self) -> None:
        super().__init__("Not enough permissions")


class ItemChanged(PreconditionFailed):
    def __init__(self) -> None:
        super().__init__("The item has changed: If-Match does not match its current ETag")


class InvalidCursor(BadRequest):
    def __init__(self) -> None:
        super().__init__(
            "cursor is not a next_cursor this API issued (or its key has changed);"
            " start again from the first page without cursor"
        )


class CursorWithSkip(BadRequest):
    def __init__(self) -> None:
        super().__init__("cursor and skip cannot be combined: a cursor already says where to start")


# -- keyset cursors -----------------------------------------------------------------------------
# A cursor is the position after a page's last item, (created_at, id), with an HMAC tag so that
# clients cannot forge or edit one: version (1 byte) | created_at in microseconds since the
# epoch (signed 8 bytes) | id (16 bytes) | tag (8 bytes), in URL-safe base64 (44 characters).
_CURSOR_VERSION = 1
_CURSOR_TAG_BYTES = 8
_CURSOR_PATTERN = re.compile(r"[A-Za-z0-9_-]{44}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@cache
def cursor_key(secret: str) -> bytes:
    """The cursor MAC key, derived from SECRET_KEY and kept apart from token signing."""
    return hmac.digest(secret.encode(), b"keelson items cursor", "sha256")


def _cursor_tag(key: bytes, payload: bytes) -> bytes:
    return hmac.digest(key, payload, "sha256")[:_CURSOR_TAG_BYTES]


def encode_cursor(created_at: datetime, item_id: uuid.UUID, key: bytes) -> str:
    """The cursor for the position right after the item (created_at, item_id)."""
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    payload = (
        _CURSOR_VERSION.to_bytes(1, "big") + micros.to_bytes(8, "big", signed=True) + item_id.bytes
    )
    return base64.urlsafe_b64encode(payload + _cursor_tag(key, payload)).decode()


def decode_cursor(cursor: str, key: bytes) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) a cursor stands for; InvalidCursor for anything this API did not
    issue with this key."""
    if _CURSOR_PATTERN.fullmatch(cursor) is None:
        raise InvalidCursor
    raw = base64.urlsafe_b64decode(cursor)
    payload, tag = raw[:-_CURSOR_TAG_BYTES], raw[-_CURSOR_TAG_BYTES:]
    if not hmac.compare_digest(tag, _cursor_tag(key, payload)) or payload[0] != _CURSOR_VERSION:
        raise InvalidCursor
    try:
        created_at = _EPOCH + timedelta(microseconds=int.from_bytes(payload[1:9], signed=True))
    except OverflowError:
        raise InvalidCursor from None
    return created_at, uuid.UUID(bytes=payload[9:])


@dataclass(frozen=True, slots=True)
class ItemPage:
    data: list[ItemRow]
    count: int
    next_cursor: str | None


async def list_items(
    session: AsyncSession,
    viewer: UserRecord,
    *,
    skip: int,
    limit: int,
    cursor: str | None = None,
    key: bytes,
) -> ItemPage:
    """A page newest first: after `cursor`, or at offset `skip`. next_cursor continues after
    the page's last item, and is None when nothing older is left."""
    if cursor is not None and skip:
        raise CursorWithSkip
    after = None if cursor is None else decode_cursor(cursor, key)
    owner_id = None if viewer.is_superuser else viewer.id
    page = await repository.list_page(
        session, owner_id=owner_id, after=after, skip=skip, limit=limit + 1
    )
    rows, next_cursor = page.rows, None
    if len(rows) > limit:
        del rows[limit:]
        last = rows[-1]
        next_cursor = encode_cursor(last["created_at"], uuid.UUID(last["id"]), key)
    return ItemPage(data=rows, count=page.total, next_cursor=next_cursor)


async def create_item(session: AsyncSession, owner: UserRecord, data: ItemCreate) -> ItemRow:
    """Id and created_at are made here, so the INSERT needs no RETURNING and the answer is
    exactly what was stored (PostgreSQL keeps microseconds, as datetime does)."""
    item = ItemRow(
        id=str(uuid.uuid4()),
        title=data.title,
        description=data.description,
        owner_id=str(owner.id),
        created_at=utcnow(),
    )
    await repository.add_item(session, item)
    return item


def _check_access(actor: UserRecord, item: ItemRow | None) -> ItemRow:
    if item is None:
        raise ItemNotFound
    if item["owner_id"] != str(actor.id) and not actor.is_superuser:
        raise NotItemOwner
    return item


async def get_item_for(session: AsyncSession, actor: UserRecord, item_id: uuid.UUID) -> ItemRow:
    return _check_access(actor, await repository.get_item(session, item_id))


async def _get_item_to_change(
    session: AsyncSession, actor: UserRecord, item_id: uuid.UUID, precondition: Precondition | None
) -> ItemRow:
    """The item, row-locked until the transaction ends, so the precondition holds for the write.

    404 and 403 come before 412: a precondition only matters for a request that could succeed.
    """
    item = _check_access(actor, await repository.get_item_for_update(session, item_id))
    if precondition is not None and not precondition(item):
        raise ItemChanged
    return item


async def update_item(
    session: AsyncSession,
    actor: UserRecord,
    item_id: uuid.UUID,
    data: ItemUpdate,
    *,
    precondition: Precondition | None = None,
) -> ItemRow:
    item = await _get_item_to_change(session, actor, item_id, precondition)
    sent = data.model_dump(exclude_unset=True)
    # title is required: a null means "leave it"; description is optional, a null clears it.
    changes = {k: v for k, v in sent.items() if v is not None or k == "description"}
    if not changes:
        return item
    saved = await repository.save_item(session, item_id, changes)
    if saved is None:  # cannot happen: the row is locked since _get_item_to_change
        raise ItemNotFound
    return saved


async def delete_item(
    session: AsyncSession,
    actor: UserRecord,
    item_id: uuid.UUID,
    *,
    precondition: Precondition | None = None,
) -> None:
    await _get_item_to_change(session, actor, item_id, precondition)
    await repository.delete_item(session, item_id)
