"""Keyset paging on GET /items/: next_cursor walks every item once, newest first, at the cost of
one index range per page; cursors this API did not issue are refused without being echoed."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from service.items import repository
from service.items import service as items_service
from service.items.models import ALL_ITEMS_SCOPE, Item
from service.items.schemas import ItemPublic, ItemsPublic
from service.users.models import User
from tests.conftest import problem

ITEMS = "/api/v1/items/"
START = datetime(2026, 1, 1, tzinfo=UTC)


async def add_items(session: AsyncSession, owner: User, count: int, *, ties: int = 0) -> list[Item]:
    """`count` items a minute apart, plus `ties` more sharing the newest one's timestamp (their
    order is then decided by id). Returned newest first, the order the API lists them in."""
    items = [
        Item(title=f"item {n}", owner_id=owner.id, created_at=START + timedelta(minutes=n))
        for n in range(count)
    ]
    newest = START + timedelta(minutes=count)
    items += [Item(title=f"tie {n}", owner_id=owner.id, created_at=newest) for n in range(ties)]
    session.add_all(items)
    await session.commit()
    return sorted(items, key=lambda i: (i.created_at, i.id), reverse=True)


async def walk(
    client: httpx.AsyncClient, headers: dict[str, str], limit: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every page from the first to the one without next_cursor: (items, pages)."""
    pages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        response = await client.get(ITEMS, headers=headers, params=params)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        if pages[-1]["next_cursor"] is None:
            return [item for page in pages for item in page["data"]], pages
        params = {"limit": limit, "cursor": pages[-1]["next_cursor"]}
        assert len(pages) < 100, "the walk does not end"


