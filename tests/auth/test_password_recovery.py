"""Password recovery: a mail with a single-use link, the same answer for every email, reset rules.

Mail goes to a real aiosmtpd server in this process (tests/support/smtp.py).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from service.auth.models import PasswordResetToken
from service.auth.service import MAX_LIVE_RESET_TOKENS, issue_reset_token
from service.core.digests import sha256_hex as digest
from service.users.models import User
from tests.conftest import USER_PASSWORD, UserFactory, bearer, problem
from tests.support.logs import json_log_lines
from tests.support.smtp import ClientFactory, SmtpServer, reset_token_in, unused_port

RECOVER = "/api/v1/password-recovery/{}"
RESET = "/api/v1/reset-password/"
HTML = "/api/v1/password-recovery-html-content/{}"
SAME_ANSWER = {"message": "If that email is registered, we sent a password recovery link"}
NEW_PASSWORD = "brand-new-password-1"


async def stored_hash(session: AsyncSession, user_id: uuid.UUID) -> str:
    """Read from the table, not the identity map (which would also overwrite the test's User)."""
    result = await session.exec(select(User.hashed_password).where(User.id == user_id))
    return result.one()


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post(
        "/api/v1/login/access-token", data={"username": email, "password": password}
    )


async def reset_token_for(session: AsyncSession, app: FastAPI, user: User) -> str:
    """A reset token issued the way the service issues them, committed for the API to see."""
    token = await issue_reset_token(session, app.state.settings, user.id)
    await session.commit()
    return token


async def stored_reset_tokens(
    session: AsyncSession, user_id: uuid.UUID
) -> list[PasswordResetToken]:
    result = await session.exec(
        select(PasswordResetToken)
        .where(PasswordResetToken.user_id == user_id)
        .order_by(col(PasswordResetToken.created_at))
        .execution_options(populate_existing=True)
    )
    return list(result.all())


def emails_counted(app: FastAPI, kind: str, outcome: str) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value("keelson_emails_total", {"kind": kind, "outcome": outcome})
    return value or 0.0


def mail_events(output: str) -> list[dict[str, Any]]:
    """The email_* events among the JSON log lines the service wrote to stdout."""
    return [e for e in json_log_lines(output) if str(e.get("event", "")).startswith("email_")]


async def test_known_and_unknown_emails_get_the_same_answer(
    client: httpx.AsyncClient, user: User
) -> None:
    known = await client.post(RECOVER.format("alice@example.com"))
    unknown = await client.post(RECOVER.format("nobody@example.com"))
    assert known.status_code == unknown.status_code == 200
    assert known.json() == unknown.json() == SAME_ANSWER


async def test_recovery_mail_arrives_with_a_reset_link(
    mail_client: tuple[FastAPI, httpx.AsyncClient], smtp_server: SmtpServer, user: User
) -> None:
    _, client = mail_client
    response = await client.post(RECOVER.format("alice@example.com"))
    assert response.status_code == 200
    assert response.json() == SAME_ANSWER
    [mail] = await smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["alice@example.com"]
    assert mail.message["To"] == "alice@example.com"
    assert mail.message["Subject"] == "Keelson - Password recovery"
    assert "noreply@example.com" in mail.message["From"]
    assert "http://localhost:5173/reset-password?token=" in mail.text
    assert reset_token_in(mail.text) == reset_token_in(mail.html)


async def test_recovery_email_lookup_is_case_insensitive(
    mail_client: tuple[FastAPI, httpx.AsyncClient], smtp_server: SmtpServer, user: User
) -> None:
    _, client = mail_client
    assert (await client.post(RECOVER.format("ALICE@Example.com"))).json() == SAME_ANSWER
    [mail] = await smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["alice@example.com"]


@pytest.mark.parametrize("email", ["nobody@example.com", "sleeper@example.com"])
async def test_no_mail_for_unknown_or_inactive_accounts(
    mail_client: tuple[FastAPI, httpx.AsyncClient],
    smtp_server: SmtpServer,
    make_user: UserFactory,
    email: str,
) -> None:
    _, client = mail_client
    await make_user("sleeper@example.com", is_active=False)
    response = await client.post(RECOVER.format(email))
    assert response.json() == SAME_ANSWER
    assert smtp_server.received == []


async def test_mailed_token_resets_the_password(
    mail_client: tuple[FastAPI, httpx.AsyncClient],
    smtp_server: SmtpServer,
    user: User,
    session: AsyncSession,
) -> None:
    _, client = mail_client
    await client.post(RECOVER.format("alice@example.com"))
    [mail] = await smtp_server.wait_for(1)

    response = await client.post(
        RESET, json={"token": reset_token_in(mail.text), "new_password": NEW_PASSWORD}
    )
    assert response.status_code == 200
    assert response.json() == {"message": "Password updated successfully"}
    assert await stored_hash(session, user.id) != user.hashed_password
    assert (await login(client, "alice@example.com", NEW_PASSWORD)).status_code == 200
    problem(await login(client, "alice@example.com", USER_PASSWORD), 400)


async def test_reset_token_works_only_once(
    mail_client: tuple[FastAPI, httpx.AsyncClient],
    smtp_server: SmtpServer,
    user: User,
    session: AsyncSession,
) -> None:
    _, client = mail_client
    await client.post(RECOVER.format("alice@example.com"))
    token = reset_token_in((await smtp_server.wait_for(1))[0].text)
    first = await client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
    assert first.status_code == 200
    after_first = await stored_hash(session, user.id)

    again = await client.post(RESET, json={"token": token, "new_password": "third-password-1"})
    assert problem(again, 400)["detail"] == "Invalid token"
    assert await stored_hash(session, user.id) == after_first
    assert (await login(client, "alice@example.com", NEW_PASSWORD)).status_code == 200


async def test_older_reset_tokens_die_when_the_password_changes(
    client: httpx.AsyncClient,
    app: FastAPI,
    user: User,
    user_headers: dict[str, str],
    session: AsyncSession,
) -> None:
    token = await reset_token_for(session, app, user)
    changed = await client.patch(
        "/api/v1/users/me/password",
        headers=user_headers,
        json={"current_password": USER_PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 200
    response = await client.post(RESET, json={"token": token, "new_password": "third-password-1"})
    assert problem(response, 400)["detail"] == "Invalid token"


@pytest.mark.parametrize(
    "token",
    ["not-a-token", "a.b.c", "x" * 2048, "' OR 1=1 --"],
    ids=["garbage", "three-dots", "longest-allowed", "sql"],
)
async def test_bad_token_is_400_and_changes_nothing(
    client: httpx.AsyncClient, user: User, session: AsyncSession, token: str
) -> None:
    response = await client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
    assert problem(response, 400)["detail"] == "Invalid token"
    assert await stored_hash(session, user.id) == user.hashed_password


async def test_access_token_is_not_a_reset_token(
    client: httpx.AsyncClient, app: FastAPI, user: User, session: AsyncSession
) -> None:
    access = bearer(app, user)["Authorization"].removeprefix("Bearer ")
    response = await client.post(RESET, json={"token": access, "new_password": NEW_PASSWORD})
    assert problem(response, 400)["detail"] == "Invalid token"
    assert await stored_hash(session, user.id) == user.hashed_password


async def test_expired_reset_token_is_400(
    client: httpx.AsyncClient, app: FastAPI, user: User, session: AsyncSession
) -> None:
    token = await reset_token_for(session, app, user)
    await session.exec(
        update(PasswordResetToken)
        .where(col(PasswordResetToken.token_hash) == digest(token))
        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    await session.commit()
    response = await client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
    assert problem(response, 400)["detail"] == "Invalid token"
    assert await stored_hash(session, user.id) == user.hashed_password


async def test_reset_tokens_are_stored_only_as_digests(
    mail_client: tuple[FastAPI, httpx.AsyncClient],
    smtp_server: SmtpServer,
    user: User,
    session: AsyncSession,
) -> None:
    _, client = mail_client
    await client.post(RECOVER.format("alice@example.com"))
    token = reset_token_in((await smtp_server.wait_for(1))[0].text)
    [stored] = await stored_reset_tokens(session, user.id)
    assert stored.token_hash == digest(token) != token
    assert stored.used_at is None
    lifetime = stored.expires_at - stored.created_at
    assert lifetime == timedelta(hours=1)
    rows = await session.exec(text("SELECT t::text FROM password_reset_tokens t"))  # type: ignore[call-overload]
    assert all(token not in row for (row,) in rows.all())  # no column holds the token itself


async def test_spent_token_is_marked_used_and_kills_the_other_links(
    client: httpx.AsyncClient, app: FastAPI, user: User, session: AsyncSession
) -> None:
    first = await reset_token_for(session, app, user)
    second = await reset_token_for(session, app, user)
    used = await client.post(RESET, json={"token": second, "new_password": NEW_PASSWORD})
    assert used.status_code == 200
    assert all(t.used_at is not None for t in await stored_reset_tokens(session, user.id))
    other = await client.post(RESET, json={"token": first, "new_password": "third-password-1"})
    assert problem(other, 400)["detail"] == "Invalid token"


async def test_recovery_stops_mailing_when_enough_links_are_out(
    mail_client: tuple[FastAPI, httpx.AsyncClient],
    smtp_server: SmtpServer,
    user: User,
    session: AsyncSession,
) -> None:
    """Nobody can flood a mailbox: past the live-link cap the answer is the same, no mail."""
    _, client = mail_client
    for _ in range(MAX_LIVE_RESET_TOKENS + 2):
        response = await client.post(RECOVER.format("alice@example.com"))
        assert response.json() == SAME_ANSWER
    await smtp_server.wait_for(MAX_LIVE_RESET_TOKENS)
    assert len(await smtp_server.delivered_so_far()) == MAX_LIVE_RESET_TOKENS
    assert len(await stored_reset_tokens(session, user.id)) == MAX_LIVE_RESET_TOKENS


async def test_reset_token_of_a_deleted_user_is_400(
    client: httpx.AsyncClient, app: FastAPI, make_user: UserFactory, session: AsyncSession
) -> None:
    gone = await make_user("gone@example.com")
    token = await reset_token_for(session, app, gone)
    await session.delete(gone)
    await session.commit()
    response = await client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
    assert problem(response, 400)["detail"] == "Invalid token"


async def test_inactive_user_cannot_reset(
    client: httpx.AsyncClient, app: FastAPI, make_user: UserFactory, session: AsyncSession
) -> None:
    sleeper = await make_user("sleeper@example.com", is_active=False)
    token = await reset_token_for(session, app, sleeper)
    response = await client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
    assert problem(response, 400)["detail"] == "Inactive user"
    assert await stored_hash(session, sleeper.id) == sleeper.hashed_password


@pytest.mark.parametrize("new_password", ["short-7", "p" * 129, ""], ids=["7", "129", "empty"])
async def test_new_password_length_is_limited(
    client: httpx.AsyncClient, app: FastAPI, user: User, session: AsyncSession, new_password: str
) -> None:
    token = await reset_token_for(session, app, user)
    response = await client.post(RESET, json={"token": token, "new_password": new_password})
    body = problem(response, 422)
    assert body["errors"][0]["loc"] == ["body", "new_password"]
    if new_password:
        assert new_password not in response.text
    assert await stored_hash(session, user.id) == user.hashed_password


@pytest.mark.parametrize(
    "payload",
    [
        {"new_password": NEW_PASSWORD},
        {"token": "t"},
    ],
    ids=["no-token", "no-password"],
)
async def test_reset_body_needs_token_and_password(
    client: httpx.AsyncClient, payload: dict[str, Any]
) -> None:
    problem(await client.post(RESET, json=payload), 422)


async def test_reset_body_ignores_unknown_fields(client: httpx.AsyncClient) -> None:
    payload = {"token": "t", "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}
    assert problem(await client.post(RESET, json=payload), 400)["detail"] == "Invalid token"


async def test_smtp_down_still_answers_200_and_logs_the_failure(
    client_with: ClientFactory, user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    app, client = await client_with(smtp_host="127.0.0.1", smtp_port=unused_port(), smtp_tls=False)
    capsys.readouterr()
    failed_before = emails_counted(app, "reset_password", "failed")

    response = await client.post(RECOVER.format("alice@example.com"))

    assert response.status_code == 200
    assert response.json() == SAME_ANSWER
    assert emails_counted(app, "reset_password", "failed") == failed_before + 1
    output = capsys.readouterr().out
    [event] = mail_events(output)
    assert event["event"] == "email_failed"
    assert event["subject"] == "Keelson - Password recovery"
    assert event["error"].startswith("SMTP")  # the exception's class name, e.g. SMTPConnectError
    assert event["level"] == "error"
    assert "reset-password?token=" not in output


async def test_without_smtp_the_mail_is_skipped_and_logged(
    client: httpx.AsyncClient, app: FastAPI, user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not app.state.mailer.enabled
    capsys.readouterr()
    response = await client.post(RECOVER.format("alice@example.com"))
    assert response.json() == SAME_ANSWER
    [event] = mail_events(capsys.readouterr().out)
    assert (event["event"], event["reason"]) == ("email_skipped", "smtp_not_configured")


@pytest.mark.parametrize("email", ["ab", "a" * 256 + "@example.com"], ids=["too-short", "too-long"])
async def test_recovery_email_path_length_is_limited(client: httpx.AsyncClient, email: str) -> None:
    problem(await client.post(RECOVER.format(email)), 422)


async def test_superuser_gets_the_recovery_html(
    client: httpx.AsyncClient,
    app: FastAPI,
    user: User,
    superuser_headers: dict[str, str],
    session: AsyncSession,
) -> None:
    response = await client.post(HTML.format("alice@example.com"), headers=superuser_headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["subject"] == "Keelson - Password recovery"
    assert "Hello alice@example.com" in response.text
    token = reset_token_in(response.text)
    reset = await client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
    assert reset.status_code == 200
    assert await stored_hash(session, user.id) != user.hashed_password


async def test_plain_user_cannot_get_the_recovery_html(
    client: httpx.AsyncClient, user: User, other_user: User, user_headers: dict[str, str]
) -> None:
    response = await client.post(HTML.format("bob@example.com"), headers=user_headers)
    assert problem(response, 403)["detail"] == "The user doesn't have enough privileges"
    assert "reset-password" not in response.text


async def test_recovery_html_needs_a_token(client: httpx.AsyncClient, user: User) -> None:
    response = await client.post(HTML.format("alice@example.com"))
    problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


async def test_recovery_html_for_an_impossible_email_is_404(
    client: httpx.AsyncClient, superuser_headers: dict[str, str]
) -> None:
    response = await client.post(HTML.format("admin%00@example.com"), headers=superuser_headers)
    problem(response, 404)


async def test_recovery_html_for_unknown_email_is_404(
    client: httpx.AsyncClient, superuser_headers: dict[str, str]
) -> None:
    response = await client.post(HTML.format("nobody@example.com"), headers=superuser_headers)
    assert (
        problem(response, 404)["detail"] == "The user with this email does not exist in the system"
    )
