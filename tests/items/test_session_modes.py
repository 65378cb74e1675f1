"""The real app on a real pool: reads run in autocommit (no BEGIN), writes in one transaction.

The savepoint harness runs every request inside one outer transaction, so it cannot show this;
here asyncpg's query logger on every pooled connection records what each one sent, BEGIN and
COMMIT included (the request path's statements run on the driver, below SQLAlchemy's events).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import event

from tests.items.conftest import Committed

ITEMS = "/api/v1/items/"


@asynccontextmanager
async def statements_seen(committed: Committed) -> AsyncIterator[list[str]]:
    """The first word of each statement the pooled connections sent, in order."""
    seen: list[str] = []
    logged: list[asyncpg.Connection] = []

    def record(query: asyncpg.connection.LoggedQuery) -> None:
        seen.append(query.query.split(None, 1)[0].rstrip(";").upper())

    def on_checkout(dbapi_connection: Any, *_: Any) -> None:
        driver: asyncpg.Connection = dbapi_connection.driver_connection
        driver.add_query_logger(record)
        logged.append(driver)

    engine = committed.db.engine.sync_engine
    event.listen(engine, "checkout", on_checkout)
    try:
        yield seen
        await asyncio.sleep(0)  # asyncpg hands each record to its logger with call_soon
    finally:
        event.remove(engine, "checkout", on_checkout)
        for driver in logged:
            driver.remove_query_logger(record)


async def test_get_users_me_and_the_items_list_send_no_begin(committed: Committed) -> None:
    created = await committed.client.post(ITEMS, headers=committed.headers, json={"title": "a"})
    assert created.status_code == 200
    async with statements_seen(committed) as seen:
        me = await committed.client.get("/api/v1/users/me", headers=committed.headers)
        listed = await committed.client.get(ITEMS, headers=committed.headers)
        read = await committed.client.get(
            f"{ITEMS}{created.json()['id']}", headers=committed.headers
        )
    assert me.status_code == listed.status_code == read.status_code == 200
    assert listed.json()["count"] == 1
    # me: the user lookup; list: the lookup and the page; read: the lookup and the item.
    assert seen == ["SELECT"] * 5


async def test_post_items_is_the_lookup_and_one_insert_that_is_its_own_transaction(
    committed: Committed,
) -> None:
    async with statements_seen(committed) as seen:
        created = await committed.client.post(ITEMS, headers=committed.headers, json={"title": "b"})
    assert created.status_code == 200
    # The user lookup is a plain read (no BEGIN before it), and the INSERT the whole write
    # (execute_standalone): two round trips, where BEGIN/SELECT/INSERT/COMMIT were four.
    assert seen == ["SELECT", "INSERT"]
    listed = await committed.client.get(ITEMS, headers=committed.headers)
    assert [item["title"] for item in listed.json()["data"]] == ["b"]  # committed


async def test_writes_of_several_statements_still_run_in_one_transaction(
    committed: Committed,
) -> None:
    """With an Idempotency-Key the key, the item and the stored answer commit together; an
    update locks the row, then writes it. BEGIN comes after the user lookup, before the first
    statement that is part of the write."""
    async with statements_seen(committed) as seen:
        created = await committed.client.post(
            ITEMS,
            headers={**committed.headers, "Idempotency-Key": "session-modes-1"},
            json={"title": "c"},
        )
    assert created.status_code == 200
    assert seen[:2] == ["SELECT", "BEGIN"]
    assert seen[-1] == "COMMIT"
    assert seen.count("BEGIN") == 1
    assert seen.count("COMMIT") == 1
    assert "INSERT" in seen[2:-1]

    async with statements_seen(committed) as seen:
        updated = await committed.client.put(
            f"{ITEMS}{created.json()['id']}", headers=committed.headers, json={"title": "d"}
        )
    assert updated.status_code == 200
    assert seen == ["SELECT", "BEGIN", "SELECT", "UPDATE", "COMMIT"]
