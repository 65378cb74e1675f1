"""Login throttling: per account and per client, shared through PostgreSQL, 429 with the IETF
draft RateLimit fields, and not one argon2 computation spent on a throttled attempt."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any
from unittest.mock import AsyncMock

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.auth import repository
from service.auth.models import LoginThrottle
from service.auth.service import account_key, issue_reset_token
from service.core.db import session_factory
from service.users.models import User
from tests.conftest import USER_PASSWORD, UserFactory, problem
from tests.support.clients import asgi_client
from tests.support.smtp import ClientFactory

LOGIN = "/api/v1/login/access-token"
ACCOUNT_LIMIT = 3
IP_LIMIT = 5
WINDOW_S = 600
LIMITS: dict[str, Any] = {
    "login_max_failures_per_account": ACCOUNT_LIMIT,
    "login_max_failures_per_ip": IP_LIMIT,
    "login_throttle_window_s": WINDOW_S,
}
THROTTLED = "Too many failed login attempts; try again later"


async def attempt(
    client: httpx.AsyncClient, email: str, password: str, **headers: str
) -> httpx.Response:
    return await client.post(LOGIN, data={"username": email, "password": password}, headers=headers)


async def fail(client: httpx.AsyncClient, email: str, times: int, **headers: str) -> None:
    for _ in range(times):
        response = await attempt(client, email, "wrong-password-1", **headers)
        assert problem(response, 400)["detail"] == "Incorrect email or password"


def throttled(response: httpx.Response) -> dict[str, Any]:
    body = problem(response, 429)
    assert body["detail"] == THROTTLED
    assert body["instance"] == LOGIN
    assert "access_token" not in response.text
    return body


def rate_limit(response: httpx.Response) -> dict[str, dict[str, int]]:
    """RateLimit or RateLimit-Policy parsed: {"login-ip": {"q": 5, "w": 600}, ...}."""
    parsed: dict[str, dict[str, int]] = {}
    for item in response.headers["ratelimit"].split(","):
        name, *params = item.strip().split(";")
        parsed[name.strip('"')] = {k: int(v) for k, v in (p.split("=") for p in params)}
    return parsed


def throttled_count() -> float:
    sample = REGISTRY.get_sample_value("keelson_login_attempts_total", {"outcome": "throttled"})
    return sample or 0.0


def spy_on(monkeypatch: pytest.MonkeyPatch, app: FastAPI, method: str) -> AsyncMock:
    """Wraps the real PasswordHashing method: the real argon2 work still happens when called."""
    spy = AsyncMock(wraps=getattr(app.state.passwords, method))
    monkeypatch.setattr(app.state.passwords, method, spy)
    return spy


async def counter(session: AsyncSession, scope: str, key: str) -> LoginThrottle | None:
    result = await session.exec(
        select(LoginThrottle)
        .where(LoginThrottle.scope == scope, LoginThrottle.key == key)
        .execution_options(populate_existing=True)
    )
    return result.first()


@pytest.fixture
async def limited(client_with: ClientFactory) -> tuple[FastAPI, httpx.AsyncClient]:
    return await client_with(**LIMITS)


# -- per account


async def test_account_is_throttled_after_its_failures(
    limited: tuple[FastAPI, httpx.AsyncClient], user: User, session: AsyncSession
) -> None:
    _, client = limited
    await fail(client, user.email, ACCOUNT_LIMIT)

    response = await attempt(client, user.email, USER_PASSWORD)  # even the right password

    throttled(response)
    assert 0 < int(response.headers["retry-after"]) <= WINDOW_S
    assert response.headers["ratelimit-policy"] == (
        f'"login-account";q={ACCOUNT_LIMIT};w={WINDOW_S}, "login-ip";q={IP_LIMIT};w={WINDOW_S}'
    )
    current = rate_limit(response)
    assert current["login-account"]["r"] == 0
    assert current["login-account"]["t"] == int(response.headers["retry-after"])
    assert current["login-ip"]["r"] == IP_LIMIT - (ACCOUNT_LIMIT + 1)
    stored = await counter(session, "account", account_key(user.email))
    assert stored is not None
    assert stored.failures == ACCOUNT_LIMIT + 1


async def test_throttled_attempts_never_run_argon2(
    limited: tuple[FastAPI, httpx.AsyncClient],
    user: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The figure the issue asks for: argon2 calls made while throttled = 0."""
    app, client = limited
    await fail(client, user.email, ACCOUNT_LIMIT)
    spies = [spy_on(monkeypatch, app, name) for name in ("verify", "verify_dummy", "hash")]
    before = throttled_count()

    for password in [USER_PASSWORD, "wrong-password-1", "p" * 128] * 4:
        throttled(await attempt(client, user.email, password))

    assert throttled_count() - before == 12
    assert [spy.await_count for spy in spies] == [0, 0, 0]


