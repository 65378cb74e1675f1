"""A refresh racing a revocation (password change, reset, logout, admin password set,
deactivation) never leaves a refresh token issued before the revocation that still works.

Each interleaving is forced: the old token's row (or the user's row) is held locked from a second
connection while the requests queue on it in a chosen order, then released. Afterwards every
refresh token the user ever held is presented, newest first (an older one first would trigger
reuse detection and hide a surviving successor), and not one may answer 200.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from service.auth.service import issue_reset_token
from service.core.digests import sha256_hex as digest
from service.users.models import User
from tests.auth.live import Live, live_fixture, own_database_fixture

NEW_PASSWORD = "brand-new-password-1"
LOCK_TOKEN = "SELECT id FROM refresh_tokens WHERE token_hash = :digest FOR UPDATE"
# NO KEY UPDATE: blocks the revocation's UPDATE users, not the refresh's foreign-key check.
LOCK_USER = "SELECT id FROM users WHERE id = :user_id FOR NO KEY UPDATE"
REFRESH_WAITS_ON = "SELECT refresh_tokens"
REVOCATION_WAITS_ON = ("UPDATE refresh_tokens", "UPDATE users")


database = own_database_fixture("keelson_races")
live = live_fixture()


@dataclass
class Victim:
    user: User
    admin: User
    access: dict[str, str]
    refresh_token: str
    reset_token: str


type Revocation = Callable[[Live, Victim], Coroutine[Any, Any, httpx.Response]]


async def change_password(live: Live, victim: Victim) -> httpx.Response:
    return await live.client.patch(
        "/api/v1/users/me/password",
        headers=victim.access,
        json={"current_password": "user-password-1", "new_password": NEW_PASSWORD},
    )


async def log_out(live: Live, victim: Victim) -> httpx.Response:
    return await live.client.post("/api/v1/logout", headers=victim.access)


async def reset_password(live: Live, victim: Victim) -> httpx.Response:
    return await live.client.post(
        "/api/v1/reset-password/",
        json={"token": victim.reset_token, "new_password": NEW_PASSWORD},
    )


async def admin_sets_password(live: Live, victim: Victim) -> httpx.Response:
    return await live.client.patch(
        f"/api/v1/users/{victim.user.id}",
        headers=live.headers(victim.admin),
        json={"password": NEW_PASSWORD},
    )


async def deactivate(live: Live, victim: Victim) -> httpx.Response:
    return await live.client.patch(
        f"/api/v1/users/{victim.user.id}",
        headers=live.headers(victim.admin),
        json={"is_active": False},
    )


REVOCATIONS: dict[str, Revocation] = {
    "password-change": change_password,
    "logout": log_out,
    "reset": reset_password,
    "admin-password-set": admin_sets_password,
    "deactivation": deactivate,
}


async def victim_of(live: Live) -> Victim:
    user = await live.user()
    admin = await live.user(is_superuser=True)
    tokens = await live.login(user.email)
    async with live.db.sessionmaker() as session:
        reset_token = await issue_reset_token(session, live.app.state.settings, user.id)
        await session.commit()
    return Victim(
        user=user,
        admin=admin,
        access={"Authorization": f"Bearer {tokens['access_token']}"},
        refresh_token=tokens["refresh_token"],
        reset_token=reset_token,
    )


async def blocked_or_done(live: Live, task: asyncio.Task[httpx.Response], waiters: int) -> None:
    """The revocation either queues on the held lock or (when it takes no such lock) finishes."""
    await live.wait_for_lock_waiters(
        waiters, REFRESH_WAITS_ON, *REVOCATION_WAITS_ON, unless_done=task
    )


async def refresh_first(live: Live, victim: Victim, revoke: Revocation) -> list[httpx.Response]:
    """Both queue on the old token's row lock, the refresh first: it rotates as soon as the lock
    is released, while the revocation waits behind it with its snapshot already taken."""
    async with live.holding(LOCK_TOKEN, digest=digest(victim.refresh_token)):
        refreshing = asyncio.create_task(live.refresh(victim.refresh_token))
        await live.wait_for_lock_waiters(1, REFRESH_WAITS_ON)
        revoking = asyncio.create_task(revoke(live, victim))
        await blocked_or_done(live, revoking, 2)
    return [await refreshing, await revoking]


async def revocation_first(live: Live, victim: Victim, revoke: Revocation) -> list[httpx.Response]:
    async with live.holding(LOCK_TOKEN, digest=digest(victim.refresh_token)):
        revoking = asyncio.create_task(revoke(live, victim))
        await blocked_or_done(live, revoking, 1)
        refreshing = asyncio.create_task(live.refresh(victim.refresh_token))
        await live.wait_for_lock_waiters(1, REFRESH_WAITS_ON)
    return [await refreshing, await revoking]


async def refresh_inside_revocation(
    live: Live, victim: Victim, revoke: Revocation
) -> list[httpx.Response]:
    """The revocation is held on the user's row in mid-transaction; a whole refresh runs and
    commits meanwhile, then the revocation completes."""
    async with live.holding(LOCK_USER, user_id=victim.user.id):
        revoking = asyncio.create_task(revoke(live, victim))
        await blocked_or_done(live, revoking, 1)
        refreshed = await live.refresh(victim.refresh_token)
    return [refreshed, await revoking]


INTERLEAVINGS = {
    "refresh-first": refresh_first,
    "revocation-first": revocation_first,
    "refresh-inside-revocation": refresh_inside_revocation,
}


async def surviving_tokens(live: Live, victim: Victim, issued: list[str]) -> int:
    """How many refresh tokens issued before the revocation still refresh, newest first."""
    alive = 0
    for token in reversed(issued):
        if (await live.refresh(token)).status_code == 200:
            alive += 1
    return alive


@pytest.mark.parametrize("interleaving", sorted(INTERLEAVINGS))
@pytest.mark.parametrize("revocation", sorted(REVOCATIONS))
async def test_no_refresh_token_survives_a_racing_revocation(
    live: Live, revocation: str, interleaving: str
) -> None:
    victim = await victim_of(live)
    revoke = REVOCATIONS[revocation]

    refreshed, revoked = await INTERLEAVINGS[interleaving](live, victim, revoke)

    assert revoked.status_code == 200, revoked.text
    assert refreshed.status_code in (200, 401), refreshed.text
    issued = [victim.refresh_token]
    if refreshed.status_code == 200:
        issued.append(refreshed.json()["refresh_token"])
    if revocation == "deactivation":  # coming back must not bring the old sessions back
        back = await live.client.patch(
            f"/api/v1/users/{victim.user.id}",
            headers=live.headers(victim.admin),
            json={"is_active": True},
        )
        assert back.status_code == 200, back.text
    assert await surviving_tokens(live, victim, issued) == 0
    # A sign-in after the revocation is of the new generation and works.
    password = "user-password-1" if revocation in ("logout", "deactivation") else NEW_PASSWORD
    fresh = await live.login(victim.user.email, password)
    assert (await live.refresh(fresh["refresh_token"])).status_code == 200
