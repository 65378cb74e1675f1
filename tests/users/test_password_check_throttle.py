"""PATCH /users/me/password: wrong current passwords count on the account's login throttle (429
like login, no argon2 once throttled), and no pooled connection waits for argon2.

Against committed data with a small real pool and a real argon2 cost, so a request that held its
connection through argon2 would starve the other user's requests into 503s.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from unittest.mock import AsyncMock

import httpx
import pytest

from service.auth.service import account_key
from tests.auth.live import LOGIN, Live, live_app, live_fixture, own_database_fixture
from tests.conftest import USER_PASSWORD, problem

PASSWORD = "/api/v1/users/me/password"
ACCOUNT_LIMIT = 5
WINDOW_S = 600
FLOOD = 40
THROTTLED = "Too many failed password attempts; try again later"
SETTINGS = {
    "login_max_failures_per_account": ACCOUNT_LIMIT,
    "login_throttle_window_s": WINDOW_S,
    # A real cost (a few tens of ms per hash here), and a pool far smaller than the flood.
    "argon2_memory_kib": 19_456,
    "argon2_time_cost": 2,
    "argon2_parallelism": 1,
    "db_pool_size": 2,
    "db_max_overflow": 0,
    "db_pool_timeout_s": 1.0,
}


database = own_database_fixture("keelson_pwcheck")
live = live_fixture(**SETTINGS)


def spies(monkeypatch: pytest.MonkeyPatch, live: Live) -> dict[str, AsyncMock]:
    """The real PasswordHashing methods, counted (the argon2 work still happens)."""
    found = {}
    for name in ("verify", "verify_dummy", "hash"):
        spy = AsyncMock(wraps=getattr(live.app.state.passwords, name))
        monkeypatch.setattr(live.app.state.passwords, name, spy)
        found[name] = spy
    return found


def wrong(n: int) -> dict[str, str]:
    return {"current_password": f"wrong-password-{n}", "new_password": "brand-new-password-1"}


def assert_throttled(response: httpx.Response) -> None:
    assert problem(response, 429)["detail"] == THROTTLED
    assert 0 < int(response.headers["retry-after"]) <= WINDOW_S
    assert response.headers["ratelimit-policy"] == f'"login-account";q={ACCOUNT_LIMIT};w={WINDOW_S}'
    assert response.headers["ratelimit"].startswith('"login-account";r=0;t=')


async def test_a_flood_of_wrong_current_passwords_is_throttled_without_starving_others(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    guesser = await live.user("guesser@example.com")
    bystander = await live.user("bystander@example.com")
    await live.client.post(
        "/api/v1/items/", headers=live.headers(bystander), json={"title": "mine"}
    )
    counted = spies(monkeypatch, live)
    latencies: list[float] = []
    other_statuses: Counter[int] = Counter()
    flooding = True

    async def bystander_reads() -> None:
        while flooding:
            started = time.perf_counter()
            response = await live.client.get("/api/v1/items/", headers=live.headers(bystander))
            latencies.append(time.perf_counter() - started)
            other_statuses[response.status_code] += 1

    reader = asyncio.create_task(bystander_reads())
    guesses = await asyncio.gather(
        *(
            live.client.patch(PASSWORD, headers=live.headers(guesser), json=wrong(n))
            for n in range(FLOOD)
        )
    )
    flooding = False
    await reader

    statuses = Counter(r.status_code for r in guesses)
    assert statuses == {400: ACCOUNT_LIMIT, 429: FLOOD - ACCOUNT_LIMIT}
    for response in guesses:
        if response.status_code == 429:
            assert_throttled(response)
        else:
            assert problem(response, 400)["detail"] == "Incorrect password"
    # argon2 ran once per attempt under the limit and not once while throttled.
    assert counted["verify"].await_count == ACCOUNT_LIMIT
    assert counted["hash"].await_count == counted["verify_dummy"].await_count == 0
    assert other_statuses.keys() == {200}, other_statuses
    p99 = (
        statistics.quantiles(latencies, n=100, method="inclusive")[98]
        if len(latencies) > 1
        else latencies[0]
    )
    print(
        f"\n[password-check flood] statuses={dict(statuses)} bystander GET /items/: "
        f"n={len(latencies)} p99={p99 * 1000:.1f} ms max={max(latencies) * 1000:.1f} ms"
    )
    failures = await live.scalar(
        "SELECT failures FROM login_throttle WHERE scope = 'account' AND key = :key",
        key=account_key(guesser.email),
    )
    assert failures == FLOOD


async def test_the_right_password_is_refused_while_the_account_is_throttled(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for login: within the window even the right password is a 429, and login is too (it is
    one counter); the stored hash is unchanged."""
    user = await live.user()
    for n in range(ACCOUNT_LIMIT):
        response = await live.client.patch(PASSWORD, headers=live.headers(user), json=wrong(n))
        assert problem(response, 400)["detail"] == "Incorrect password"
    counted = spies(monkeypatch, live)
    right = {"current_password": USER_PASSWORD, "new_password": "brand-new-password-1"}

    assert_throttled(await live.client.patch(PASSWORD, headers=live.headers(user), json=right))
    login = await live.client.post(LOGIN, data={"username": user.email, "password": USER_PASSWORD})

    assert problem(login, 429)["detail"] == "Too many failed login attempts; try again later"
    assert [spy.await_count for spy in counted.values()] == [0, 0, 0]
    stored = await live.scalar("SELECT hashed_password FROM users WHERE id = :id", id=user.id)
    assert stored == user.hashed_password


async def test_a_successful_change_gives_the_account_its_allowance_back(live: Live) -> None:
    user = await live.user()
    for n in range(ACCOUNT_LIMIT - 1):
        await live.client.patch(PASSWORD, headers=live.headers(user), json=wrong(n))
    right = {"current_password": USER_PASSWORD, "new_password": "brand-new-password-1"}

    changed = await live.client.patch(PASSWORD, headers=live.headers(user), json=right)

    assert changed.status_code == 200, changed.text
    assert changed.json() == {"message": "Password updated successfully"}
    counters = await live.scalar(
        "SELECT count(*) FROM login_throttle WHERE scope = 'account' AND key = :key",
        key=account_key(user.email),
    )
    assert counters == 0
    await live.login(user.email, "brand-new-password-1")


async def test_a_password_changed_while_argon2_ran_is_not_overwritten(database: str) -> None:
    """Two changes with the same (right) current password: the second finds the hash it
    checked replaced and is refused, instead of silently overwriting the first."""
    async with live_app(database) as live:  # the default pool: two requests and a lock holder
        await both_changes_race(live)


async def both_changes_race(live: Live) -> None:
    user = await live.user()
    first = {"current_password": USER_PASSWORD, "new_password": "first-new-password-1"}
    second = {"current_password": USER_PASSWORD, "new_password": "second-new-password-1"}
    async with live.holding("SELECT id FROM users WHERE id = :id FOR NO KEY UPDATE", id=user.id):
        changes = [
            asyncio.create_task(live.client.patch(PASSWORD, headers=live.headers(user), json=body))
            for body in (first, second)
        ]
        await live.wait_for_lock_waiters(2, "UPDATE users")
    answers = sorted([(await c).status_code for c in changes])

    assert answers == [200, 400]
    logins = [
        await live.client.post(
            LOGIN, data={"username": user.email, "password": body["new_password"]}
        )
        for body in (first, second)
    ]
    assert sorted(r.status_code for r in logins) == [200, 400]
