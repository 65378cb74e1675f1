"""At least one active superuser always remains: no self-demotion or self-deactivation, and two
superusers removing each other at once cannot both succeed (forced through the advisory lock)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.users import repository
from service.users.models import User
from tests.auth.live import Live, live_fixture, own_database_fixture
from tests.conftest import problem

# service.users.repository.SUPERUSERS_LOCK_KEY, written out so the race below also runs (and
# fails) against code that has no such lock.
SUPERUSERS_LOCK_KEY = 0x6B65656C2D7375


async def stored(session: AsyncSession, user: User) -> tuple[bool, bool]:
    result = await session.exec(
        select(User.is_superuser, User.is_active)
        .where(User.id == user.id)
        .execution_options(populate_existing=True)
    )
    superuser, active = result.one()
    return superuser, active


@pytest.mark.parametrize("change", [{"is_superuser": False}, {"is_active": False}])
async def test_a_superuser_cannot_demote_or_deactivate_itself(
    client: httpx.AsyncClient,
    superuser: User,
    superuser_headers: dict[str, str],
    session: AsyncSession,
    change: dict[str, bool],
) -> None:
    response = await client.patch(
        f"/api/v1/users/{superuser.id}", headers=superuser_headers, json=change
    )

    body = problem(response, 403)
    assert body["detail"] == "Super users are not allowed to demote or deactivate themselves"
    assert await stored(session, superuser) == (True, True)


async def test_a_superuser_may_still_rename_itself(
    client: httpx.AsyncClient, superuser: User, superuser_headers: dict[str, str]
) -> None:
    response = await client.patch(
        f"/api/v1/users/{superuser.id}",
        headers=superuser_headers,
        json={"full_name": "Root", "is_superuser": True, "is_active": True},
    )
    assert response.status_code == 200, response.text
    assert response.json()["full_name"] == "Root"


async def test_a_superuser_may_demote_another_superuser(
    client: httpx.AsyncClient,
    superuser_headers: dict[str, str],
    make_user: Any,
    session: AsyncSession,
) -> None:
    other = await make_user("other-admin@example.com", is_superuser=True)
    response = await client.patch(
        f"/api/v1/users/{other.id}", headers=superuser_headers, json={"is_superuser": False}
    )
    assert response.status_code == 200, response.text
    assert response.json()["is_superuser"] is False
    assert await stored(session, other) == (False, True)


# -- two superusers removing each other (committed data, a real pool)


database = own_database_fixture("keelson_superusers")
live = live_fixture()


async def remove(live: Live, actor: User, target: User, how: str) -> httpx.Response:
    path, headers = f"/api/v1/users/{target.id}", live.headers(actor)
    if how == "delete":
        return await live.client.delete(path, headers=headers)
    field = "is_superuser" if how == "demote" else "is_active"
    return await live.client.patch(path, headers=headers, json={field: False})


@pytest.mark.parametrize("how", ["delete", "demote", "deactivate"])
async def test_two_superusers_removing_each_other_leave_one(live: Live, how: str) -> None:
    ann = await live.user("ann@example.com", is_superuser=True)
    ben = await live.user("ben@example.com", is_superuser=True)
    async with live.holding("SELECT pg_advisory_xact_lock(:key)", key=SUPERUSERS_LOCK_KEY):
        both = asyncio.gather(remove(live, ann, ben, how), remove(live, ben, ann, how))
        await live.wait_for_lock_waiters(2, "SELECT pg_advisory_xact_lock", unless_done=both)
    answers = await both

    active_superusers = await live.scalar(
        "SELECT count(*) FROM users WHERE is_superuser AND is_active"
    )
    assert active_superusers == 1
    assert sorted(r.status_code for r in answers) == [200, 409]
    [refused] = [r for r in answers if r.status_code == 409]
    assert problem(refused, 409)["detail"] == (
        "This would leave no active superuser; promote another one first"
    )
    assert repository.SUPERUSERS_LOCK_KEY == SUPERUSERS_LOCK_KEY
