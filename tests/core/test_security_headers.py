"""Security headers on every answer, no-store on credential answers, HSTS only when configured,
CORS that names its origins, and no interactive docs in production by default."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from service.users.models import User
from tests.conftest import USER_PASSWORD
from tests.core.test_config import STRONG_KEY, STRONG_PASSWORD
from tests.support.smtp import ClientFactory
from tests.support.smtp import client_with as client_with  # the fixture, for this module

BASE = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
}
PRODUCTION = {
    "environment": "production",
    "secret_key": STRONG_KEY,
    "first_superuser_password": STRONG_PASSWORD,
}


def assert_base_headers(response: httpx.Response) -> None:
    for name, value in BASE.items():
        assert response.headers.get(name) == value, (response.request.url, name)


async def test_every_kind_of_answer_carries_the_base_headers(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    answers = [
        await client.get("/healthz"),
        await client.get("/api/v1/users/me", headers=user_headers),
        await client.get("/api/v1/users/me"),  # 401
        await client.get("/api/v1/nothing-here"),  # 404 outside any route
        await client.post("/api/v1/users/signup", json={}),  # 422
        await client.post(  # 413, answered before routing
            "/api/v1/users/signup",
            content=b"x" * 2_000_000,
            headers={"content-type": "application/json"},
        ),
        await client.get("/metrics"),  # 404: metrics have their own port
    ]
    assert [a.status_code for a in answers] == [200, 200, 401, 404, 422, 413, 404]
    for answer in answers:
        assert_base_headers(answer)
        assert "strict-transport-security" not in answer.headers


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/api/v1/login/access-token", {"data": {"username": "x@y.io", "password": "p"}}),
        ("POST", "/api/v1/login/refresh", {"json": {"refresh_token": "nope"}}),
        ("POST", "/api/v1/logout", {}),
        ("POST", "/api/v1/login/test-token", {}),
        ("POST", "/api/v1/password-recovery/x@y.io", {}),
        ("POST", "/api/v1/reset-password/", {"json": {"token": "t", "new_password": "p" * 8}}),
        ("GET", "/api/v1/users/me", {}),
        ("PATCH", "/api/v1/users/me/password", {"json": {}}),
        ("POST", "/api/v1/users/signup", {"json": {}}),
    ],
)
async def test_credential_answers_are_never_stored(
    client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, object]
) -> None:
    """Successes and errors alike: a shared cache must not keep a token or a profile."""
    response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert response.headers["cache-control"] == "no-store"
    assert_base_headers(response)


async def test_successful_login_and_profile_are_not_stored(
    client: httpx.AsyncClient, user: User
) -> None:
    login = await client.post(
        "/api/v1/login/access-token", data={"username": user.email, "password": USER_PASSWORD}
    )
    assert login.status_code == 200
    assert login.headers["cache-control"] == "no-store"
    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"}
    )
    assert (me.status_code, me.headers["cache-control"]) == (200, "no-store")


@pytest.mark.parametrize("path", ["/healthz", "/api/v1/utils/health-check/", "/api/v1/items/"])
async def test_other_answers_keep_their_own_caching(
    client: httpx.AsyncClient, user_headers: dict[str, str], path: str
) -> None:
    response = await client.get(path, headers=user_headers)
    assert response.status_code == 200
    assert "no-store" not in response.headers.get("cache-control", "")


async def test_hsts_only_when_enabled(client_with: ClientFactory) -> None:
    _, plain = await client_with()
    assert "strict-transport-security" not in (await plain.get("/healthz")).headers
    _, behind_tls = await client_with(hsts_enabled=True, hsts_max_age_s=63_072_000)
    for path in ("/healthz", "/api/v1/users/me", "/nowhere"):
        response = await behind_tls.get(path)
        assert response.headers["strict-transport-security"] == "max-age=63072000"
        assert_base_headers(response)


async def test_cors_allows_listed_origins_with_credentials_and_nothing_else(
    client_with: ClientFactory,
) -> None:
    _, client = await client_with(backend_cors_origins="https://app.example")
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    allowed = await client.options(
        "/api/v1/login/access-token", headers={"Origin": "https://app.example", **preflight}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert allowed.headers["access-control-allow-credentials"] == "true"

    refused = await client.options(
        "/api/v1/login/access-token", headers={"Origin": "https://evil.example", **preflight}
    )
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers

    simple = await client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers
    exposed = await client.get("/healthz", headers={"Origin": "https://app.example"})
    assert exposed.headers["access-control-allow-origin"] == "https://app.example"
    assert {"retry-after", "ratelimit", "ratelimit-policy"} <= {
        h.strip().lower() for h in exposed.headers["access-control-expose-headers"].split(",")
    }


async def test_production_serves_no_docs_by_default(client_with: ClientFactory) -> None:
    _, production = await client_with(**PRODUCTION)
    for path in ("/docs", "/redoc", "/api/v1/openapi.json"):
        assert (await production.get(path)).status_code == 404
    _, opted_in = await client_with(**PRODUCTION, docs_enabled=True)
    assert (await opted_in.get("/docs")).status_code == 200


async def test_local_serves_docs(client: httpx.AsyncClient, app: FastAPI) -> None:
    assert app.state.settings.docs_enabled
    assert (await client.get("/docs")).status_code == 200
