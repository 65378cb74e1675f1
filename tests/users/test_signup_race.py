"""Two sign-ups for one address at once: the unique email index decides, whatever the
interleaving, and the one that loses gets the same 409 as a plain duplicate (forced: the other
insert is held uncommitted on a second connection while the request runs)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.auth.live import Live, live_fixture, own_database_fixture
from tests.conftest import problem

database = own_database_fixture("keelson_signup_race")
live = live_fixture()

SIGNUP = "/api/v1/users/signup"
# The other sign-up's row, as the service stores it (a normalised address, a hash, created now).
OTHER_INSERT = (
    "INSERT INTO users (id, email, hashed_password, is_active, is_superuser, created_at)"
    " VALUES (:id, 'carol@example.com', '-', true, false, now())"
)


@pytest.mark.parametrize("other_commits", [True, False])
async def test_a_sign_up_racing_another_for_its_address_waits_for_it(
    live: Live, other_commits: bool
) -> None:
    other_id = uuid.uuid4()
    async with live.holding(OTHER_INSERT, id=other_id) as other:
        signup = asyncio.ensure_future(
            live.client.post(
                SIGNUP, json={"email": "Carol@Example.com", "password": "long-enough-pass"}
            )
        )
        # The request's INSERT waits on the unique index for the other transaction's outcome.
        await live.wait_for_lock_waiters(1, "INSERT INTO users", unless_done=signup)
        assert not signup.done()
        if other_commits:
            await other.commit()
    response = await signup

    stored = await live.scalar(
        "SELECT count(*) FROM users WHERE lower(email) = 'carol@example.com'"
    )
    assert stored == 1
    if other_commits:
        assert problem(response, 409)["detail"] == (
            "The user with this email already exists in the system"
        )
        assert await live.scalar("SELECT id FROM users") == other_id
    else:  # the other one rolled back: the address was free after all
        assert response.status_code == 200, response.text
        assert response.json()["email"] == "carol@example.com"
        assert await live.scalar("SELECT id FROM users") == uuid.UUID(response.json()["id"])
