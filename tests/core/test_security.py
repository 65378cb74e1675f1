"""Access tokens: only an unexpired HS256 token from this service, for this API, gets in.

Tokens are forged with PyJWT the way an attacker would; every refusal is a 401 problem with a
Bearer challenge, whichever check failed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from sqlmodel.ext.asyncio.session import AsyncSession

from service.auth.service import issue_reset_token
from service.core.config import Settings
from service.core.security import PasswordHashing, TokenCodec
from service.users.models import User
from tests.conftest import USER_PASSWORD, bearer, make_settings, problem

ME = "/api/v1/users/me"


def key_of(settings: Settings) -> str:
    return settings.secret_key.get_secret_value()


def claims_for(user: User, **changes: Any) -> dict[str, Any]:
    """Valid access-token claims; a change set to None removes that claim."""
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": str(user.id),
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "iss": "keelson",
        "aud": "keelson-api",
        "jti": uuid.uuid4().hex,
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def forge(settings: Settings, claims: dict[str, Any], algorithm: str = "HS256") -> str:
    """Signed with SECRET_KEY and named by its kid, as the service signs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns about short HMAC keys for HS384/HS512
        return jwt.encode(
            claims, key_of(settings), algorithm=algorithm, headers={"kid": settings.signing_key_id}
        )


def b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, default=str).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def assert_refused(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    response = await client.get(ME, headers={"Authorization": f"Bearer {token}"})
    body = problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert body["detail"] in {"Could not validate credentials", "Not authenticated"}
    assert "email" not in body
    return body


async def test_forged_token_with_the_right_key_and_claims_is_accepted(
    client: httpx.AsyncClient, app: FastAPI, user: User
) -> None:
    """The control for every refusal below: the forgery helper itself builds good tokens."""
    token = forge(app.state.settings, claims_for(user))
    response = await client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json()["id"] == str(user.id)


async def test_alg_none_token_is_401(client: httpx.AsyncClient, user: User) -> None:
    claims = claims_for(user)
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    await assert_refused(client, unsigned)
    await assert_refused(client, jwt.encode(claims, None, algorithm="none"))


@pytest.mark.parametrize(
    "kid",
    [None, "", "unknown-kid", "../../../dev/null", "' OR '1'='1"],
    ids=["no-kid", "empty", "unknown", "path", "sql"],
)
async def test_token_without_a_configured_kid_is_401(
    client: httpx.AsyncClient, app: FastAPI, user: User, kid: str | None
) -> None:
    """The right key and claims are not enough: the kid must name a configured key."""
    headers = {} if kid is None else {"kid": kid}
    token = jwt.encode(claims_for(user), key_of(app.state.settings), "HS256", headers=headers)
    await assert_refused(client, token)


async def test_token_signed_with_another_key_is_401(
    client: httpx.AsyncClient, app: FastAPI, user: User
) -> None:
    """Even when it names our key's kid."""
    token = jwt.encode(
        claims_for(user),
        "another-secret-key-of-the-same-length-0123",
        "HS256",
        headers={"kid": app.state.settings.signing_key_id},
    )
    await assert_refused(client, token)


async def test_expired_token_is_401(client: httpx.AsyncClient, app: FastAPI, user: User) -> None:
    past = datetime.now(UTC) - timedelta(hours=1)
    token = forge(app.state.settings, claims_for(user, iat=past, exp=past + timedelta(minutes=5)))
    await assert_refused(client, token)


async def test_token_just_past_expiry_is_401(
    client: httpx.AsyncClient, app: FastAPI, user: User
) -> None:
    now = datetime.now(UTC)
    token = forge(
        app.state.settings,
        claims_for(user, iat=now - timedelta(minutes=5), exp=now - timedelta(seconds=2)),
    )
    await assert_refused(client, token)


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "iss", "aud", "jti"])
async def test_token_missing_a_required_claim_is_401(
    client: httpx.AsyncClient, app: FastAPI, user: User, claim: str
) -> None:
    await assert_refused(client, forge(app.state.settings, claims_for(user, **{claim: None})))


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": "keelson-password-reset"},
        {"aud": "some-other-api"},
        {"aud": ["some-other-api"]},
        {"iss": "someone-else"},
        {"sub": "not-a-uuid"},
        {"sub": 12345},
        {"exp": "tomorrow"},
        {"iat": datetime.now(UTC) + timedelta(hours=1)},
        {"nbf": datetime.now(UTC) + timedelta(hours=1)},
    ],
    ids=[
        "reset-audience",
        "other-audience",
        "other-audience-list",
        "other-issuer",
        "sub-not-uuid",
        "sub-not-string",
        "exp-not-number",
        "issued-in-the-future",
        "not-yet-valid",
    ],
)
async def test_token_with_wrong_claims_is_401(
    client: httpx.AsyncClient, app: FastAPI, user: User, changes: dict[str, Any]
) -> None:
    await assert_refused(client, forge(app.state.settings, claims_for(user, **changes)))


async def test_token_for_a_user_that_never_existed_is_401(
    client: httpx.AsyncClient, app: FastAPI, user: User
) -> None:
    stranger = User(id=uuid.uuid4(), email="ghost@example.com", hashed_password="x")
    await assert_refused(client, forge(app.state.settings, claims_for(stranger)))


async def test_tampered_payload_is_401(
    client: httpx.AsyncClient, app: FastAPI, user: User, superuser: User
) -> None:
    header, _, signature = forge(app.state.settings, claims_for(user)).split(".")
    promoted = b64(claims_for(superuser) | {"iat": 0, "exp": 4_102_444_800})
    await assert_refused(client, f"{header}.{promoted}.{signature}")


