"""Item counts come from trigger-kept counters (item_counters) and stay exact on every write path:
the API, plain SQL (bulk inserts, owner changes, TRUNCATE) and ON DELETE CASCADE from users."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from service.items.models import ALL_ITEMS_SCOPE
from service.users.models import User
from tests.items.conftest import Committed

ITEMS = "/api/v1/items/"


async def sql(session: AsyncSession, query: str, **params: Any) -> Any:
    """Run SQL in the test's transaction (the one the app's requests also use)."""
    return await (await session.connection()).execute(text(query), params)


async def counted(session: AsyncSession, scope: uuid.UUID) -> int:
    result = await sql(
        session, "SELECT coalesce(sum(n), 0) FROM item_counters WHERE scope = :s", s=scope
    )
    return int(result.scalar_one())


async def counter_rows(session: AsyncSession, scope: uuid.UUID) -> int:
    result = await sql(session, "SELECT count(*) FROM item_counters WHERE scope = :s", s=scope)
    return int(result.scalar_one())


async def really(session: AsyncSession, owner_id: uuid.UUID | None = None) -> int:
    """count(*) on items: what the counters must agree with."""
    if owner_id is None:
        return int((await sql(session, "SELECT count(*) FROM items")).scalar_one())
    result = await sql(session, "SELECT count(*) FROM items WHERE owner_id = :o", o=owner_id)
    return int(result.scalar_one())


async def bulk_insert(session: AsyncSession, owner_id: uuid.UUID, count: int) -> None:
    await sql(
        session,
        "INSERT INTO items (id, title, owner_id)"
        " SELECT gen_random_uuid(), 'bulk ' || g, :o FROM generate_series(1, :n) AS g",
        o=owner_id,
        n=count,
    )


async def listed_count(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    response = await client.get(ITEMS, headers=headers)
    assert response.status_code == 200, response.text
    count: int = response.json()["count"]
    return count


async def test_count_follows_creates_and_deletes_through_the_api(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    created = [
        (await client.post(ITEMS, headers=user_headers, json={"title": f"t{n}"})).json()
        for n in range(3)
    ]
    assert await listed_count(client, user_headers) == 3
    assert await counted(session, user.id) == 3

    deleted = await client.delete(f"{ITEMS}{created[0]['id']}", headers=user_headers)
    assert deleted.status_code == 200
    assert await listed_count(client, user_headers) == 2
    assert await counted(session, user.id) == await really(session, user.id) == 2


async def test_superuser_count_is_all_items_and_an_owner_count_only_theirs(
    client: httpx.AsyncClient,
    user: User,
    other_user: User,
    user_headers: dict[str, str],
    superuser_headers: dict[str, str],
    session: AsyncSession,
) -> None:
    await bulk_insert(session, user.id, 4)
    await bulk_insert(session, other_user.id, 3)
    assert await listed_count(client, user_headers) == 4
    assert await listed_count(client, superuser_headers) == await really(session)
    assert await counted(session, ALL_ITEMS_SCOPE) == await really(session)


async def test_a_bulk_sql_insert_is_counted_once_per_owner(
    user: User, other_user: User, session: AsyncSession
) -> None:
    await sql(
        session,
        "INSERT INTO items (id, title, owner_id)"
        " SELECT gen_random_uuid(), 'bulk',"
        " CASE WHEN g % 3 = 0 THEN CAST(:b AS uuid) ELSE CAST(:a AS uuid) END"
        " FROM generate_series(1, 3000) AS g",
        a=user.id,
        b=other_user.id,
    )
    assert await counted(session, user.id) == await really(session, user.id) == 2000
    assert await counted(session, other_user.id) == await really(session, other_user.id) == 1000
    assert await counted(session, ALL_ITEMS_SCOPE) == await really(session)
    # One statement in one backend: one upsert into one shard per scope, not a row per item.
    assert await counter_rows(session, user.id) == 1


async def test_moving_items_to_another_owner_moves_their_count(
    user: User, other_user: User, session: AsyncSession
) -> None:
    await bulk_insert(session, user.id, 5)
    total = await counted(session, ALL_ITEMS_SCOPE)
    await sql(
        session,
        "UPDATE items SET owner_id = :to WHERE id IN"
        " (SELECT id FROM items WHERE owner_id = :fr LIMIT 2)",
        to=other_user.id,
        fr=user.id,
    )
    assert (await counted(session, user.id), await counted(session, other_user.id)) == (3, 2)
    assert await counted(session, ALL_ITEMS_SCOPE) == total == await really(session)


async def test_an_update_that_keeps_the_owner_leaves_the_counts_alone(
    user: User, session: AsyncSession
) -> None:
    await bulk_insert(session, user.id, 3)
    before = (await sql(session, "SELECT scope, shard, n FROM item_counters ORDER BY 1, 2")).all()
    await sql(session, "UPDATE items SET title = 'renamed' WHERE owner_id = :o", o=user.id)
    after = (await sql(session, "SELECT scope, shard, n FROM item_counters ORDER BY 1, 2")).all()
    assert after == before


async def test_deleting_a_user_deletes_their_counter_rows(
    client: httpx.AsyncClient,
    user: User,
    other_user: User,
    superuser_headers: dict[str, str],
    session: AsyncSession,
) -> None:
    await bulk_insert(session, user.id, 4)
    await bulk_insert(session, other_user.id, 2)
    # other_user's items all go first, leaving counter rows at n = 0.
    await sql(session, "DELETE FROM items WHERE owner_id = :o", o=other_user.id)
    assert await counter_rows(session, other_user.id) > 0

    for gone in (user, other_user):
        response = await client.delete(f"/api/v1/users/{gone.id}", headers=superuser_headers)
        assert response.status_code == 200, response.text
        assert await really(session, gone.id) == 0
        assert await counter_rows(session, gone.id) == 0
    assert await counted(session, ALL_ITEMS_SCOPE) == await really(session)


async def test_deleting_users_with_plain_sql_cascades_and_keeps_counts_exact(
    user: User, other_user: User, session: AsyncSession
) -> None:
    await bulk_insert(session, user.id, 3)
    await bulk_insert(session, other_user.id, 3)
    await sql(session, "DELETE FROM users WHERE id IN (:a, :b)", a=user.id, b=other_user.id)
    assert await counter_rows(session, user.id) == await counter_rows(session, other_user.id) == 0
    assert await counted(session, ALL_ITEMS_SCOPE) == await really(session)


async def test_truncating_items_resets_the_counts(user: User, session: AsyncSession) -> None:
    await bulk_insert(session, user.id, 3)
    await sql(session, "TRUNCATE items")
    assert await counted(session, user.id) == await counted(session, ALL_ITEMS_SCOPE) == 0


async def test_concurrent_creates_for_one_owner_are_all_counted(committed: Committed) -> None:
    async def create(n: int) -> int:
        response = await committed.client.post(
            ITEMS, headers=committed.headers, json={"title": f"c{n}"}
        )
        return response.status_code

    assert await asyncio.gather(*(create(n) for n in range(20))) == [200] * 20
    listed = await committed.client.get(ITEMS, headers=committed.headers)
    assert listed.json()["count"] == 20
    async with committed.db.sessionmaker() as session:
        assert await counted(session, committed.user.id) == 20
