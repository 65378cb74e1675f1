"""POST /login/access-token: form login, uniform failures, argon2 upkeep and timing hygiene."""

from __future__ import annotations

import uuid
from unittest.mock import AsyncMock

import httpx
import pytest
from argon2 import extract_parameters
from fastapi import FastAPI
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.core.security import PasswordHashing
from service.users.models import User
from tests.conftest import USER_PASSWORD, UserFactory, make_settings, problem

LOGIN = "/api/v1/login/access-token"
BAD_CREDENTIALS = "Incorrect email or password"


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post(LOGIN, data={"username": username, "password": password})


async def stored_hash(session: AsyncSession, user_id: uuid.UUID) -> str:
    """Read from the table, not the identity map (which would also overwrite the test's User)."""
    result = await session.exec(select(User.hashed_password).where(User.id == user_id))
    return result.one()


def spy_on(monkeypatch: pytest.MonkeyPatch, app: FastAPI, method: str) -> AsyncMock:
    """Wraps the real PasswordHashing method: the real argon2 work still happens."""
    spy = AsyncMock(wraps=getattr(app.state.passwords, method))
    monkeypatch.setattr(app.state.passwords, method, spy)
    return spy


async def test_login_returns_a_bearer_token(client: httpx.AsyncClient, user: User) -> None:
    """The template's {access_token, token_type}, plus refresh_token and expires_in."""
    response = await login(client, "alice@example.com", USER_PASSWORD)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "refresh_token", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["access_token"].count(".") == 2
    assert body["expires_in"] == 15 * 60
    assert "." not in body["refresh_token"]  # opaque, not a JWT
    assert len(body["refresh_token"]) >= 43  # 32 random bytes, base64url


async def test_issued_token_works_on_test_token_and_me(
    client: httpx.AsyncClient, user: User
) -> None:
    token = (await login(client, "alice@example.com", USER_PASSWORD)).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    tested = await client.post("/api/v1/login/test-token", headers=headers)
    assert tested.status_code == 200
    assert (tested.json()["id"], tested.json()["email"]) == (str(user.id), "alice@example.com")
    me = await client.get("/api/v1/users/me", headers=headers)
    assert me.status_code == 200
    assert me.json()["id"] == str(user.id)


async def test_test_token_without_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/login/test-token")
    problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


async def test_wrong_password_and_unknown_email_get_the_same_answer(
    client: httpx.AsyncClient, user: User
) -> None:
    wrong_password = await login(client, "alice@example.com", "not-her-password")
    unknown_email = await login(client, "nobody@example.com", "not-her-password")
    assert problem(wrong_password, 400)["detail"] == BAD_CREDENTIALS
    assert problem(unknown_email, 400)["detail"] == BAD_CREDENTIALS
    assert wrong_password.json() == unknown_email.json()
    assert "access_token" not in wrong_password.text


