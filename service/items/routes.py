"""HTTP routes for /items (template-compatible), plus Idempotency-Key on create and
ETag / If-Match on the item itself; without those headers nothing changes for old clients."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from service.api.deps import CurrentUser, SessionDep, SettingsDep
from service.core.routing import StrictJSONRoute
from service.core.schemas import Message, problem_responses
from service.idempotency import service as idempotency
from service.items import service
from service.items.schemas import ItemCreate, ItemPublic, ItemsPublic, ItemUpdate

router = APIRouter(prefix="/items", tags=["items"], route_class=StrictJSONRoute)

Skip = Annotated[int, Query(ge=0, le=1_000_000)]
Limit = Annotated[int, Query(ge=1, le=1000)]
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


@router.get("/", response_model=ItemsPublic)
async def read_items(
    session: SessionDep, user: CurrentUser, skip: Skip = 0, limit: Limit = 100
) -> ItemsPublic:
    items, count = await service.list_items(session, user, skip=skip, limit=limit)
    return ItemsPublic(data=[ItemPublic.model_validate(i) for i in items], count=count)


@router.post("/", response_model=ItemPublic)
async def create_item(
    session: SessionDep,
    user: CurrentUser,
    settings: SettingsDep,
    body: ItemCreate,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> ItemPublic:
    if idempotency_key is None:
        item = ItemPublic.model_validate(await service.create_item(session, user, body))
    else:
        answer = await service.create_item_once(
            session,
            user,
            body,
            key=idempotency.check_key(idempotency_key),
            ttl_s=settings.idempotency_key_ttl_s,
        )
        item = ItemPublic.model_validate(answer.body)
        response.status_code = answer.status
        if answer.replayed:
            response.headers[REPLAYED] = "true"
    response.headers[ETAG] = service.etag_for(item)
    return item


@router.get("/{id}", response_model=ItemPublic)
async def read_item(
    session: SessionDep, user: CurrentUser, id: uuid.UUID, response: Response
) -> ItemPublic:
    item = ItemPublic.model_validate(await service.get_item_for(session, user, id))
    response.headers[ETAG] = service.etag_for(item)
    return item


@router.put("/{id}", response_model=ItemPublic, responses=PRECONDITION_FAILED)
async def update_item(
    session: SessionDep,
    user: CurrentUser,
    id: uuid.UUID,
    body: ItemUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> ItemPublic:
    updated = await service.update_item(session, user, id, body, if_match=parse_if_match(if_match))
    item = ItemPublic.model_validate(updated)
    response.headers[ETAG] = service.etag_for(item)
    return item


@router.delete("/{id}", response_model=Message, responses=PRECONDITION_FAILED)
async def delete_item(
    session: SessionDep, user: CurrentUser, id: uuid.UUID, if_match: IfMatch = None
) -> Message:
    await service.delete_item(session, user, id, if_match=parse_if_match(if_match))
    return Message(message="Item deleted successfully")
