"""Refresh tokens (opaque, stored hashed, rotated on every use, reuse revokes the family),
logout and password changes revoke, and signing keys roll over by kid."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from service.auth.models import RefreshToken
from service.auth.service import issue_reset_token
from service.core.config import derive_key_id
from service.core.digests import sha256_hex as digest
from service.users.models import User
from tests.conftest import SUPERUSER_PASSWORD, USER_PASSWORD, UserFactory, problem
from tests.support.logs import json_log_lines
from tests.support.smtp import ClientFactory

LOGIN = "/api/v1/login/access-token"
REFRESH = "/api/v1/login/refresh"
LOGOUT = "/api/v1/logout"
ME = "/api/v1/users/me"
NEW_PASSWORD = "brand-new-password-1"
OLD_KEY = "old-signing-key-0123456789-abcdefghijklmnopq"


async def login(client: httpx.AsyncClient, email: str, password: str) -> dict[str, Any]:
    response = await client.post(LOGIN, data={"username": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post(REFRESH, json={"refresh_token": refresh_token})


def auth(body: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {body['access_token']}"}


async def refused(response: httpx.Response) -> None:
    assert problem(response, 401)["detail"] == "Invalid refresh token"
    assert response.headers["www-authenticate"] == "Bearer"
    assert "access_token" not in response.text


async def stored_tokens(session: AsyncSession, user_id: uuid.UUID) -> list[RefreshToken]:
    result = await session.exec(
        select(RefreshToken)
        .where(RefreshToken.user_id == user_id)
        .order_by(col(RefreshToken.created_at), col(RefreshToken.id))
        .execution_options(populate_existing=True)
    )
    return list(result.all())


def reuse_count() -> float:
    return REGISTRY.get_sample_value("keelson_refresh_token_reuse_total") or 0.0


# -- issuing and rotating


async def test_login_stores_only_the_digest_of_the_refresh_token(
    client: httpx.AsyncClient, user: User, session: AsyncSession
) -> None:
    body = await login(client, user.email, USER_PASSWORD)
    [stored] = await stored_tokens(session, user.id)
    assert stored.token_hash == digest(body["refresh_token"]) != body["refresh_token"]
    assert (stored.rotated_at, stored.replaced_by, stored.revoked_at) == (None, None, None)
    assert stored.expires_at - stored.created_at == timedelta(days=14)
    rows = await session.exec(text("SELECT t::text FROM refresh_tokens t"))  # type: ignore[call-overload]
    assert all(body["refresh_token"] not in row for (row,) in rows.all())


async def test_refresh_returns_a_new_pair_and_spends_the_old_token(
    client: httpx.AsyncClient, user: User, session: AsyncSession
) -> None:
    first = await login(client, user.email, USER_PASSWORD)
    response = await refresh(client, first["refresh_token"])
    assert response.status_code == 200
    second = response.json()
    assert set(second) == {"access_token", "token_type", "refresh_token", "expires_in"}
    assert second["token_type"] == "bearer"
    assert second["expires_in"] == 15 * 60
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    me = await client.get(ME, headers=auth(second))
    assert (me.status_code, me.json()["id"]) == (200, str(user.id))

    old, new = await stored_tokens(session, user.id)
    assert old.rotated_at is not None
    assert old.replaced_by == new.id
    assert new.family_id == old.family_id
    assert (new.rotated_at, new.revoked_at) == (None, None)


async def test_a_chain_of_refreshes_keeps_working(client: httpx.AsyncClient, user: User) -> None:
    current = (await login(client, user.email, USER_PASSWORD))["refresh_token"]
    for _ in range(5):
        response = await refresh(client, current)
        assert response.status_code == 200
        current = response.json()["refresh_token"]


async def test_rotated_token_no_longer_works(client: httpx.AsyncClient, user: User) -> None:
    first = await login(client, user.email, USER_PASSWORD)
    assert (await refresh(client, first["refresh_token"])).status_code == 200
    await refused(await refresh(client, first["refresh_token"]))


async def test_reusing_a_rotated_token_revokes_the_whole_family(
    client: httpx.AsyncClient, user: User, session: AsyncSession
) -> None:
    """A copied token comes back: the newest token of the family dies too, and it is counted."""
    stolen = (await login(client, user.email, USER_PASSWORD))["refresh_token"]
    newest = (await refresh(client, stolen)).json()["refresh_token"]
    before = reuse_count()

    await refused(await refresh(client, stolen))

    assert reuse_count() == before + 1
    assert all(t.revoked_at is not None for t in await stored_tokens(session, user.id))
    await refused(await refresh(client, newest))


async def test_reuse_leaves_the_users_other_sessions_alone(
    client: httpx.AsyncClient, user: User
) -> None:
    laptop = (await login(client, user.email, USER_PASSWORD))["refresh_token"]
    phone = (await login(client, user.email, USER_PASSWORD))["refresh_token"]
    assert (await refresh(client, laptop)).status_code == 200
    await refused(await refresh(client, laptop))  # reuse: the laptop family is revoked
    assert (await refresh(client, phone)).status_code == 200


async def test_reuse_is_logged_with_the_family(
    client_with: ClientFactory, user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    _, client = await client_with()
    stolen = (await login(client, user.email, USER_PASSWORD))["refresh_token"]
    capsys.readouterr()
    await refresh(client, stolen)
    await refresh(client, stolen)
    output = capsys.readouterr().out
    [event] = [e for e in json_log_lines(output) if e.get("event") == "refresh_token_reuse"]
    assert event["user_id"] == str(user.id)
    assert event["revoked"] == 2
    assert event["level"] == "warning"
    assert stolen not in output


@pytest.mark.parametrize(
    "presented",
    ["not-a-token", "x" * 256, "' OR '1'='1", "eyJhbGciOiJIUzI1NiJ9.e30.sig"],
    ids=["garbage", "longest", "sql", "jwt-shaped"],
)
async def test_unknown_refresh_token_is_401(
    client: httpx.AsyncClient, user: User, presented: str
) -> None:
    await refused(await refresh(client, presented))


async def test_an_access_token_is_not_a_refresh_token(
    client: httpx.AsyncClient, user: User
) -> None:
    body = await login(client, user.email, USER_PASSWORD)
    await refused(await refresh(client, body["access_token"][:256]))


async def test_expired_refresh_token_is_401(
    client: httpx.AsyncClient, user: User, session: AsyncSession
) -> None:
    body = await login(client, user.email, USER_PASSWORD)
    await session.exec(
        update(RefreshToken)
        .where(col(RefreshToken.token_hash) == digest(body["refresh_token"]))
        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    await session.commit()
    await refused(await refresh(client, body["refresh_token"]))


async def test_refresh_for_a_deactivated_user_is_401(
    client: httpx.AsyncClient, user: User, session: AsyncSession
) -> None:
    body = await login(client, user.email, USER_PASSWORD)
    await session.exec(update(User).where(col(User.id) == user.id).values(is_active=False))
    await session.commit()
    await refused(await refresh(client, body["refresh_token"]))


async def test_deleting_the_user_deletes_its_refresh_tokens(
    client: httpx.AsyncClient, make_user: UserFactory, session: AsyncSession
) -> None:
    gone = await make_user("gone@example.com")
    body = await login(client, gone.email, USER_PASSWORD)
    await session.delete(gone)
    await session.commit()
    assert await stored_tokens(session, gone.id) == []
    await refused(await refresh(client, body["refresh_token"]))


@pytest.mark.parametrize(
    "payload",
    [{}, {"refresh_token": ""}, {"refresh_token": "x" * 257}],
    ids=["missing", "empty", "too-long"],
)
async def test_refresh_body_is_validated(
    client: httpx.AsyncClient, payload: dict[str, Any]
) -> None:
    problem(await client.post(REFRESH, json=payload), 422)


async def test_refresh_body_ignores_unknown_fields(client: httpx.AsyncClient) -> None:
    response = await client.post(REFRESH, json={"refresh_token": "t", "x": 1})
    assert problem(response, 401)["detail"] == "Invalid refresh token"


async def test_refresh_wants_json_not_a_form(client: httpx.AsyncClient) -> None:
    problem(await client.post(REFRESH, data={"refresh_token": "t"}), 415)


# -- revocation


async def test_logout_revokes_every_refresh_token_of_the_user(
    client: httpx.AsyncClient, user: User, other_user: User, session: AsyncSession
) -> None:
    laptop = await login(client, user.email, USER_PASSWORD)
    phone = await login(client, user.email, USER_PASSWORD)
    bob = await login(client, other_user.email, USER_PASSWORD)

    response = await client.post(LOGOUT, headers=auth(laptop))

    assert response.status_code == 200
    assert response.json() == {"message": "Logged out"}
    assert all(t.revoked_at is not None for t in await stored_tokens(session, user.id))
    await refused(await refresh(client, laptop["refresh_token"]))
    await refused(await refresh(client, phone["refresh_token"]))
    assert (await refresh(client, bob["refresh_token"])).status_code == 200


async def test_logout_needs_an_access_token(client: httpx.AsyncClient) -> None:
    response = await client.post(LOGOUT)
    problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


async def test_changing_my_password_revokes_my_refresh_tokens(
    client: httpx.AsyncClient, user: User, session: AsyncSession
) -> None:
    body = await login(client, user.email, USER_PASSWORD)
    changed = await client.patch(
        "/api/v1/users/me/password",
        headers=auth(body),
        json={"current_password": USER_PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 200
    assert all(t.revoked_at is not None for t in await stored_tokens(session, user.id))
    await refused(await refresh(client, body["refresh_token"]))
    # and the new password starts a new, working session
    fresh = await login(client, user.email, NEW_PASSWORD)
    assert (await refresh(client, fresh["refresh_token"])).status_code == 200


async def test_failed_password_change_revokes_nothing(
    client: httpx.AsyncClient, user: User, session: AsyncSession
) -> None:
    body = await login(client, user.email, USER_PASSWORD)
    wrong = await client.patch(
        "/api/v1/users/me/password",
        headers=auth(body),
        json={"current_password": "not-my-password", "new_password": NEW_PASSWORD},
    )
    problem(wrong, 400)
    assert (await refresh(client, body["refresh_token"])).status_code == 200


async def test_password_reset_revokes_refresh_tokens(
    client: httpx.AsyncClient, app: FastAPI, user: User, session: AsyncSession
) -> None:
    body = await login(client, user.email, USER_PASSWORD)
    token = await issue_reset_token(session, app.state.settings, user.id)
    await session.commit()
    reset = await client.post(
        "/api/v1/reset-password/", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert reset.status_code == 200
    await refused(await refresh(client, body["refresh_token"]))


async def test_superuser_setting_a_password_revokes_that_users_tokens(
    client: httpx.AsyncClient, user: User, superuser: User, session: AsyncSession
) -> None:
    alice = await login(client, user.email, USER_PASSWORD)
    admin = await login(client, superuser.email, SUPERUSER_PASSWORD)
    response = await client.patch(
        f"/api/v1/users/{user.id}", headers=auth(admin), json={"password": NEW_PASSWORD}
    )
    assert response.status_code == 200
    await refused(await refresh(client, alice["refresh_token"]))
    assert (await refresh(client, admin["refresh_token"])).status_code == 200


async def test_deactivation_revokes_sessions_and_reset_links_for_good(
    client: httpx.AsyncClient, app: FastAPI, user: User, superuser: User, session: AsyncSession
) -> None:
    """Reactivating the account brings back none of what existed before the deactivation."""
    alice = await login(client, user.email, USER_PASSWORD)
    link = await issue_reset_token(session, app.state.settings, user.id)
    await session.commit()
    admin = await login(client, superuser.email, SUPERUSER_PASSWORD)
    for active in (False, True):
        response = await client.patch(
            f"/api/v1/users/{user.id}", headers=auth(admin), json={"is_active": active}
        )
        assert response.status_code == 200, response.text
        assert response.json()["is_active"] is active

    await refused(await refresh(client, alice["refresh_token"]))
    reset = await client.post(
        "/api/v1/reset-password/", json={"token": link, "new_password": NEW_PASSWORD}
    )
    assert problem(reset, 400)["detail"] == "Invalid token"
    [stored] = await stored_tokens(session, user.id)
    assert stored.revoked_at is not None
    assert (await refresh(client, admin["refresh_token"])).status_code == 200
    assert (
        await refresh(client, (await login(client, user.email, USER_PASSWORD))["refresh_token"])
    ).status_code == 200


async def test_superuser_renaming_a_user_revokes_nothing(
    client: httpx.AsyncClient, user: User, superuser: User
) -> None:
    alice = await login(client, user.email, USER_PASSWORD)
    admin = await login(client, superuser.email, SUPERUSER_PASSWORD)
    response = await client.patch(
        f"/api/v1/users/{user.id}", headers=auth(admin), json={"full_name": "Alice B."}
    )
    assert response.status_code == 200
    assert (await refresh(client, alice["refresh_token"])).status_code == 200


# -- access tokens and signing keys


async def test_access_token_carries_iss_aud_jti_and_the_signing_kid(
    client: httpx.AsyncClient, app: FastAPI, user: User
) -> None:
    body = await login(client, user.email, USER_PASSWORD)
    settings = app.state.settings
    header = jwt.get_unverified_header(body["access_token"])
    key = settings.secret_key.get_secret_value()
    assert header == {"alg": "HS256", "typ": "JWT", "kid": derive_key_id(key)}
    claims = jwt.decode(body["access_token"], key, algorithms=["HS256"], audience="keelson-api")
    assert (claims["iss"], claims["aud"], claims["sub"]) == ("keelson", "keelson-api", str(user.id))
    assert len(claims["jti"]) == 32
    assert claims["exp"] - claims["iat"] == 15 * 60


async def test_two_tokens_never_share_a_jti(client: httpx.AsyncClient, user: User) -> None:
    first = await login(client, user.email, USER_PASSWORD)
    second = await login(client, user.email, USER_PASSWORD)
    jtis = {
        jwt.decode(b["access_token"], options={"verify_signature": False})["jti"]
        for b in (first, second)
    }
    assert len(jtis) == 2


async def test_rolled_over_key_still_verifies_and_removed_key_is_401(
    client_with: ClientFactory, user: User
) -> None:
    """Roll-over: deploy the new SECRET_KEY with the old one in JWT_PREVIOUS_KEYS, then drop it."""
    _, before = await client_with(secret_key=OLD_KEY)
    old_session = await login(before, user.email, USER_PASSWORD)
    old_kid = jwt.get_unverified_header(old_session["access_token"])["kid"]
    assert old_kid == derive_key_id(OLD_KEY)

    new_app, during = await client_with(
        secret_key="new-signing-key-0123456789-abcdefghijklmnopq", jwt_previous_keys=OLD_KEY
    )
    assert (await during.get(ME, headers=auth(old_session))).status_code == 200
    new_session = await login(during, user.email, USER_PASSWORD)
    assert jwt.get_unverified_header(new_session["access_token"])["kid"] == (
        new_app.state.settings.signing_key_id
    )
    assert new_app.state.settings.signing_key_id != old_kid
    # refresh tokens are not signed at all: a key roll never logs anyone out
    assert (await refresh(during, old_session["refresh_token"])).status_code == 200

    _, after = await client_with(secret_key="new-signing-key-0123456789-abcdefghijklmnopq")
    response = await after.get(ME, headers=auth(old_session))
    assert problem(response, 401)["detail"] == "Could not validate credentials"
    assert (await after.get(ME, headers=auth(new_session))).status_code == 200


async def test_named_previous_key_verifies_under_its_own_kid(
    client_with: ClientFactory, user: User
) -> None:
    _, before = await client_with(secret_key=OLD_KEY, jwt_key_id="2026-01")
    token = await login(before, user.email, USER_PASSWORD)
    assert jwt.get_unverified_header(token["access_token"])["kid"] == "2026-01"

    _, during = await client_with(
        secret_key="new-signing-key-0123456789-abcdefghijklmnopq",
        jwt_key_id="2026-07",
        jwt_previous_keys=f"2026-01:{OLD_KEY}",
    )
    assert (await during.get(ME, headers=auth(token))).status_code == 200


async def test_a_verification_key_never_signs(client_with: ClientFactory, user: User) -> None:
    """A token signed with an old key under another key's kid is refused: the kid picks the key."""
    app, client = await client_with(
        secret_key="new-signing-key-0123456789-abcdefghijklmnopq", jwt_previous_keys=OLD_KEY
    )
    now = datetime.now(UTC)
    claims = {
        "sub": str(user.id),
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "iss": "keelson",
        "aud": "keelson-api",
        "jti": uuid.uuid4().hex,
    }
    mismatched = jwt.encode(
        claims, OLD_KEY, "HS256", headers={"kid": app.state.settings.signing_key_id}
    )
    problem(await client.get(ME, headers={"Authorization": f"Bearer {mismatched}"}), 401)
    matched = jwt.encode(claims, OLD_KEY, "HS256", headers={"kid": derive_key_id(OLD_KEY)})
    assert (await client.get(ME, headers={"Authorization": f"Bearer {matched}"})).status_code == 200
