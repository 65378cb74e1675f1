"""GET /users/ paging: the limit bounds (1..1000), and one stable order that pages split cleanly.

The order is newest account first, ties broken by id descending (service/users/repository.py);
the expectations below are written from that rule and the rows the test inserts.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import insert
from sqlmodel.ext.asyncio.session import AsyncSession

from service.users.models import User
from tests.conftest import problem

USERS = "/api/v1/users/"
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)  # before the superuser fixture's account (made now)


async def insert_users(session: AsyncSession, rows: list[tuple[uuid.UUID, datetime]]) -> None:
    await session.exec(
        insert(User).values(
            [
                {
                    "id": user_id,
                    "email": f"{user_id.hex}@example.com",
                    "hashed_password": "-",
                    "created_at": created_at,
                }
                for user_id, created_at in rows
            ]
        )
    )
    await session.commit()


async def test_limit_of_1000_returns_1000_users(
    client: httpx.AsyncClient, superuser_headers: dict[str, str], session: AsyncSession
) -> None:
    await insert_users(
        session, [(uuid.uuid4(), EPOCH + timedelta(seconds=n)) for n in range(1000)]
    )  # 1001 with the superuser
    response = await client.get(f"{USERS}?limit=1000", headers=superuser_headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] >= 1001
    assert len(body["data"]) == 1000
    assert len({user["id"] for user in body["data"]}) == 1000


async def test_limit_of_1001_is_refused_naming_the_parameter(
    client: httpx.AsyncClient, superuser_headers: dict[str, str]
) -> None:
    body = problem(await client.get(f"{USERS}?limit=1001", headers=superuser_headers), 422)
    assert [error["loc"] for error in body["errors"]] == [["query", "limit"]]
    assert body["errors"][0]["type"] == "less_than_equal"
    assert body["detail"].startswith("query.limit: ")


async def test_users_are_listed_newest_first_ties_by_id_descending(
    client: httpx.AsyncClient, superuser_headers: dict[str, str], session: AsyncSession
) -> None:
    a, b, c, d, e = (uuid.UUID(int=n << 64 | 7) for n in (3, 9, 1, 5, 2))
    # Inserted out of order on purpose: heap order is not the listing order.
    await insert_users(
        session,
        [
            (a, EPOCH + timedelta(days=1)),
            (b, EPOCH + timedelta(days=3)),
            (c, EPOCH + timedelta(days=2)),
            (d, EPOCH + timedelta(days=2)),  # same instant as c: d's larger id comes first
            (e, EPOCH),
        ],
    )
    body = (await client.get(f"{USERS}?limit=1000", headers=superuser_headers)).json()
    mine = [user["id"] for user in body["data"] if uuid.UUID(user["id"]) in {a, b, c, d, e}]
    assert mine == [str(u) for u in (b, d, c, a, e)]


async def test_pages_concatenate_to_the_full_list_without_gaps_or_repeats(
    client: httpx.AsyncClient, superuser_headers: dict[str, str], session: AsyncSession
) -> None:
    same_instant = EPOCH + timedelta(hours=1)  # ties on created_at: only the id orders them
    await insert_users(session, [(uuid.uuid4(), same_instant) for _ in range(7)])
    await insert_users(session, [(uuid.uuid4(), EPOCH + timedelta(minutes=n)) for n in range(4)])
    full = (await client.get(f"{USERS}?limit=1000", headers=superuser_headers)).json()
    assert full["count"] == len(full["data"]) >= 12
    paged: list[str] = []
    for skip in range(0, full["count"] + 3, 3):
        page = (await client.get(f"{USERS}?skip={skip}&limit=3", headers=superuser_headers)).json()
        assert page["count"] == full["count"]
        assert len(page["data"]) == min(3, max(full["count"] - skip, 0))
        paged.extend(user["id"] for user in page["data"])
    assert paged == [user["id"] for user in full["data"]]
    assert len(set(paged)) == len(paged)