async def test_cursor_walk_visits_every_item_once_newest_first(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    items = await add_items(session, user, 7, ties=3)
    seen, pages = await walk(client, user_headers, limit=3)
    assert [entry["id"] for entry in seen] == [str(item.id) for item in items]
    assert [len(page["data"]) for page in pages] == [3, 3, 3, 1]
    assert {page["count"] for page in pages} == {10}
    assert pages[-1]["next_cursor"] is None


async def test_a_page_that_ends_exactly_at_the_last_item_has_no_next_cursor(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    await add_items(session, user, 4)
    seen, pages = await walk(client, user_headers, limit=2)
    assert [len(page["data"]) for page in pages] == [2, 2]
    assert len({entry["id"] for entry in seen}) == 4


async def test_cursor_walk_with_limit_one(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    items = await add_items(session, user, 3, ties=2)
    seen, pages = await walk(client, user_headers, limit=1)
    assert [entry["id"] for entry in seen] == [str(item.id) for item in items]
    assert len(pages) == 5


async def test_superuser_walks_everyones_items(
    client: httpx.AsyncClient,
    user: User,
    other_user: User,
    superuser_headers: dict[str, str],
    session: AsyncSession,
) -> None:
    mine = await add_items(session, user, 3)
    theirs = await add_items(session, other_user, 3)
    seen, pages = await walk(client, superuser_headers, limit=2)
    expected = sorted(mine + theirs, key=lambda i: (i.created_at, i.id), reverse=True)
    assert [entry["id"] for entry in seen] == [str(item.id) for item in expected]
    assert pages[0]["count"] == 6


async def test_offset_page_gives_a_cursor_that_continues_after_it(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    items = await add_items(session, user, 6)
    first = (await client.get(ITEMS, headers=user_headers, params={"skip": 1, "limit": 2})).json()
    assert [entry["id"] for entry in first["data"]] == [str(i.id) for i in items[1:3]]
    after = await client.get(
        ITEMS, headers=user_headers, params={"cursor": first["next_cursor"], "limit": 10}
    )
    assert after.status_code == 200
    assert [entry["id"] for entry in after.json()["data"]] == [str(i.id) for i in items[3:]]
    assert after.json()["next_cursor"] is None


async def test_items_created_during_a_walk_neither_repeat_nor_hide_older_ones(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    items = await add_items(session, user, 5)
    first = (await client.get(ITEMS, headers=user_headers, params={"limit": 2})).json()
    created = await client.post(ITEMS, headers=user_headers, json={"title": "newer"})
    assert created.status_code == 200
    rest = (
        await client.get(
            ITEMS, headers=user_headers, params={"limit": 10, "cursor": first["next_cursor"]}
        )
    ).json()
    walked = [entry["id"] for entry in first["data"] + rest["data"]]
    assert walked == [str(item.id) for item in items]
    assert rest["count"] == 6
    assert created.json()["id"] not in walked


def _tampered(cursor: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(cursor))
    raw[5] ^= 0x01  # one bit of created_at
    return base64.urlsafe_b64encode(bytes(raw)).decode()


async def test_cursors_this_api_did_not_issue_are_refused_without_echo(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    await add_items(session, user, 3)
    page = (await client.get(ITEMS, headers=user_headers, params={"limit": 1})).json()
    real = page["next_cursor"]
    other_key = items_service.cursor_key("another-secret-key-0123456789-abcdefghij")
    forged = items_service.encode_cursor(START, uuid.uuid4(), other_key)
    for bad in (
        "not-a-cursor",
        _tampered(real),
        real[:-1],
        real[:-1] + "=",
        real.replace("-", "+").replace("_", "/") if "-" in real or "_" in real else real + "A",
        forged,
        "A" * 44,
        "",
    ):
        response = await client.get(ITEMS, headers=user_headers, params={"cursor": bad})
        body = problem(response, 400)
        assert "cursor" in body["detail"]
        if bad:
            assert bad not in response.text


async def test_an_overlong_cursor_is_422_without_echo(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    cursor = "Z" * 65
    response = await client.get(ITEMS, headers=user_headers, params={"cursor": cursor})
    body = problem(response, 422)
    assert body["errors"][0]["loc"] == ["query", "cursor"]
    assert cursor not in response.text


async def test_cursor_with_skip_is_refused(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    await add_items(session, user, 3)
    cursor = (await client.get(ITEMS, headers=user_headers, params={"limit": 1})).json()[
        "next_cursor"
    ]
    response = await client.get(ITEMS, headers=user_headers, params={"cursor": cursor, "skip": 1})
    assert "cannot be combined" in problem(response, 400)["detail"]
    with_zero = await client.get(ITEMS, headers=user_headers, params={"cursor": cursor, "skip": 0})
    assert with_zero.status_code == 200
    assert len(with_zero.json()["data"]) == 2


async def test_answers_are_the_bytes_pydantic_would_write_and_etags_keep_their_formula(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    title = 'é \u2028 "quoted" \\ \x01 😀 </script>'
    created = await client.post(ITEMS, headers=user_headers, json={"title": title})
    assert created.status_code == 200
    item = ItemPublic.model_validate_json(created.content)
    assert created.content == item.model_dump_json().encode()
    canonical = json.dumps(
        item.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert created.headers["etag"] == f'"{hashlib.sha256(canonical.encode()).hexdigest()}"'
    read = await client.get(f"{ITEMS}{item.id}", headers=user_headers)
    assert read.content == created.content
    assert read.headers["etag"] == created.headers["etag"]
    listed = await client.get(ITEMS, headers=user_headers)
    assert (
        listed.content == ItemsPublic.model_validate_json(listed.content).model_dump_json().encode()
    )


async def _plan(session: AsyncSession, owner_id: uuid.UUID | None) -> str:
    """EXPLAIN of the query the repository sends for a keyset page."""
    statement = repository.listing_statement(by_owner=owner_id is not None, after=True, skip=False)
    scope = ALL_ITEMS_SCOPE if owner_id is None else owner_id
    after_at, after_id = START + timedelta(days=1), uuid.uuid4()
    given = {"scope": scope, "limit": 101, "owner_id": owner_id}
    params = statement.values({**given, "after_at": after_at, "after_id": after_id})
    connection = await session.connection()
    result = await connection.exec_driver_sql(f"EXPLAIN {statement.sql}", params)
    return "\n".join(row[0] for row in result)


@pytest.mark.parametrize("as_owner", [True, False], ids=["owner", "superuser"])
async def test_a_keyset_page_is_an_index_range_without_a_sort(
    user: User, other_user: User, session: AsyncSession, as_owner: bool
) -> None:
    connection = await session.connection()
    # The owner holds a tenth of the rows, as one owner among many would: then only the owner's
    # index answers a page without reading other owners' rows, whatever else the table holds
    # (with an even split the planner may take the created_at index and filter, by statistics).
    for owner, rows in ((user, 1000), (other_user, 9000)):
        await connection.execute(
            text(
                "INSERT INTO items (id, title, owner_id, created_at)"
                " SELECT gen_random_uuid(), 'bulk', :o,"
                " CAST(:start AS timestamptz) + g * interval '1 second'"
                " FROM generate_series(1, :rows) AS g"
            ),
            {"o": owner.id, "start": START, "rows": rows},
        )
    await connection.execute(text("ANALYZE items"))
    plan = await _plan(session, user.id if as_owner else None)
    index = "ix_items_owner_id_created_at_id" if as_owner else "ix_items_created_at_id"
    assert f"Index Scan Backward using {index}" in plan, plan
    assert "Sort" not in plan, plan
