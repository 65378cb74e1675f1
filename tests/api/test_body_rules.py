"""The rule for request bodies: unknown fields are ignored, fields the caller may not set are a 422.

And the OpenAPI document says so: no `additionalProperties: false` on a body that ignores unknown
fields, and the refused names excluded by `propertyNames`.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.items.models import Item
from service.users.models import User
from tests.conftest import problem

API = "/api/v1"
SIGNUP = {"email": "new@example.com", "password": "long-enough-1"}
CREATE = {"email": "made@example.com", "password": "long-enough-1"}


async def user_count(session: AsyncSession) -> int:
    return (await session.exec(select(func.count()).select_from(User))).one()


async def stored(session: AsyncSession, email: str) -> User | None:
    result = await session.exec(
        select(User).where(User.email == email).execution_options(populate_existing=True)
    )
    return result.first()


def refused(response: httpx.Response, field: str) -> None:
    body = problem(response, 422)
    assert {
        "loc": ["body", field],
        "msg": "May not be set through this operation",
        "type": "field_not_settable",
    } in body["errors"]
    assert body["detail"].startswith(f"body.{field}: ")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("is_superuser", True),
        ("is_superuser", False),  # refused whatever the value: it is not the caller's to send
        ("is_active", False),
        ("hashed_password", "$argon2id$forged"),
        ("id", "7c6c1a3e-0000-4000-8000-000000000000"),
        ("created_at", "2000-01-01T00:00:00Z"),
    ],
)
async def test_signup_refuses_what_only_the_service_or_a_superuser_decides(
    client: httpx.AsyncClient, session: AsyncSession, field: str, value: Any
) -> None:
    refused(await client.post(f"{API}/users/signup", json={**SIGNUP, field: value}), field)
    assert await user_count(session) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("is_superuser", True),
        ("is_active", False),
        ("hashed_password", "$argon2id$forged"),
        ("password", "a-new-password-1"),
        ("id", "7c6c1a3e-0000-4000-8000-000000000000"),
    ],
)
async def test_update_me_refuses_privileges_and_the_password(
    client: httpx.AsyncClient,
    user: User,
    user_headers: dict[str, str],
    session: AsyncSession,
    field: str,
    value: Any,
) -> None:
    before = (user.full_name, user.hashed_password, user.is_active, user.is_superuser)
    response = await client.patch(
        f"{API}/users/me", headers=user_headers, json={"full_name": "Changed", field: value}
    )
    refused(response, field)
    row = await stored(session, "alice@example.com")
    assert row is not None
    assert (row.full_name, row.hashed_password, row.is_active, row.is_superuser) == before


@pytest.mark.parametrize("field", ["hashed_password", "id", "created_at"])
async def test_superuser_create_refuses_stored_only_fields(
    client: httpx.AsyncClient,
    superuser_headers: dict[str, str],
    session: AsyncSession,
    field: str,
) -> None:
    value = "7c6c1a3e-0000-4000-8000-000000000000" if field == "id" else "x"
    response = await client.post(
        f"{API}/users/", headers=superuser_headers, json={**CREATE, field: value}
    )
    refused(response, field)
    assert await stored(session, "made@example.com") is None


async def test_superuser_update_refuses_a_hash(
    client: httpx.AsyncClient, superuser_headers: dict[str, str], user: User, session: AsyncSession
) -> None:
    before = user.hashed_password
    response = await client.patch(
        f"{API}/users/{user.id}",
        headers=superuser_headers,
        json={"hashed_password": "$argon2id$forged"},
    )
    refused(response, "hashed_password")
    row = await stored(session, "alice@example.com")
    assert row is not None
    assert row.hashed_password == before


async def test_every_refused_field_is_named(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{API}/users/signup", json={**SIGNUP, "is_superuser": True, "is_active": True}
    )
    body = problem(response, 422)
    assert sorted(e["loc"][-1] for e in body["errors"]) == ["is_active", "is_superuser"]


async def test_unknown_fields_are_ignored_and_not_stored(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    body = {**SIGNUP, "confirm_password": "long-enough-1", "Is_Superuser": True, "note": "x"}
    response = await client.post(f"{API}/users/signup", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["is_superuser"] is False
    row = await stored(session, "new@example.com")
    assert row is not None
    assert (row.is_superuser, row.is_active) == (False, True)


async def test_strict_types_stay_strict(
    client: httpx.AsyncClient, superuser_headers: dict[str, str], session: AsyncSession
) -> None:
    response = await client.post(
        f"{API}/users/", headers=superuser_headers, json={**CREATE, "is_superuser": 1}
    )
    assert problem(response, 422)["errors"][0]["loc"] == ["body", "is_superuser"]
    assert await stored(session, "made@example.com") is None


@pytest.mark.parametrize("field", ["id", "owner_id", "created_at"])
async def test_item_create_refuses_fields_the_service_sets(
    client: httpx.AsyncClient, user_headers: dict[str, str], session: AsyncSession, field: str
) -> None:
    value = "7c6c1a3e-0000-4000-8000-000000000000" if field != "created_at" else "2000-01-01"
    response = await client.post(
        f"{API}/items/", headers=user_headers, json={"title": "x", field: value}
    )
    refused(response, field)
    assert (await session.exec(select(func.count()).select_from(Item))).one() == 0


def _request_schemas(openapi: dict[str, Any]) -> dict[str, dict[str, Any]]:
    schemas: dict[str, dict[str, Any]] = openapi["components"]["schemas"]
    names = set()
    for operations in openapi["paths"].values():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {})
            for media in content.values():
                names.add(media["schema"]["$ref"].rsplit("/", 1)[-1])
    return {name: schemas[name] for name in names}


async def test_openapi_says_unknown_fields_are_allowed_and_names_the_refused(
    client: httpx.AsyncClient,
) -> None:
    openapi = (await client.get(f"{API}/openapi.json")).json()
    bodies = _request_schemas(openapi)
    assert {"UserRegister", "UserCreate", "UserUpdateMe", "UpdatePassword", "ItemUpdate"} <= set(
        bodies
    )
    for name, schema in bodies.items():
        assert schema.get("additionalProperties", True) is not False, name
    assert bodies["UserRegister"]["propertyNames"] == {
        "not": {"enum": ["created_at", "hashed_password", "id", "is_active", "is_superuser"]}
    }
    assert bodies["UserUpdate"]["propertyNames"] == {"not": {"enum": ["hashed_password"]}}
    assert "propertyNames" not in bodies["ItemUpdate"]
    assert "propertyNames" not in bodies["UpdatePassword"]
