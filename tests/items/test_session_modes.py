"""The real app on a real pool: reads run in autocommit (no BEGIN), writes in one transaction.

The savepoint harness runs every request inside one outer transaction, so it cannot show this;
here each statement's driver connection says whether a transaction was open when it ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from tests.items.conftest import Committed

ITEMS = "/api/v1/items/"


@contextmanager
def statements_seen(committed: Committed) -> Iterator[list[tuple[str, bool]]]:
    """(first word of each statement, whether its connection was inside a transaction)."""
    seen: list[tuple[str, bool]] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        driver = conn.connection.driver_connection  # the asyncpg connection
        seen.append((statement.split(None, 1)[0].upper(), driver.is_in_transaction()))

    engine = committed.db.engine.sync_engine
    event.listen(engine, "after_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "after_cursor_execute", record)


async def test_get_users_me_and_the_items_list_send_no_begin(committed: Committed) -> None:
    created = await committed.client.post(ITEMS, headers=committed.headers, json={"title": "a"})
    assert created.status_code == 200
    with statements_seen(committed) as seen:
        me = await committed.client.get("/api/v1/users/me", headers=committed.headers)
        listed = await committed.client.get(ITEMS, headers=committed.headers)
        read = await committed.client.get(
            f"{ITEMS}{created.json()['id']}", headers=committed.headers
        )
    assert me.status_code == listed.status_code == read.status_code == 200
    assert listed.json()["count"] == 1
    # me: the user lookup; list: the lookup and the page; read: the lookup and the item.
    assert seen == [("SELECT", False)] * 5


async def test_post_items_runs_in_one_transaction(committed: Committed) -> None:
    with statements_seen(committed) as seen:
        created = await committed.client.post(ITEMS, headers=committed.headers, json={"title": "b"})
    assert created.status_code == 200
    assert seen == [("SELECT", True), ("INSERT", True)]
    listed = await committed.client.get(ITEMS, headers=committed.headers)
    assert [item["title"] for item in listed.json()["data"]] == ["b"]  # committed