async def test_unknown_email_is_throttled_exactly_like_a_real_one(
    limited: tuple[FastAPI, httpx.AsyncClient], user: User
) -> None:
    """Counters exist per email whether or not an account does: nothing to enumerate."""
    app, _ = limited
    answers = []
    for peer, email in (("192.0.2.1", user.email), ("192.0.2.2", "nobody@example.com")):
        async with client_from(app, peer) as client:
            await fail(client, email, ACCOUNT_LIMIT)
            answers.append(await attempt(client, email, "wrong-password-1"))
    real, unknown = answers
    assert throttled(real) == throttled(unknown) | {"instance": LOGIN}
    assert rate_limit(real)["login-account"]["r"] == rate_limit(unknown)["login-account"]["r"] == 0


async def test_success_resets_the_account_counter(
    limited: tuple[FastAPI, httpx.AsyncClient], user: User, session: AsyncSession
) -> None:
    _, client = limited
    await fail(client, user.email, ACCOUNT_LIMIT - 1)
    assert (await attempt(client, user.email, USER_PASSWORD)).status_code == 200
    assert await counter(session, "account", account_key(user.email)) is None

    await fail(client, user.email, ACCOUNT_LIMIT - 1)  # a fresh allowance, not the leftover
    stored = await counter(session, "account", account_key(user.email))
    assert stored is not None
    assert stored.failures == ACCOUNT_LIMIT - 1


async def test_email_case_and_spaces_share_one_account_counter(
    limited: tuple[FastAPI, httpx.AsyncClient], user: User
) -> None:
    _, client = limited
    for email in ("alice@example.com", "ALICE@example.com", " Alice@Example.COM "):
        await attempt(client, email, "wrong-password-1")
    throttled(await attempt(client, "alice@EXAMPLE.com", USER_PASSWORD))


async def test_another_account_is_not_locked_by_my_failures(
    limited: tuple[FastAPI, httpx.AsyncClient], user: User, other_user: User
) -> None:
    _, client = limited
    await fail(client, user.email, ACCOUNT_LIMIT)
    assert (await attempt(client, other_user.email, USER_PASSWORD)).status_code == 200


async def test_the_window_ends_and_attempts_are_allowed_again(
    limited: tuple[FastAPI, httpx.AsyncClient], user: User, session: AsyncSession
) -> None:
    _, client = limited
    await fail(client, user.email, ACCOUNT_LIMIT)
    throttled(await attempt(client, user.email, USER_PASSWORD))
    await session.exec(  # type: ignore[call-overload]
        text(
            "UPDATE login_throttle"
            " SET window_started_at = window_started_at - make_interval(secs => :window_s)"
        ).bindparams(window_s=WINDOW_S)
    )
    await session.commit()
    assert (await attempt(client, user.email, USER_PASSWORD)).status_code == 200


async def test_a_password_reset_gives_the_account_its_allowance_back(
    limited: tuple[FastAPI, httpx.AsyncClient], user: User, session: AsyncSession
) -> None:
    app, client = limited
    await fail(client, user.email, ACCOUNT_LIMIT)
    token = await issue_reset_token(session, app.state.settings, user.id)
    await session.commit()
    reset = await client.post(
        "/api/v1/reset-password/", json={"token": token, "new_password": "brand-new-password-1"}
    )
    assert reset.status_code == 200
    assert await counter(session, "account", account_key(user.email)) is None
    assert (await attempt(client, user.email, "brand-new-password-1")).status_code == 200


# -- per client


async def test_one_client_is_throttled_across_accounts(
    limited: tuple[FastAPI, httpx.AsyncClient], user: User, session: AsyncSession
) -> None:
    _, client = limited
    for n in range(IP_LIMIT):
        await fail(client, f"guess{n}@example.com", 1)

    response = await attempt(client, user.email, USER_PASSWORD)

    throttled(response)
    assert rate_limit(response)["login-ip"]["r"] == 0
    assert rate_limit(response)["login-account"]["r"] == ACCOUNT_LIMIT - 1
    stored = await counter(session, "ip", "127.0.0.1")
    assert stored is not None
    assert stored.failures == IP_LIMIT + 1


async def test_success_takes_back_its_own_attempt_but_not_the_failures(
    limited: tuple[FastAPI, httpx.AsyncClient], user: User, session: AsyncSession
) -> None:
    """A valid account cannot launder a client's failures by logging in between guesses."""
    _, client = limited
    for n in range(IP_LIMIT - 1):
        await fail(client, f"guess{n}@example.com", 1)
    for _ in range(3):
        assert (await attempt(client, user.email, USER_PASSWORD)).status_code == 200
    stored = await counter(session, "ip", "127.0.0.1")
    assert stored is not None
    assert stored.failures == IP_LIMIT - 1
    await fail(client, "guess-last@example.com", 1)
    throttled(await attempt(client, user.email, USER_PASSWORD))


def client_from(app: FastAPI, peer: str) -> httpx.AsyncClient:
    return asgi_client(app, peer=(peer, 40_000))


@pytest.fixture
async def behind_proxy(client_with: ClientFactory) -> FastAPI:
    app, _ = await client_with(**LIMITS, trusted_proxy_cidrs="10.0.0.0/8, fd00::/8")
    return app


