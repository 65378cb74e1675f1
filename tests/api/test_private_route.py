"""`POST /api/v1/private/users/`: the template's dev-only signup, only in ENVIRONMENT=local."""

from __future__ import annotations

import httpx
import pytest
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.users.models import User
from tests.conftest import problem
from tests.support.smtp import ClientFactory

PRIVATE = "/api/v1/private/users/"
# frontend/tests/utils/privateApi.ts: PrivateService.createUser's body
TEMPLATE_BODY = {
    "email": "e2e@example.com",
    "password": "e2e-password-1",
    "is_verified": True,
    "full_name": "Test User",
}
STRONG_KEY = "k" * 24 + "-0123456789-abcdefghijklmnop"


async def stored(session: AsyncSession, email: str) -> User | None:
    result = await session.exec(select(User).where(User.email == email))
    return result.first()


async def test_local_creates_a_plain_user_without_a_token(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    response = await client.post(PRIVATE, json=TEMPLATE_BODY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "email", "is_active", "is_superuser", "full_name", "created_at"}
    assert (body["email"], body["full_name"]) == ("e2e@example.com", "Test User")
    assert (body["is_active"], body["is_superuser"]) == (True, False)
    user = await stored(session, "e2e@example.com")
    assert user is not None
    assert (str(user.id), user.is_active, user.is_superuser) == (body["id"], True, False)
    login = await client.post(
        "/api/v1/login/access-token",
        data={"username": "e2e@example.com", "password": "e2e-password-1"},
    )
    assert login.status_code == 200


async def test_local_refuses_a_superuser_and_a_duplicate(
    client: httpx.AsyncClient, session: AsyncSession, user: User
) -> None:
    body = problem(await client.post(PRIVATE, json={**TEMPLATE_BODY, "is_superuser": True}), 422)
    assert body["errors"][0]["loc"] == ["body", "is_superuser"]
    assert await stored(session, "e2e@example.com") is None
    duplicate = await client.post(PRIVATE, json={**TEMPLATE_BODY, "email": user.email})
    problem(duplicate, 409)
    assert (await session.exec(select(func.count()).select_from(User))).one() == 1


async def test_local_openapi_documents_it_under_the_template_operation_id(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/api/v1/openapi.json")).json()["paths"]
    assert paths[PRIVATE]["post"]["operationId"] == "private-create_user"


@pytest.mark.parametrize("environment", ["staging", "production"])
async def test_outside_local_it_is_not_routed_nor_documented(
    client_with: ClientFactory, session: AsyncSession, environment: str
) -> None:
    # docs forced on, so the OpenAPI document exists to be checked
    app, client = await client_with(
        environment=environment,
        secret_key=STRONG_KEY,
        first_superuser_password="a-strong-superuser-password-1",
        docs_enabled=True,
    )
    problem(await client.post(PRIVATE, json=TEMPLATE_BODY), 404)
    assert await stored(session, "e2e@example.com") is None
    paths = (await client.get("/api/v1/openapi.json")).json()["paths"]
    assert not [path for path in paths if "/private" in path]
    assert "/api/v1/users/signup" in paths  # the document itself is there
    assert not [route for route in app.routes if "/private" in getattr(route, "path", "")]
