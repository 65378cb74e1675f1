"""ETag on item answers and If-Match on PUT/DELETE /items/{id}: no lost updates, 412 when stale."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.items import routes as items_routes
from service.items import service as items_service
from service.items.models import Item
from service.items.schemas import ItemUpdate
from service.users.models import User
from tests.conftest import bearer, problem
from tests.items.conftest import Committed, wait_until_blocked_on_lock

ITEMS = "/api/v1/items/"
STRONG_ETAG = re.compile(r'^"[0-9a-f]{64}"$')


async def stored(session: AsyncSession, item_id: uuid.UUID | str) -> Item | None:
    query = (
        select(Item)
        .where(col(Item.id) == uuid.UUID(str(item_id)))
        .execution_options(populate_existing=True)
    )
    return (await session.exec(query)).first()


async def new_item(session: AsyncSession, owner: User, title: str = "Milk") -> Item:
    item = Item(title=title, description="2 l", owner_id=owner.id)
    session.add(item)
    await session.commit()
    return item


async def etag_of(client: httpx.AsyncClient, headers: dict[str, str], item: Item) -> str:
    response = await client.get(f"{ITEMS}{item.id}", headers=headers)
    assert response.status_code == 200
    return response.headers["etag"]


async def test_get_answers_a_strong_etag_that_changes_only_with_the_item(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    item = await new_item(session, user)
    etag = await etag_of(client, user_headers, item)
    assert STRONG_ETAG.match(etag), etag
    assert await etag_of(client, user_headers, item) == etag
    other = await new_item(session, user, title="Milk")  # same content, other id
    assert await etag_of(client, user_headers, other) != etag


async def test_created_item_carries_the_etag_a_read_will_show(
    client: httpx.AsyncClient, user_headers: dict[str, str], session: AsyncSession
) -> None:
    created = await client.post(ITEMS, headers=user_headers, json={"title": "Milk"})
    assert created.status_code == 200
    read = await client.get(f"{ITEMS}{created.json()['id']}", headers=user_headers)
    assert read.headers["etag"] == created.headers["etag"]


async def test_put_with_the_current_etag_updates_and_answers_the_new_etag(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    item = await new_item(session, user)
    etag = await etag_of(client, user_headers, item)
    response = await client.put(
        f"{ITEMS}{item.id}", headers={**user_headers, "If-Match": etag}, json={"title": "Eggs"}
    )
    assert response.status_code == 200
    assert response.json()["title"] == "Eggs"
    assert response.headers["etag"] != etag
    assert response.headers["etag"] == await etag_of(client, user_headers, item)
    row = await stored(session, item.id)
    assert row is not None
    assert row.title == "Eggs"


async def test_put_with_a_stale_etag_is_412_and_changes_nothing(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    item = await new_item(session, user)
    stale = await etag_of(client, user_headers, item)
    changed = await client.put(f"{ITEMS}{item.id}", headers=user_headers, json={"title": "Tea"})
    assert changed.status_code == 200

    response = await client.put(
        f"{ITEMS}{item.id}", headers={**user_headers, "If-Match": stale}, json={"title": "Eggs"}
    )
    body = problem(response, 412)
    assert body["detail"] == "The item has changed: If-Match does not match its current ETag"
    assert "etag" not in response.headers
    row = await stored(session, item.id)
    assert row is not None
    assert (row.title, row.description) == ("Tea", "2 l")


async def test_delete_with_a_stale_etag_is_412_and_keeps_the_item(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    item = await new_item(session, user)
    stale = await etag_of(client, user_headers, item)
    await client.put(f"{ITEMS}{item.id}", headers=user_headers, json={"description": None})

    response = await client.delete(f"{ITEMS}{item.id}", headers={**user_headers, "If-Match": stale})
    problem(response, 412)
    row = await stored(session, item.id)
    assert row is not None
    assert row.description is None


async def test_delete_with_the_current_etag_deletes(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    item = await new_item(session, user)
    etag = await etag_of(client, user_headers, item)
    response = await client.delete(f"{ITEMS}{item.id}", headers={**user_headers, "If-Match": etag})
    assert response.status_code == 200
    assert response.json() == {"message": "Item deleted successfully"}
    assert await stored(session, item.id) is None


async def test_star_matches_any_current_item(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    item = await new_item(session, user)
    star = {**user_headers, "If-Match": "*"}
    put = await client.put(f"{ITEMS}{item.id}", headers=star, json={"title": "Eggs"})
    assert put.status_code == 200
    assert put.json()["title"] == "Eggs"
    assert (await client.delete(f"{ITEMS}{item.id}", headers=star)).status_code == 200
    assert await stored(session, item.id) is None


@pytest.mark.parametrize(
    "template",
    ['"0000", {etag}', '{etag},"0000"', ' W/"0000" ,, {etag} ,', '"a,b", {etag}'],
    ids=["second", "first", "empty-elements-and-weak", "comma-inside-a-tag"],
)
async def test_a_list_matches_when_any_strong_tag_is_current(
    client: httpx.AsyncClient,
    user: User,
    user_headers: dict[str, str],
    session: AsyncSession,
    template: str,
) -> None:
    item = await new_item(session, user)
    if_match = template.format(etag=await etag_of(client, user_headers, item))
    response = await client.put(
        f"{ITEMS}{item.id}", headers={**user_headers, "If-Match": if_match}, json={"title": "Eggs"}
    )
    assert response.status_code == 200, response.text
    row = await stored(session, item.id)
    assert row is not None
    assert row.title == "Eggs"


async def test_a_weak_tag_never_matches(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    """If-Match compares strongly (RFC 9110 13.1.1): W/"current" is not a match."""
    item = await new_item(session, user)
    weak = "W/" + await etag_of(client, user_headers, item)
    response = await client.put(
        f"{ITEMS}{item.id}", headers={**user_headers, "If-Match": weak}, json={"title": "Eggs"}
    )
    problem(response, 412)
    row = await stored(session, item.id)
    assert row is not None
    assert row.title == "Milk"


@pytest.mark.parametrize(
    "if_match",
    ["", "abc", '"unterminated', '"a" "b"', '*, "a"', ",", 'W/ "a"', '"a"b'],
)
async def test_a_malformed_if_match_is_400_and_changes_nothing(
    client: httpx.AsyncClient,
    user: User,
    user_headers: dict[str, str],
    session: AsyncSession,
    if_match: str,
) -> None:
    item = await new_item(session, user)
    headers = {**user_headers, "If-Match": if_match}
    put = await client.put(f"{ITEMS}{item.id}", headers=headers, json={"title": "Eggs"})
    assert problem(put, 400)["detail"] == (
        'If-Match must be "*" or a comma-separated list of quoted entity tags'
    )
    problem(await client.delete(f"{ITEMS}{item.id}", headers=headers), 400)
    row = await stored(session, item.id)
    assert row is not None
    assert row.title == "Milk"


async def test_without_if_match_put_and_delete_work_as_before(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    item = await new_item(session, user)
    put = await client.put(f"{ITEMS}{item.id}", headers=user_headers, json={"title": "Eggs"})
    assert put.status_code == 200
    assert STRONG_ETAG.match(put.headers["etag"])
    assert (await client.delete(f"{ITEMS}{item.id}", headers=user_headers)).status_code == 200
    assert await stored(session, item.id) is None


async def test_not_found_and_not_owner_come_before_the_precondition(
    client: httpx.AsyncClient,
    app: FastAPI,
    user: User,
    other_user: User,
    session: AsyncSession,
) -> None:
    item = await new_item(session, other_user)
    stale = {**bearer(app, user), "If-Match": '"0000"'}
    problem(await client.put(f"{ITEMS}{item.id}", headers=stale, json={"title": "x"}), 403)
    problem(await client.delete(f"{ITEMS}{uuid.uuid4()}", headers=stale), 404)
    row = await stored(session, item.id)
    assert row is not None
    assert row.title == "Milk"


async def test_two_writers_with_the_same_etag_one_wins_the_other_gets_412(
    committed: Committed,
) -> None:
    """The If-Match check and the write hold the row lock together: while the first writer's
    transaction is open the second waits on the row, then sees the new ETag and fails."""
    client, headers = committed.client, committed.headers
    created = await client.post(ITEMS, headers=headers, json={"title": "Milk"})
    etag = created.headers["etag"]
    item_id = uuid.UUID(created.json()["id"])

    async with committed.db.sessionmaker() as first:
        await items_service.update_item(
            first,
            committed.user,  # type: ignore[arg-type]
            item_id,
            ItemUpdate(title="first writer"),
            precondition=items_routes.IfMatch(tags=frozenset({etag})).holds_for,
        )
        second = asyncio.create_task(
            client.put(
                f"{ITEMS}{item_id}", headers={**headers, "If-Match": etag}, json={"title": "second"}
            )
        )
        await wait_until_blocked_on_lock(committed.db, "SELECT CAST(items.id")
        assert not second.done()
        await first.commit()

    problem(await asyncio.wait_for(second, timeout=5), 412)
    read = await client.get(f"{ITEMS}{item_id}", headers=headers)
    assert read.json()["title"] == "first writer"


async def test_browsers_may_read_the_etag_cross_origin(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    item = await new_item(session, user)
    response = await client.get(
        f"{ITEMS}{item.id}", headers={**user_headers, "Origin": "http://localhost:5173"}
    )
    assert response.status_code == 200
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert {"etag", "idempotent-replayed"} <= exposed


async def test_the_openapi_document_names_the_headers_and_the_412(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/api/v1/openapi.json")).json()["paths"]

    def headers_of(operation: dict[str, Any]) -> set[str]:
        return {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}

    assert "Idempotency-Key" in headers_of(paths["/api/v1/items/"]["post"])
    for method in ("put", "delete"):
        operation = paths["/api/v1/items/{id}"][method]
        assert "If-Match" in headers_of(operation)
        assert "application/problem+json" in operation["responses"]["412"]["content"]