async def test_inactive_user_with_right_password_is_told_inactive(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    await make_user("sleeper@example.com", is_active=False)
    response = await login(client, "sleeper@example.com", USER_PASSWORD)
    assert problem(response, 400)["detail"] == "Inactive user"


async def test_inactive_user_with_wrong_password_learns_nothing_more(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    await make_user("sleeper@example.com", is_active=False)
    response = await login(client, "sleeper@example.com", "not-the-password")
    assert problem(response, 400)["detail"] == BAD_CREDENTIALS


async def test_email_is_case_insensitive(client: httpx.AsyncClient, user: User) -> None:
    response = await login(client, "ALICE@Example.COM", USER_PASSWORD)
    assert response.status_code == 200
    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {response.json()['access_token']}"}
    )
    assert me.json()["id"] == str(user.id)


@pytest.mark.parametrize("email", ["alice@example.com", "nobody@example.com"])
async def test_over_long_password_is_refused_without_hashing(
    client: httpx.AsyncClient,
    app: FastAPI,
    user: User,
    monkeypatch: pytest.MonkeyPatch,
    email: str,
) -> None:
    spies = [spy_on(monkeypatch, app, name) for name in ("verify", "verify_dummy", "hash")]
    response = await login(client, email, "p" * 129)
    assert problem(response, 400)["detail"] == BAD_CREDENTIALS
    for spy in spies:
        spy.assert_not_awaited()


async def test_password_of_exactly_128_characters_is_checked(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    await make_user("long@example.com", password="p" * 128)
    assert (await login(client, "long@example.com", "p" * 128)).status_code == 200


async def test_unknown_email_still_runs_a_dummy_verify(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    dummy = spy_on(monkeypatch, app, "verify_dummy")
    verify = spy_on(monkeypatch, app, "verify")
    response = await login(client, "nobody@example.com", "some-password-1")
    problem(response, 400)
    dummy.assert_awaited_once_with("some-password-1")
    verify.assert_not_awaited()


async def test_known_email_runs_the_real_verify_not_the_dummy(
    client: httpx.AsyncClient, app: FastAPI, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    dummy = spy_on(monkeypatch, app, "verify_dummy")
    verify = spy_on(monkeypatch, app, "verify")
    problem(await login(client, "alice@example.com", "wrong-password-1"), 400)
    verify.assert_awaited_once_with(user.hashed_password, "wrong-password-1")
    dummy.assert_not_awaited()


@pytest.mark.parametrize(
    "form",
    [
        {"password": USER_PASSWORD},
        {"username": "alice@example.com"},
        {},
        {"username": "alice@example.com", "password": USER_PASSWORD, "grant_type": "client"},
    ],
    ids=["no-username", "no-password", "empty", "bad-grant-type"],
)
async def test_incomplete_form_is_422(
    client: httpx.AsyncClient, user: User, form: dict[str, str]
) -> None:
    body = problem(await client.post(LOGIN, data=form), 422)
    assert body["errors"]
    assert all(error["loc"][0] == "body" for error in body["errors"])


async def test_json_body_instead_of_form_is_422(client: httpx.AsyncClient, user: User) -> None:
    response = await client.post(
        LOGIN, json={"username": "alice@example.com", "password": USER_PASSWORD}
    )
    body = problem(response, 422)
    assert {tuple(error["loc"]) for error in body["errors"]} >= {
        ("body", "username"),
        ("body", "password"),
    }
    assert USER_PASSWORD not in response.text


async def test_hash_made_with_other_parameters_is_upgraded_on_login(
    client: httpx.AsyncClient, app: FastAPI, session: AsyncSession, database_url: str
) -> None:
    older = PasswordHashing(make_settings(database_url, argon2_time_cost=2, argon2_memory_kib=2048))
    try:
        old_hash = await older.hash(USER_PASSWORD)
    finally:
        older.close()
    user = User(email="old-hash@example.com", hashed_password=old_hash)
    session.add(user)
    await session.commit()

    assert (await login(client, "old-hash@example.com", USER_PASSWORD)).status_code == 200

    new_hash = await stored_hash(session, user.id)
    assert new_hash != old_hash
    settings = app.state.settings
    before, after = extract_parameters(old_hash), extract_parameters(new_hash)
    assert (before.time_cost, before.memory_cost) == (2, 2048)
    assert (after.time_cost, after.memory_cost, after.parallelism) == (
        settings.argon2_time_cost,
        settings.argon2_memory_kib,
        settings.argon2_parallelism,
    )
    assert (await app.state.passwords.verify(new_hash, USER_PASSWORD)).valid
    assert (await login(client, "old-hash@example.com", USER_PASSWORD)).status_code == 200


async def test_hash_with_current_parameters_is_left_alone(
    client: httpx.AsyncClient, user: User, session: AsyncSession
) -> None:
    assert (await login(client, "alice@example.com", USER_PASSWORD)).status_code == 200
    assert await stored_hash(session, user.id) == user.hashed_password


async def test_failed_login_never_rewrites_an_old_hash(
    client: httpx.AsyncClient, session: AsyncSession, database_url: str
) -> None:
    older = PasswordHashing(make_settings(database_url, argon2_time_cost=2))
    try:
        old_hash = await older.hash(USER_PASSWORD)
    finally:
        older.close()
    user = User(email="old-hash@example.com", hashed_password=old_hash)
    session.add(user)
    await session.commit()
    problem(await login(client, "old-hash@example.com", "wrong-password-1"), 400)
    assert await stored_hash(session, user.id) == old_hash


async def test_sql_looking_username_is_just_a_wrong_email(
    client: httpx.AsyncClient, user: User
) -> None:
    response = await login(client, "' OR '1'='1' --", "' OR '1'='1' --")
    assert problem(response, 400)["detail"] == BAD_CREDENTIALS


@pytest.mark.parametrize(
    "bad_hash", ["", "not-a-hash", "$2b$12$abcdefghijklmnopqrstuv", "$argon2id$v=19$m=1"]
)
async def test_unreadable_stored_hash_is_a_failed_login_not_a_crash(
    client: httpx.AsyncClient, session: AsyncSession, bad_hash: str
) -> None:
    session.add(User(email="broken@example.com", hashed_password=bad_hash))
    await session.commit()
    response = await login(client, "broken@example.com", USER_PASSWORD)
    assert problem(response, 400)["detail"] == BAD_CREDENTIALS


async def test_unstorable_email_is_an_unknown_email_with_a_dummy_verify(
    client: httpx.AsyncClient, app: FastAPI, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    dummy = spy_on(monkeypatch, app, "verify_dummy")
    for username in ("alice@example.com\x00", "a" * 250 + "@example.com"):
        assert (
            problem(await login(client, username, USER_PASSWORD), 400)["detail"] == BAD_CREDENTIALS
        )
    assert dummy.await_count == 2
