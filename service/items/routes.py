"""HTTP routes for /items (template-compatible), plus Idempotency-Key on create, ETag / If-Match
on the item itself and a keyset cursor on the list; without them nothing changes for old clients.

Answers are JSON bytes written once from the rows (orjson, byte for byte what pydantic would
write for the response_model, which stays for the OpenAPI document): no ORM objects, no second
validation by FastAPI.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any

import orjson
from fastapi import Header, Query, Response
from sqlmodel.ext.asyncio.session import AsyncSession

from service.auth.deps import CurrentUser
from service.core.deps import Limit, ReadSession, SettingsDep, Skip, WriteSession
from service.core.digests import json_default, json_sha256
from service.core.errors import BadRequest
from service.core.responses import model_response
from service.core.routing import api_router
from service.core.schemas import Message, problem_responses
from service.idempotency import service as idempotency
from service.items import service
from service.items.models import ItemRow
from service.items.schemas import ItemCreate, ItemPublic, ItemsPublic, ItemUpdate
from service.users.models import UserRecord

router = api_router(prefix="/items", tags=["items"])

Cursor = Annotated[
    str | None,
    Query(
        max_length=64,
        description="`next_cursor` of the previous page: the next page starts after its last"
        " item, however many items were created since (not with `skip`)",
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="1-255 printable ASCII characters; a retry with the same key and body"
        " returns the first answer (with `Idempotent-Replayed: true`) and creates nothing",
    ),
]
IfMatchHeader = Annotated[
    list[str] | None,
    Header(
        alias="If-Match",
        description="`*` or the item's `ETag`(s); 412 when none matches the current item",
    ),
]

# What an Idempotency-Key on item creation is bound to, besides the body.
CREATE_OPERATION = "POST /api/v1/items/"
ETAG = "ETag"
REPLAYED = "Idempotent-Replayed"
# Beyond the errors every /api/v1 operation documents: a stale If-Match.
PRECONDITION_FAILED = problem_responses(412)
# One list element of If-Match: an optional weak prefix and a quoted entity tag (RFC 9110 8.8.3).
_IF_MATCH_ELEMENT = re.compile(r'[ \t,]*(W/)?("[\x21\x23-\x7e\x80-\xff]*")[ \t]*(?:,|\Z)')


class InvalidIfMatch(BadRequest):
    def __init__(self) -> None:
        super().__init__('If-Match must be "*" or a comma-separated list of quoted entity tags')


# JSON exactly as pydantic writes an ItemPublic (UTC as "Z"); tests/items hold it to that.
JSON_OPTIONS = orjson.OPT_UTC_Z


def to_json(content: object) -> bytes:
    return orjson.dumps(content, default=json_default, option=JSON_OPTIONS)


def etag_for(item: Mapping[str, object]) -> str:
    """A strong ETag: the SHA-256 of the item as the API shows it (canonical JSON, sorted keys),
    so it changes exactly when the representation does (and comes back if an edit is undone,
    which is harmless for If-Match). `item` is a row, or its JSON form (a stored answer)."""
    return f'"{json_sha256(item)}"'


@dataclass(frozen=True, slots=True)
class IfMatch:
    """A parsed If-Match header: `*` (any current item), or the strong entity tags it lists."""

    any: bool = False
    tags: frozenset[str] = frozenset()

    def holds_for(self, item: ItemRow) -> bool:
        """The precondition handed to the service: checked on the row it has locked."""
        return self.any or etag_for(item) in self.tags


def parse_if_match(values: list[str] | None) -> IfMatch | None:
    """None without the header. Weak tags are kept out: If-Match compares strongly."""
    if not values:
        return None
    raw = ",".join(values)
    if raw.strip(" \t") == "*":
        return IfMatch(any=True)
    strong: set[str] = set()
    position, elements = 0, 0
    while raw[position:].strip(" \t,"):
        element = _IF_MATCH_ELEMENT.match(raw, position)
        if element is None:
            raise InvalidIfMatch
        elements += 1
        if element.group(1) is None:
            strong.add(element.group(2))
        position = element.end()
    if elements == 0:
        raise InvalidIfMatch
    return IfMatch(tags=frozenset(strong))


def _precondition(values: list[str] | None) -> service.Precondition | None:
    if_match = parse_if_match(values)
    return None if if_match is None else if_match.holds_for


def _json(content: Any, headers: dict[str, str] | None = None, status: int = 200) -> Response:
    return Response(
        to_json(content),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _item(item: ItemRow, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return _json(item, {**(headers or {}), ETAG: etag_for(item)}, status)


@router.get("/", response_model=ItemsPublic)
async def read_items(
    session: ReadSession,
    user: CurrentUser,
    settings: SettingsDep,
    skip: Skip = 0,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    page = await service.list_items(
        session,
        user,
        skip=skip,
        limit=limit,
        cursor=cursor,
        key=service.cursor_key(settings.secret_key.get_secret_value()),
    )
    return _json({"data": page.data, "count": page.count, "next_cursor": page.next_cursor})


@router.post("/", response_model=ItemPublic)
async def create_item(
    session: WriteSession,
    user: CurrentUser,
    settings: SettingsDep,
    body: ItemCreate,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    if idempotency_key is None:
        return _item(await service.create_item(session, user, body))
    answer = await create_item_once(
        session,
        user,
        body,
        key=idempotency.check_key(idempotency_key),
        ttl_s=settings.idempotency_key_ttl_s,
    )
    headers = {ETAG: etag_for(answer.body)}
    if answer.replayed:
        headers[REPLAYED] = "true"
    # The stored answer's keys come back in jsonb's order: the model puts them in the API's.
    return model_response(
        ItemPublic.model_validate(answer.body), status_code=answer.status, headers=headers
    )


async def create_item_once(
    session: AsyncSession, owner: UserRecord, data: ItemCreate, *, key: str, ttl_s: int
) -> idempotency.Answer:
    """Create the item unless `owner` already sent `key`; the answer is then the first one,
    stored in the same transaction as the item."""

    async def create() -> tuple[int, dict[str, Any]]:
        item = await service.create_item(session, owner, data)
        return HTTPStatus.OK, orjson.loads(to_json(item))

    return await idempotency.run_once(
        session,
        user_id=owner.id,
        key=key,
        fingerprint=idempotency.fingerprint(CREATE_OPERATION, data.model_dump(mode="json")),
        ttl_s=ttl_s,
        action=create,
    )


@router.get("/{id}", response_model=ItemPublic)
async def read_item(session: ReadSession, user: CurrentUser, id: uuid.UUID) -> Response:
    return _item(await service.get_item_for(session, user, id))


@router.put("/{id}", response_model=ItemPublic, responses=PRECONDITION_FAILED)
async def update_item(
    session: WriteSession,
    user: CurrentUser,
    id: uuid.UUID,
    body: ItemUpdate,
    if_match: IfMatchHeader = None,
) -> Response:
    precondition = _precondition(if_match)
    return _item(await service.update_item(session, user, id, body, precondition=precondition))


@router.delete("/{id}", response_model=Message, responses=PRECONDITION_FAILED)
async def delete_item(
    session: WriteSession, user: CurrentUser, id: uuid.UUID, if_match: IfMatchHeader = None
) -> Message:
    await service.delete_item(session, user, id, precondition=_precondition(if_match))
    return Message(message="Item deleted successfully")
