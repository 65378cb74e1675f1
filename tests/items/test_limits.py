"""GET /items/ accepts limit=1000 (the documented maximum) and refuses 1001, naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import insert
from sqlmodel.ext.asyncio.session import AsyncSession

from service.items.models import Item
from service.users.models import User
from tests.conftest import problem

ITEMS = "/api/v1/items/"


async def test_limit_of_1000_returns_1000_of_1001_items(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    await session.exec(
        insert(Item).values(
            [
                {
                    "title": f"item {n}",
                    "owner_id": user.id,
                    "created_at": start + timedelta(seconds=n),
                }
                for n in range(1001)
            ]
        )
    )
    await session.commit()
    response = await client.get(f"{ITEMS}?limit=1000", headers=user_headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 1001
    assert len(body["data"]) == 1000
    assert len({item["id"] for item in body["data"]}) == 1000
    assert {item["owner_id"] for item in body["data"]} == {str(user.id)}


async def test_limit_of_1001_is_refused_naming_the_parameter(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    body = problem(await client.get(f"{ITEMS}?limit=1001", headers=user_headers), 422)
    assert [error["loc"] for error in body["errors"]] == [["query", "limit"]]
    assert body["errors"][0]["type"] == "less_than_equal"
    assert body["detail"].startswith("query.limit: ")
