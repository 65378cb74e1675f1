"""The /users endpoints: template-compatible shapes, Keelson's stricter status codes."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.items.models import Item
from service.users import repository, service
from service.users.models import User
from service.users.schemas import UserUpdateMe
from tests.conftest import USER_PASSWORD, UserFactory, bearer, problem

USER_PUBLIC_FIELDS = {"id", "email", "is_active", "is_superuser", "full_name", "created_at"}


async def stored_user(session: AsyncSession, user_id: uuid.UUID | str) -> User | None:
    result = await session.exec(
        select(User)
        .where(User.id == uuid.UUID(str(user_id)))
        .execution_options(populate_existing=True)
    )
    return result.first()


async def test_me_returns_user_public_without_secrets(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str]
) -> None:
    response = await client.get("/api/v1/users/me", headers=user_headers)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == USER_PUBLIC_FIELDS
    assert body["email"] == "alice@example.com"
    assert body["id"] == str(user.id)
    assert body["is_superuser"] is False
    assert body["created_at"].endswith("Z") or "+" in body["created_at"]


async def test_me_without_token_is_401_with_bearer_challenge(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/users/me")
    body = problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert body["instance"] == "/api/v1/users/me"


async def test_token_of_deleted_user_is_401(
    client: httpx.AsyncClient, app: FastAPI, session: AsyncSession, make_user: UserFactory
) -> None:
    gone = await make_user("gone@example.com")
    headers = bearer(app, gone)
    await session.delete(gone)
    await session.commit()
    problem(await client.get("/api/v1/users/me", headers=headers), 401)


async def test_inactive_user_is_403(
    client: httpx.AsyncClient, app: FastAPI, make_user: UserFactory
) -> None:
    sleeper = await make_user("inactive@example.com", is_active=False)
    body = problem(await client.get("/api/v1/users/me", headers=bearer(app, sleeper)), 403)
    assert body["detail"] == "Inactive user"


async def test_signup_creates_a_plain_active_user(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    response = await client.post(
        "/api/v1/users/signup",
        json={"email": "new@example.com", "password": "long-enough-1", "full_name": "New"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["email"] == "new@example.com"
    assert (body["is_active"], body["is_superuser"], body["full_name"]) == (True, False, "New")
    stored = await stored_user(session, body["id"])
    assert stored is not None
    assert stored.hashed_password.startswith("$argon2id$")
    assert "long-enough-1" not in stored.hashed_password


async def test_signup_cannot_smuggle_superuser(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    response = await client.post(
        "/api/v1/users/signup",
        json={"email": "sneaky@example.com", "password": "long-enough-1", "is_superuser": True},
    )
    body = problem(response, 422)
    assert body["errors"][0]["loc"] == ["body", "is_superuser"]
    count = await session.exec(select(func.count()).select_from(User))
    assert count.one() == 0


async def test_signup_duplicate_email_any_case_is_409(
    client: httpx.AsyncClient, user: User, session: AsyncSession
) -> None:
    response = await client.post(
        "/api/v1/users/signup", json={"email": "ALICE@Example.com", "password": "long-enough-1"}
    )
    body = problem(response, 409)
    assert "already exists" in body["detail"]
    count = await session.exec(select(func.count()).select_from(User))
    assert count.one() == 1


async def test_signup_validates_lengths_and_email(client: httpx.AsyncClient) -> None:
    cases = [
        {"email": "x@example.com", "password": "short"},
        {"email": "x@example.com", "password": "p" * 129},
        {"email": "not-an-email", "password": "long-enough-1"},
        {"email": f"{'a' * 250}@example.com", "password": "long-enough-1"},
        {"email": "x@example.com", "password": "long-enough-1", "full_name": "n" * 256},
        {"email": "x@example.com"},
    ]
    for payload in cases:
        problem(await client.post("/api/v1/users/signup", json=payload), 422)


async def test_superuser_lists_users_with_count(
    client: httpx.AsyncClient, superuser_headers: dict[str, str], user: User, other_user: User
) -> None:
    response = await client.get("/api/v1/users/?skip=0&limit=2", headers=superuser_headers)
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert len(body["data"]) == 2
    assert all(set(entry) == USER_PUBLIC_FIELDS for entry in body["data"])
    page2 = (await client.get("/api/v1/users/?skip=2&limit=2", headers=superuser_headers)).json()
    emails = {entry["email"] for entry in body["data"] + page2["data"]}
    assert emails == {"admin@example.com", "alice@example.com", "bob@example.com"}


async def test_plain_user_cannot_list_users(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    body = problem(await client.get("/api/v1/users/", headers=user_headers), 403)
    assert body["detail"] == "The user doesn't have enough privileges"


async def test_list_users_rejects_bad_paging(
    client: httpx.AsyncClient, superuser_headers: dict[str, str]
) -> None:
    for query in ("skip=-1", "limit=0", "limit=1001", "limit=abc"):
        problem(await client.get(f"/api/v1/users/?{query}", headers=superuser_headers), 422)


async def test_superuser_creates_user(
    client: httpx.AsyncClient, superuser_headers: dict[str, str], session: AsyncSession
) -> None:
    response = await client.post(
        "/api/v1/users/",
        headers=superuser_headers,
        json={"email": "made@example.com", "password": "long-enough-1", "is_superuser": True},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["is_superuser"] is True
    stored = await stored_user(session, body["id"])
    assert stored is not None
    assert stored.is_superuser


async def test_plain_user_cannot_create_user(
    client: httpx.AsyncClient, user_headers: dict[str, str], session: AsyncSession
) -> None:
    response = await client.post(
        "/api/v1/users/",
        headers=user_headers,
        json={"email": "made@example.com", "password": "long-enough-1"},
    )
    problem(response, 403)
    count = await session.exec(select(func.count()).select_from(User))
    assert count.one() == 1


async def test_create_user_duplicate_is_409(
    client: httpx.AsyncClient, superuser_headers: dict[str, str], user: User
) -> None:
    response = await client.post(
        "/api/v1/users/",
        headers=superuser_headers,
        json={"email": "alice@example.com", "password": "long-enough-1"},
    )
    problem(response, 409)


async def test_update_me_changes_name_and_email(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    response = await client.patch(
        "/api/v1/users/me",
        headers=user_headers,
        json={"full_name": "Alice B", "email": "alice.b@example.com"},
    )
    assert response.status_code == 200
    assert response.json()["full_name"] == "Alice B"
    stored = await stored_user(session, user.id)
    assert stored is not None
    assert (stored.full_name, stored.email) == ("Alice B", "alice.b@example.com")


async def test_update_me_to_taken_email_is_409_and_changes_nothing(
    client: httpx.AsyncClient,
    user: User,
    other_user: User,
    user_headers: dict[str, str],
    session: AsyncSession,
) -> None:
    response = await client.patch(
        "/api/v1/users/me",
        headers=user_headers,
        json={"email": "BOB@example.com", "full_name": "Changed"},
    )
    problem(response, 409)
    stored = await stored_user(session, user.id)
    assert stored is not None
    assert (stored.email, stored.full_name) == ("alice@example.com", "Alice")


async def test_update_me_rejects_privilege_fields(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    response = await client.patch(
        "/api/v1/users/me", headers=user_headers, json={"is_superuser": True}
    )
    problem(response, 422)
    stored = await stored_user(session, user.id)
    assert stored is not None
    assert not stored.is_superuser


async def test_change_password_then_login_with_new_one(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    response = await client.patch(
        "/api/v1/users/me/password",
        headers=user_headers,
        json={"current_password": USER_PASSWORD, "new_password": "brand-new-pass-1"},
    )
    assert response.status_code == 200
    assert response.json() == {"message": "Password updated successfully"}
    old = await client.post(
        "/api/v1/login/access-token",
        data={"username": "alice@example.com", "password": USER_PASSWORD},
    )
    problem(old, 400)
    new = await client.post(
        "/api/v1/login/access-token",
        data={"username": "alice@example.com", "password": "brand-new-pass-1"},
    )
    assert new.status_code == 200


async def test_change_password_wrong_current_is_400(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    before = user.hashed_password
    response = await client.patch(
        "/api/v1/users/me/password",
        headers=user_headers,
        json={"current_password": "wrong-password", "new_password": "brand-new-pass-1"},
    )
    assert problem(response, 400)["detail"] == "Incorrect password"
    stored = await stored_user(session, user.id)
    assert stored is not None
    assert stored.hashed_password == before


async def test_change_password_to_same_is_400(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    response = await client.patch(
        "/api/v1/users/me/password",
        headers=user_headers,
        json={"current_password": USER_PASSWORD, "new_password": USER_PASSWORD},
    )
    assert "cannot be the same" in problem(response, 400)["detail"]


async def test_delete_me_removes_user_and_items(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    created = await client.post("/api/v1/items/", headers=user_headers, json={"title": "mine"})
    assert created.status_code == 200
    response = await client.delete("/api/v1/users/me", headers=user_headers)
    assert response.status_code == 200
    assert response.json() == {"message": "User deleted successfully"}
    assert await stored_user(session, user.id) is None
    items = await session.exec(select(func.count()).select_from(Item))
    assert items.one() == 0


async def test_superuser_cannot_delete_itself(
    client: httpx.AsyncClient,
    superuser: User,
    superuser_headers: dict[str, str],
    session: AsyncSession,
) -> None:
    response = await client.delete("/api/v1/users/me", headers=superuser_headers)
    assert problem(response, 403)["detail"] == "Super users are not allowed to delete themselves"
    by_id = await client.delete(f"/api/v1/users/{superuser.id}", headers=superuser_headers)
    problem(by_id, 403)
    assert await stored_user(session, superuser.id) is not None


async def test_user_reads_itself_by_id(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str]
) -> None:
    response = await client.get(f"/api/v1/users/{user.id}", headers=user_headers)
    assert response.status_code == 200
    assert response.json()["email"] == "alice@example.com"


async def test_user_cannot_read_other_user(
    client: httpx.AsyncClient, other_user: User, user_headers: dict[str, str]
) -> None:
    problem(await client.get(f"/api/v1/users/{other_user.id}", headers=user_headers), 403)
    # Unknown ids answer the same, so a plain user cannot probe which ids exist.
    problem(await client.get(f"/api/v1/users/{uuid.uuid4()}", headers=user_headers), 403)


async def test_superuser_reads_any_user_and_gets_404_for_unknown(
    client: httpx.AsyncClient, user: User, superuser_headers: dict[str, str]
) -> None:
    found = await client.get(f"/api/v1/users/{user.id}", headers=superuser_headers)
    assert found.status_code == 200
    assert found.json()["id"] == str(user.id)
    problem(await client.get(f"/api/v1/users/{uuid.uuid4()}", headers=superuser_headers), 404)


async def test_bad_user_id_is_422(
    client: httpx.AsyncClient, superuser_headers: dict[str, str]
) -> None:
    body = problem(await client.get("/api/v1/users/not-a-uuid", headers=superuser_headers), 422)
    assert body["errors"][0]["loc"] == ["path", "user_id"]


async def test_superuser_updates_user_including_password(
    client: httpx.AsyncClient, user: User, superuser_headers: dict[str, str], session: AsyncSession
) -> None:
    response = await client.patch(
        f"/api/v1/users/{user.id}",
        headers=superuser_headers,
        json={"full_name": "Renamed", "password": "reset-by-admin-1", "is_active": False},
    )
    assert response.status_code == 200
    assert (response.json()["full_name"], response.json()["is_active"]) == ("Renamed", False)
    stored = await stored_user(session, user.id)
    assert stored is not None
    assert not stored.is_active
    login = await client.post(
        "/api/v1/login/access-token",
        data={"username": "alice@example.com", "password": "reset-by-admin-1"},
    )
    assert problem(login, 400)["detail"] == "Inactive user"


async def test_superuser_update_unknown_user_is_404(
    client: httpx.AsyncClient, superuser_headers: dict[str, str]
) -> None:
    response = await client.patch(
        f"/api/v1/users/{uuid.uuid4()}", headers=superuser_headers, json={"full_name": "x"}
    )
    problem(response, 404)


async def test_superuser_update_to_taken_email_is_409(
    client: httpx.AsyncClient, user: User, other_user: User, superuser_headers: dict[str, str]
) -> None:
    response = await client.patch(
        f"/api/v1/users/{user.id}", headers=superuser_headers, json={"email": "bob@example.com"}
    )
    problem(response, 409)


async def test_plain_user_cannot_update_or_delete_others(
    client: httpx.AsyncClient, other_user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    patch = await client.patch(
        f"/api/v1/users/{other_user.id}", headers=user_headers, json={"full_name": "hacked"}
    )
    problem(patch, 403)
    problem(await client.delete(f"/api/v1/users/{other_user.id}", headers=user_headers), 403)
    stored = await stored_user(session, other_user.id)
    assert stored is not None
    assert stored.full_name == "Bob"


async def test_superuser_deletes_user_and_their_items(
    client: httpx.AsyncClient,
    app: FastAPI,
    user: User,
    superuser_headers: dict[str, str],
    session: AsyncSession,
) -> None:
    await client.post("/api/v1/items/", headers=bearer(app, user), json={"title": "x"})
    response = await client.delete(f"/api/v1/users/{user.id}", headers=superuser_headers)
    assert response.status_code == 200
    assert await stored_user(session, user.id) is None
    items = await session.exec(select(func.count()).select_from(Item))
    assert items.one() == 0
    problem(await client.delete(f"/api/v1/users/{user.id}", headers=superuser_headers), 404)


async def test_me_reads_the_stored_row_on_every_request(
    client: httpx.AsyncClient, session: AsyncSession, user: User, user_headers: dict[str, str]
) -> None:
    """The caller is read from the database each time, never kept: a change made elsewhere
    (an admin, SQL) shows at once, and a deactivated account is refused at once."""
    stored = await stored_user(session, user.id)
    assert stored is not None
    stored.full_name, stored.is_superuser = "Changed Elsewhere", True
    session.add(stored)
    await session.commit()
    body = (await client.get("/api/v1/users/me", headers=user_headers)).json()
    assert (body["full_name"], body["is_superuser"]) == ("Changed Elsewhere", True)
    assert body["created_at"] == stored.created_at.isoformat().replace("+00:00", "Z")

    stored.is_active = False
    session.add(stored)
    await session.commit()
    response = await client.get("/api/v1/users/me", headers=user_headers)
    assert problem(response, 403)["detail"] == "Inactive user"


async def test_changing_an_account_deleted_since_authentication_is_404(
    session: AsyncSession, user: User
) -> None:
    record = await repository.get_user_record(session, user.id)
    assert record is not None
    assert record.email == user.email
    await repository.delete_user(session, user.id)
    with pytest.raises(service.UserNotFound):
        await service.update_me(session, record, UserUpdateMe(full_name="Ghost"))
    assert await stored_user(session, user.id) is None


async def test_checking_the_password_of_an_account_deleted_since_authentication_is_404(
    session: AsyncSession, user: User
) -> None:
    record = await repository.get_user_record(session, user.id)
    assert record is not None
    await repository.delete_user(session, user.id)
    with pytest.raises(service.UserNotFound):
        await service.own_account(session, record)


@pytest.mark.parametrize("body", [{}, {"email": None}])
async def test_update_me_with_nothing_to_change_answers_the_account_as_stored(
    client: httpx.AsyncClient,
    user: User,
    user_headers: dict[str, str],
    session: AsyncSession,
    body: dict[str, object],
) -> None:
    """A null for a required field means "leave it": nothing is left to write."""
    before = (await client.get("/api/v1/users/me", headers=user_headers)).json()
    response = await client.patch("/api/v1/users/me", headers=user_headers, json=body)
    assert response.status_code == 200, response.text
    assert response.json() == before
    stored = await stored_user(session, user.id)
    assert stored is not None
    assert (stored.email, stored.full_name, stored.is_active) == (
        "alice@example.com",
        "Alice",
        True,
    )


async def test_an_account_change_sets_only_the_columns_it_may(
    session: AsyncSession, user: User
) -> None:
    with pytest.raises(ValueError, match="credentials_generation"):
        await repository.save_user(session, user.id, {"credentials_generation": 7})
    stored = await stored_user(session, user.id)
    assert stored is not None
    assert stored.credentials_generation == 0
