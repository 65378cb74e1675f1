"""A user deleted while one of its requests runs gets a 401 (its credentials are gone), never a
500: a foreign-key violation (SQLSTATE 23503) is mapped in service.core.db_errors.

The deletion is forced into the middle of the request: a second connection deletes the user and
holds its transaction open, the request reads the (still visible) row, authenticates, and queues
on the deleted row's lock when its insert checks the foreign key; then the deletion commits.
"""

from __future__ import annotations

import asyncio

from service.core.tables import discover_models, metadata
from tests.auth.live import LOGIN, Live, live_fixture, own_database_fixture
from tests.conftest import USER_PASSWORD, problem

DELETE_USER = "DELETE FROM users WHERE id = :id"


database = own_database_fixture("keelson_vanish")
live = live_fixture()


async def test_creating_an_item_while_the_owner_is_deleted_is_401(live: Live) -> None:
    owner = await live.user()
    async with live.holding(DELETE_USER, id=owner.id) as deletion:
        creating = asyncio.create_task(
            live.client.post("/api/v1/items/", headers=live.headers(owner), json={"title": "t"})
        )
        await live.wait_for_lock_waiters(1, "INSERT INTO items")
        await deletion.commit()
    response = await creating

    assert problem(response, 401)["detail"] == "Could not validate credentials"
    assert response.headers["www-authenticate"] == "Bearer"
    assert await live.scalar("SELECT count(*) FROM items") == 0


async def test_a_login_racing_the_deletion_of_its_user_is_401(live: Live) -> None:
    user = await live.user()
    async with live.holding(DELETE_USER, id=user.id) as deletion:
        logging_in = asyncio.create_task(
            live.client.post(LOGIN, data={"username": user.email, "password": USER_PASSWORD})
        )
        await live.wait_for_lock_waiters(1, "INSERT INTO refresh_tokens")
        await deletion.commit()
    response = await logging_in

    assert problem(response, 401)["detail"] == "Could not validate credentials"
    assert "access_token" not in response.text
    assert await live.scalar("SELECT count(*) FROM refresh_tokens") == 0


def test_every_foreign_key_references_the_acting_user() -> None:
    """What makes 23503 -> 401 right: the only row a request refers to by foreign key is its own
    user's. A foreign key to anything else needs its own answer in db_errors first."""
    discover_models()
    targets = {
        (table.name, fk.column.table.name, fk.column.name)
        for table in metadata.tables.values()
        for fk in table.foreign_keys
    }
    assert targets
    assert {(target, column) for _, target, column in targets} == {("users", "id")}
