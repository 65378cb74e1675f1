"""HTTP routes for /items (template-compatible), plus Idempotency-Key on create, ETag / If-Match
on the item itself and a keyset cursor on the list; without them nothing changes for old clients.

Answers are JSON bytes written once from the rows (orjson, byte for byte what pydantic would
write for the response_model, which stays for the OpenAPI document): no ORM objects, no second
validation by FastAPI.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import Header, Query, Response

from service.auth.deps import CurrentUser
from service.core.deps import Limit, ReadSession, SettingsDep, Skip, WriteSession
from service.core.responses import model_response
from service.core.routing import api_router
from service.core.schemas import Message, problem_responses
from service.idempotency import service as idempotency
from service.items import service
from service.items.models import ItemRow
from service.items.schemas import ItemCreate, ItemPublic, ItemsPublic, ItemUpdate

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
IfMatch = Annotated[
    list[str] | None,
    Header(
        alias="If-Match",
        description="`*` or the item's `ETag`(s); 412 when none matches the current item",
    ),
]

ETAG = "ETag"
REPLAYED = "Idempotent-Replayed"
# Beyond the errors every /api/v1 operation documents: a stale If-Match.
PRECONDITION_FAILED = problem_responses(412)
# One list element of If-Match: an optional weak prefix and a quoted entity tag (RFC 9110 8.8.3).
_IF_MATCH_ELEMENT = re.compile(r'[ \t,]*(W/)?("[\x21\x23-\x7e\x80-\xff]*")[ \t]*(?:,|\Z)')


def parse_if_match(values: list[str] | None) -> service.IfMatch | None:
    """None without the header. Weak tags are kept out: If-Match compares strongly."""
    if not values:
        return None
    raw = ",".join(values)
    if raw.strip(" \t") == "*":
        return service.IfMatch(any=True)
    strong: set[str] = set()
    position, elements = 0, 0
    while raw[position:].strip(" \t,"):
        element = _IF_MATCH_ELEMENT.match(raw, position)
        if element is None:
            raise service.InvalidIfMatch
        elements += 1
        if element.group(1) is None:
            strong.add(element.group(2))
        position = element.end()
    if elements == 0:
        raise service.InvalidIfMatch
    return service.IfMatch(tags=frozenset(strong))


def _json(content: Any, headers: dict[str, str] | None = None, status: int = 200) -> Response:
    return Response(
        service.to_json(content),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _item(item: ItemRow, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return _json(item, {**(headers or {}), ETAG: service.etag_for(item)}, status)


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
    answer = await service.create_item_once(
        session,
        user,
        body,
        key=idempotency.check_key(idempotency_key),
        ttl_s=settings.idempotency_key_ttl_s,
    )
    headers = {ETAG: service.etag_for(answer.body)}
    if answer.replayed:
        headers[REPLAYED] = "true"
    # The stored answer's keys come back in jsonb's order: the model puts them in the API's.
    return model_response(
        ItemPublic.model_validate(answer.body), status_code=answer.status, headers=headers
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
    if_match: IfMatch = None,
) -> Response:
    updated = await service.update_item(session, user, id, body, if_match=parse_if_match(if_match))
    return _item(updated)


@router.delete("/{id}", response_model=Message, responses=PRECONDITION_FAILED)
async def delete_item(
    session: WriteSession, user: CurrentUser, id: uuid.UUID, if_match: IfMatch = None
) -> Message:
    await service.delete_item(session, user, id, if_match=parse_if_match(if_match))
    return Message(message="Item deleted successfully")