async def test_forwarded_for_names_the_client_when_the_peer_is_a_trusted_proxy(
    behind_proxy: FastAPI, user: User, session: AsyncSession
) -> None:
    async with client_from(behind_proxy, "10.1.2.3") as proxy:
        for n in range(IP_LIMIT):
            await fail(proxy, f"guess{n}@example.com", 1, **{"X-Forwarded-For": "203.0.113.7"})
        throttled(
            await attempt(proxy, user.email, USER_PASSWORD, **{"X-Forwarded-For": "203.0.113.7"})
        )
        # another client behind the same proxy is not affected
        other = await attempt(
            proxy, user.email, USER_PASSWORD, **{"X-Forwarded-For": "203.0.113.8"}
        )
        assert other.status_code == 200
    assert await counter(session, "ip", "10.1.2.3") is None
    stored = await counter(session, "ip", "203.0.113.7")
    assert stored is not None
    assert stored.failures == IP_LIMIT + 1


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    behind_proxy: FastAPI, user: User, session: AsyncSession
) -> None:
    """A client cannot dodge its limit by inventing a new X-Forwarded-For on every guess."""
    async with client_from(behind_proxy, "198.51.100.9") as direct:
        for n in range(IP_LIMIT):
            spoofed = {"X-Forwarded-For": f"203.0.113.{n}"}
            await fail(direct, f"guess{n}@example.com", 1, **spoofed)
        response = await attempt(
            direct, user.email, USER_PASSWORD, **{"X-Forwarded-For": "203.0.113.200"}
        )
        throttled(response)
    stored = await counter(session, "ip", "198.51.100.9")
    assert stored is not None
    assert stored.failures == IP_LIMIT + 1
    rows = await session.exec(
        select(LoginThrottle).where(col(LoginThrottle.key).startswith("203."))
    )
    assert rows.all() == []


async def test_without_trusted_proxies_forwarded_for_is_ignored(
    limited: tuple[FastAPI, httpx.AsyncClient], user: User, session: AsyncSession
) -> None:
    _, client = limited  # TRUSTED_PROXY_CIDRS unset: the default trusts no one
    for n in range(IP_LIMIT):
        await fail(client, f"guess{n}@example.com", 1, **{"X-Forwarded-For": f"192.0.2.{n}"})
    throttled(await attempt(client, user.email, USER_PASSWORD, **{"X-Forwarded-For": "192.0.2.99"}))
    stored = await counter(session, "ip", "127.0.0.1")
    assert stored is not None
    assert stored.failures == IP_LIMIT + 1


async def test_ipv6_clients_are_counted_per_64(behind_proxy: FastAPI, user: User) -> None:
    async with client_from(behind_proxy, "2001:db8:1:2::10") as first:
        for n in range(IP_LIMIT):
            await fail(first, f"guess{n}@example.com", 1)
    async with client_from(behind_proxy, "2001:db8:1:2::beef") as same_64:
        throttled(await attempt(same_64, user.email, USER_PASSWORD))
    async with client_from(behind_proxy, "2001:db8:1:3::10") as other_64:
        assert (await attempt(other_64, user.email, USER_PASSWORD)).status_code == 200


# -- shared by replicas


async def test_replicas_share_the_counters(client_with: ClientFactory, user: User) -> None:
    """Two app instances (two pods) on one database: failures on one throttle the other."""
    _, replica_a = await client_with(**LIMITS)
    _, replica_b = await client_with(**LIMITS)
    await fail(replica_a, user.email, ACCOUNT_LIMIT - 1)
    await fail(replica_b, user.email, 1)
    throttled(await attempt(replica_a, user.email, USER_PASSWORD))
    throttled(await attempt(replica_b, user.email, USER_PASSWORD))


async def test_concurrent_attempts_each_get_their_own_count(engine: AsyncEngine) -> None:
    """Real concurrent transactions on separate connections (as replicas have): the upsert is
    atomic, so 8 simultaneous attempts see 1..8, never the same number twice."""
    key = f"concurrency-test-{uuid.uuid4().hex}"
    sessions = session_factory(engine)

    async def one_attempt() -> int:
        async with sessions() as session:
            [count] = await repository.count_attempt(
                session, [("account", key)], timedelta(seconds=WINDOW_S)
            )
            await session.commit()
            return count.failures

    try:
        seen = await asyncio.gather(*(one_attempt() for _ in range(8)))
        assert sorted(seen) == list(range(1, 9))
    finally:
        async with sessions() as session:
            await session.exec(delete(LoginThrottle).where(col(LoginThrottle.key) == key))
            await session.commit()


async def test_default_limits_are_documented_figures(
    client: httpx.AsyncClient, app: FastAPI, make_user: UserFactory
) -> None:
    """Defaults: 10 failures per account and 100 per client per 15-minute window."""
    settings = app.state.settings
    assert (
        settings.login_max_failures_per_account,
        settings.login_max_failures_per_ip,
        settings.login_throttle_window_s,
    ) == (10, 100, 900)
    await make_user("victim@example.com")
    await fail(client, "victim@example.com", 10)
    response = await attempt(client, "victim@example.com", USER_PASSWORD)
    throttled(response)
    assert response.headers["ratelimit-policy"] == (
        '"login-account";q=10;w=900, "login-ip";q=100;w=900'
    )