async def test_flipped_signature_is_401(
    client: httpx.AsyncClient, app: FastAPI, user: User
) -> None:
    token = bearer(app, user)["Authorization"].removeprefix("Bearer ")
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    await assert_refused(client, f"{head}.{payload}.{flipped}")


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
async def test_other_hmac_algorithm_with_the_right_key_is_401(
    client: httpx.AsyncClient, app: FastAPI, user: User, algorithm: str
) -> None:
    """The algorithm is pinned to HS256; a token cannot choose how it is checked."""
    await assert_refused(client, forge(app.state.settings, claims_for(user), algorithm))


async def test_reset_token_is_not_an_access_token(
    client: httpx.AsyncClient, app: FastAPI, user: User, session: AsyncSession
) -> None:
    token = await issue_reset_token(session, app.state.settings, user.id)
    await session.commit()
    await assert_refused(client, token)


@pytest.mark.parametrize(
    "garbage",
    [
        "garbage",
        "a.b.c",
        "..",
        "e30.e30.",
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln",
        "x" * 5000,
        "Bearer",
        "' OR '1'='1",
    ],
)
async def test_garbage_token_is_401(client: httpx.AsyncClient, user: User, garbage: str) -> None:
    await assert_refused(client, garbage)


@pytest.mark.parametrize(
    "authorization", ["", "Bearer", "Bearer ", "Basic YWxpY2U6cGFzc3dvcmQ=", "Token abc"]
)
async def test_missing_or_non_bearer_credentials_are_401(
    client: httpx.AsyncClient, authorization: str
) -> None:
    response = await client.get(ME, headers={"Authorization": authorization})
    assert problem(response, 401)["detail"] == "Not authenticated"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_bearer_scheme_is_case_insensitive(
    client: httpx.AsyncClient, app: FastAPI, user: User
) -> None:
    token = bearer(app, user)["Authorization"].removeprefix("Bearer ")
    response = await client.get(ME, headers={"Authorization": f"bearer {token}"})
    assert response.status_code == 200


async def test_issued_access_token_is_hs256_with_every_required_claim(
    client: httpx.AsyncClient, app: FastAPI, user: User
) -> None:
    response = await client.post(
        "/api/v1/login/access-token",
        data={"username": "alice@example.com", "password": USER_PASSWORD},
    )
    token = response.json()["access_token"]
    settings = app.state.settings
    assert jwt.get_unverified_header(token) == {
        "alg": "HS256",
        "typ": "JWT",
        "kid": settings.signing_key_id,
    }
    claims = jwt.decode(token, key_of(settings), algorithms=["HS256"], audience="keelson-api")
    assert claims.keys() >= {"sub", "iat", "exp", "iss", "aud", "jti"}
    assert (claims["sub"], claims["iss"], claims["aud"]) == (str(user.id), "keelson", "keelson-api")
    assert claims["exp"] - claims["iat"] == settings.access_token_expire_minutes * 60


async def test_argon2_hashing_leaves_the_event_loop_free(database_url: str) -> None:
    """At the production cost (64 MiB, t=3, p=4) a hash takes tens of milliseconds; the loop
    must keep running other tasks meanwhile, or one login would stall every request."""
    passwords = PasswordHashing(
        make_settings(
            database_url, argon2_memory_kib=65_536, argon2_time_cost=3, argon2_parallelism=4
        )
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    try:
        background = asyncio.create_task(ticker())
        started = time.perf_counter()
        hashed = await passwords.hash("a-password-to-hash")
        elapsed_s = time.perf_counter() - started
        background.cancel()
    finally:
        passwords.close()
    assert hashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert elapsed_s > 0.005, "the hash was too cheap to tell anything"
    assert ticks >= 3, f"the loop ran {ticks} times during a {elapsed_s * 1000:.0f} ms hash"


async def test_a_remembered_token_is_refused_once_it_expires(
    client: httpx.AsyncClient, app: FastAPI, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    token = forge(app.state.settings, claims_for(user, exp=now + timedelta(seconds=30)))
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(2):  # verified, then answered from the verified tokens
        response = await client.get(ME, headers=headers)
        assert (response.status_code, response.json()["id"]) == (200, str(user.id))
    later = time.time() + 31
    monkeypatch.setattr("service.core.security.time.time", lambda: later)
    await assert_refused(client, token)
    assert (token, None) not in app.state.tokens._verified  # forgotten: PyJWT judges it next


async def test_remembering_a_token_lets_no_variant_of_it_in(
    client: httpx.AsyncClient, app: FastAPI, user: User
) -> None:
    token = forge(app.state.settings, claims_for(user))
    assert (await client.get(ME, headers={"Authorization": f"Bearer {token}"})).status_code == 200
    header, payload, signature = token.split(".")
    stolen = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    other = b64({**stolen, "sub": str(uuid.uuid4())})
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for variant in (f"{header}.{other}.{signature}", f"{header}.{payload}.{flipped}"):
        await assert_refused(client, variant)


def test_verified_tokens_are_bounded_first_in_first_out(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("service.core.security.VERIFIED_TOKENS_KEPT", 3)
    codec = TokenCodec(settings)
    issued = [codec.create_access_token(uuid.uuid4()) for _ in range(5)]
    for token in issued:
        assert codec.decode(token)["sub"]
    assert [token for token, _ in codec._verified] == issued[2:]
    claims = codec.decode(issued[0])  # verified again, not from memory
    claims["sub"] = "changed by a caller"
    assert codec.decode(issued[0])["sub"] != "changed by a caller"
