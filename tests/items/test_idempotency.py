"""POST /items/ with an Idempotency-Key: a retry gets the first answer and creates nothing new."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, update
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.idempotency import repository
from service.idempotency import service as idempotency
from service.idempotency.models import IdempotencyKey
from service.items import routes as items_routes
from service.items.models import Item
from service.items.schemas import ItemCreate
from service.users.models import User
from tests.conftest import bearer, problem
from tests.items.conftest import Committed, wait_until_blocked_on_lock

ITEMS = "/api/v1/items/"
REPLAYED = "idempotent-replayed"


def keyed(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


async def items_of(session: AsyncSession, owner_id: uuid.UUID) -> list[Item]:
    query = (
        select(Item)
        .where(col(Item.owner_id) == owner_id)
        .order_by(col(Item.created_at))
        .execution_options(populate_existing=True)
    )
    return list((await session.exec(query)).all())


async def stored_key(session: AsyncSession, user_id: uuid.UUID, key: str) -> IdempotencyKey | None:
    query = (
        select(IdempotencyKey)
        .where(col(IdempotencyKey.user_id) == user_id, col(IdempotencyKey.key) == key)
        .execution_options(populate_existing=True)
    )
    return (await session.exec(query)).first()


async def key_count(session: AsyncSession) -> int:
    return (await session.exec(select(func.count()).select_from(IdempotencyKey))).one()


async def test_retry_with_same_key_and_body_returns_the_first_answer_and_creates_nothing(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    payload = {"title": "Milk", "description": "2 l"}
    first = await client.post(ITEMS, headers=keyed(user_headers, "order-1"), json=payload)
    assert first.status_code == 200
    assert REPLAYED not in first.headers
    retry = await client.post(ITEMS, headers=keyed(user_headers, "order-1"), json=payload)
    assert retry.status_code == 200
    assert retry.headers[REPLAYED] == "true"
    assert retry.json() == first.json()
    assert retry.headers["etag"] == first.headers["etag"]

    [item] = await items_of(session, user.id)
    assert str(item.id) == first.json()["id"]
    key = await stored_key(session, user.id, "order-1")
    assert key is not None
    assert (key.response_status, key.response_body) == (200, first.json())
    assert key.expires_at > key.created_at


async def test_same_key_with_a_different_body_is_422_and_stores_nothing(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    first = await client.post(ITEMS, headers=keyed(user_headers, "k"), json={"title": "Milk"})
    assert first.status_code == 200
    other = await client.post(ITEMS, headers=keyed(user_headers, "k"), json={"title": "Eggs"})
    body = problem(other, 422)
    assert body["detail"] == "Idempotency-Key reused with a different request"
    assert REPLAYED not in other.headers

    assert [item.title for item in await items_of(session, user.id)] == ["Milk"]
    key = await stored_key(session, user.id, "k")
    assert key is not None
    assert key.response_body == first.json()


async def test_same_meaning_in_other_json_spelling_is_a_retry(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    """The fingerprint is taken from the validated body: key order, spacing and a spelled-out
    default do not make a different request."""
    first = await client.post(ITEMS, headers=keyed(user_headers, "k"), json={"title": "Milk"})
    retry = await client.post(
        ITEMS,
        headers={**keyed(user_headers, "k"), "Content-Type": "application/json"},
        content=b'{ "description" : null,  "title":"Milk" }',
    )
    assert retry.status_code == 200
    assert retry.headers[REPLAYED] == "true"
    assert retry.json() == first.json()
    assert len(await items_of(session, user.id)) == 1


async def test_keys_are_per_user(
    client: httpx.AsyncClient,
    app: FastAPI,
    user: User,
    other_user: User,
    user_headers: dict[str, str],
    session: AsyncSession,
) -> None:
    mine = await client.post(ITEMS, headers=keyed(user_headers, "k"), json={"title": "Milk"})
    theirs = await client.post(
        ITEMS, headers=keyed(bearer(app, other_user), "k"), json={"title": "Milk"}
    )
    assert (mine.status_code, theirs.status_code) == (200, 200)
    assert REPLAYED not in theirs.headers
    assert mine.json()["id"] != theirs.json()["id"]
    assert theirs.json()["owner_id"] == str(other_user.id)
    assert [str(i.id) for i in await items_of(session, user.id)] == [mine.json()["id"]]
    assert [str(i.id) for i in await items_of(session, other_user.id)] == [theirs.json()["id"]]


async def test_an_expired_key_can_be_used_again(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    first = await client.post(ITEMS, headers=keyed(user_headers, "k"), json={"title": "Milk"})
    await session.exec(
        update(IdempotencyKey)
        .where(col(IdempotencyKey.user_id) == user.id)
        .values(expires_at=func.now() - timedelta(seconds=1))
    )
    await session.commit()

    again = await client.post(ITEMS, headers=keyed(user_headers, "k"), json={"title": "Eggs"})
    assert again.status_code == 200
    assert REPLAYED not in again.headers
    assert again.json()["id"] != first.json()["id"]
    assert [item.title for item in await items_of(session, user.id)] == ["Milk", "Eggs"]
    key = await stored_key(session, user.id, "k")
    assert key is not None
    assert key.response_body == again.json()
    assert key.expires_at > datetime.now(UTC) + timedelta(hours=23)


@pytest.mark.parametrize(
    "raw",
    [b"", b"k" * 256, b"caf\xc3\xa9", b"tab\there", b"bell\x07"],
    ids=["empty", "too-long", "non-ascii", "tab", "control"],
)
async def test_an_invalid_key_is_400_and_creates_nothing(
    client: httpx.AsyncClient,
    user: User,
    user_headers: dict[str, str],
    session: AsyncSession,
    raw: bytes,
) -> None:
    headers: list[tuple[bytes, bytes]] = [(k.encode(), v.encode()) for k, v in user_headers.items()]
    response = await client.post(
        ITEMS, headers=[*headers, (b"Idempotency-Key", raw)], json={"title": "Milk"}
    )
    body = problem(response, 400)
    assert body["detail"] == "Idempotency-Key must be 1 to 255 printable ASCII characters"
    assert await items_of(session, user.id) == []
    assert await key_count(session) == 0


async def test_the_longest_key_and_inner_spaces_are_accepted(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    for key in ("k" * 255, "order 42 / try #1 ~!"):
        response = await client.post(ITEMS, headers=keyed(user_headers, key), json={"title": "t"})
        assert response.status_code == 200, response.text
        assert await stored_key(session, user.id, key) is not None
    assert len(await items_of(session, user.id)) == 2


async def test_without_a_key_every_post_creates_an_item(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    responses = [
        await client.post(ITEMS, headers=user_headers, json={"title": "Milk"}) for _ in range(2)
    ]
    assert [r.status_code for r in responses] == [200, 200]
    assert all(REPLAYED not in r.headers for r in responses)
    assert len(await items_of(session, user.id)) == 2
    assert await key_count(session) == 0


async def test_a_rejected_first_attempt_does_not_use_up_the_key(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    """Key, item and answer commit together: a request that fails leaves the key free."""
    invalid = await client.post(ITEMS, headers=keyed(user_headers, "k"), json={"title": ""})
    problem(invalid, 422)
    unstorable = await client.post(
        ITEMS, headers=keyed(user_headers, "k"), json={"title": "nul \x00 inside"}
    )
    problem(unstorable, 400)  # PostgreSQL refuses NUL in text: the transaction rolls back
    assert await key_count(session) == 0

    fixed = await client.post(ITEMS, headers=keyed(user_headers, "k"), json={"title": "Milk"})
    assert fixed.status_code == 200
    assert REPLAYED not in fixed.headers
    assert [item.title for item in await items_of(session, user.id)] == ["Milk"]


async def test_a_key_without_a_stored_answer_is_409_with_retry_after(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    """Committed rows always carry their answer; if one ever did not, nothing is created."""
    payload = ItemCreate(title="Milk").model_dump(mode="json")
    session.add(
        IdempotencyKey(
            user_id=user.id,
            key="k",
            request_fingerprint=idempotency.fingerprint(items_routes.CREATE_OPERATION, payload),
            created_at=datetime.now(UTC),
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
    )
    await session.commit()
    response = await client.post(ITEMS, headers=keyed(user_headers, "k"), json={"title": "Milk"})
    problem(response, 409)
    assert response.headers["retry-after"] == "1"
    assert await items_of(session, user.id) == []


async def test_deleting_a_user_deletes_their_keys(
    client: httpx.AsyncClient,
    app: FastAPI,
    user: User,
    other_user: User,
    user_headers: dict[str, str],
    session: AsyncSession,
) -> None:
    await client.post(ITEMS, headers=keyed(user_headers, "k"), json={"title": "Milk"})
    await client.post(ITEMS, headers=keyed(bearer(app, other_user), "k"), json={"title": "Milk"})
    await session.exec(delete(User).where(col(User.id) == user.id))
    await session.commit()
    assert await stored_key(session, user.id, "k") is None
    assert await stored_key(session, other_user.id, "k") is not None


async def test_purge_deletes_only_expired_keys(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    for key in ("old-1", "old-2", "live"):
        await client.post(ITEMS, headers=keyed(user_headers, key), json={"title": key})
    await session.exec(
        update(IdempotencyKey)
        .where(col(IdempotencyKey.key).like("old-%"))
        .values(expires_at=func.now() - timedelta(seconds=1))
    )
    assert await idempotency.purge_expired_keys(session, batch_size=1) == 1
    assert await idempotency.purge_expired_keys(session) == 1
    assert await idempotency.purge_expired_keys(session) == 0
    await session.commit()
    keys = (await session.exec(select(IdempotencyKey.key))).all()
    assert keys == ["live"]
    assert len(await items_of(session, user.id)) == 3  # purging keys never touches items


async def test_the_repository_stores_the_body_as_a_json_object_and_reads_it_back(
    user: User, session: AsyncSession
) -> None:
    """The named statements write the body as JSON text into jsonb (the connection's codec),
    never a JSON string holding JSON; no answer yet is SQL NULL; a body SQLAlchemy's serializer
    stored reads back the same."""
    body: dict[str, Any] = {
        "title": "Caf\u00e9 \u2615 \u65e5\u672c \U0001f95b",
        "looks_like_json": '{"not": "decoded"}',
        "count": 42,
        "big": 2**53 + 1,
        "price": 12.5,
        "negative": -7,
        "flag": True,
        "nothing": None,
        "nested": {"a": {"b": [1, "two", None]}},
        "list": [1, 2.5, "x", {"k": "v"}, []],
    }
    column = col(IdempotencyKey.response_body)

    async def stored_types() -> tuple[Any, ...]:
        query = select(
            func.jsonb_typeof(column),
            func.jsonb_typeof(column["nested"]),
            func.jsonb_typeof(column["list"]),
            column["title"].astext,
        ).where(col(IdempotencyKey.user_id) == user.id, col(IdempotencyKey.key) == "k")
        return tuple((await session.exec(query)).one())

    assert await repository.claim_key(
        session, user_id=user.id, key="k", fingerprint="f" * 64, ttl_s=60
    )
    assert await repository.get_key(session, user_id=user.id, key="other") is None
    claimed = await repository.get_key(session, user_id=user.id, key="k")
    assert claimed == repository.StoredKey("f" * 64, None, None)
    assert await stored_types() == (None, None, None, None)  # SQL NULL, not JSON null

    await repository.store_response(session, user_id=user.id, key="k", status=201, body=body)
    stored = await repository.get_key(session, user_id=user.id, key="k")
    assert stored == repository.StoredKey("f" * 64, 201, body)
    assert stored is not None
    assert stored.response_body is not None
    assert type(stored.response_body["big"]) is int
    assert await stored_types() == ("object", "object", "array", body["title"])

    # As the ORM stored bodies before the named statements (SQLAlchemy's JSON serializer).
    older = {**body, "title": "older \u00e9"}
    await session.exec(
        update(IdempotencyKey)
        .where(col(IdempotencyKey.user_id) == user.id, col(IdempotencyKey.key) == "k")
        .values(response_body=older)
    )
    assert await repository.get_key(session, user_id=user.id, key="k") == repository.StoredKey(
        "f" * 64, 201, older
    )


# -- two real transactions (own pool on the committed test database) ---------------------------


async def committed_items(committed: Committed) -> list[Item]:
    async with committed.db.sessionmaker() as session:
        return await items_of(session, committed.user.id)


async def test_concurrent_requests_with_one_key_create_one_item(committed: Committed) -> None:
    headers = keyed(committed.headers, "burst")

    async def post() -> httpx.Response:
        return await committed.client.post(ITEMS, headers=headers, json={"title": "Milk"})

    responses = await asyncio.gather(*(post() for _ in range(6)))
    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sorted(r.headers.get(REPLAYED, "-") for r in responses) == ["-"] + ["true"] * 5
    [item] = await committed_items(committed)
    assert str(item.id) == responses[0].json()["id"]


async def first_attempt_in_flight(committed: Committed, session: AsyncSession) -> dict[str, Any]:
    """Run the first request's work in `session` without committing; return its answer body."""
    answer = await items_routes.create_item_once(
        session,
        committed.user,  # type: ignore[arg-type]
        ItemCreate(title="Milk"),
        key="k",
        ttl_s=3600,
    )
    assert not answer.replayed
    return answer.body


async def test_a_retry_waits_for_the_first_request_and_replays_its_answer(
    committed: Committed,
) -> None:
    async with committed.db.sessionmaker() as first:
        first_body = await first_attempt_in_flight(committed, first)
        retry = asyncio.create_task(
            committed.client.post(
                ITEMS, headers=keyed(committed.headers, "k"), json={"title": "Milk"}
            )
        )
        await wait_until_blocked_on_lock(committed.db, "INSERT INTO idempotency_keys")
        assert not retry.done()
        await first.commit()
    response = await asyncio.wait_for(retry, timeout=5)
    assert response.status_code == 200
    assert response.headers[REPLAYED] == "true"
    assert response.json() == first_body
    [item] = await committed_items(committed)
    assert str(item.id) == first_body["id"]


async def test_a_retry_that_waited_on_a_rolled_back_request_creates_the_item(
    committed: Committed,
) -> None:
    async with committed.db.sessionmaker() as first:
        await first_attempt_in_flight(committed, first)
        retry = asyncio.create_task(
            committed.client.post(
                ITEMS, headers=keyed(committed.headers, "k"), json={"title": "Milk"}
            )
        )
        await wait_until_blocked_on_lock(committed.db, "INSERT INTO idempotency_keys")
        await first.rollback()
    response = await asyncio.wait_for(retry, timeout=5)
    assert response.status_code == 200
    assert REPLAYED not in response.headers
    [item] = await committed_items(committed)
    assert str(item.id) == response.json()["id"]
