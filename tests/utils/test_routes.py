"""The /utils endpoints: health check and the superuser's test email (real SMTP, in process)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from service.users.models import User
from tests.conftest import bearer, problem
from tests.support.smtp import ClientFactory, SmtpServer, unused_port

TEST_EMAIL = "/api/v1/utils/test-email/"


async def test_health_check_answers_true_without_auth(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/utils/health-check/")
    assert response.status_code == 200
    assert response.json() is True
    assert response.headers["x-request-id"]


async def test_test_email_is_sent_and_arrives(
    mail_client: tuple[FastAPI, httpx.AsyncClient], smtp_server: SmtpServer, superuser: User
) -> None:
    app, client = mail_client
    response = await client.post(
        TEST_EMAIL, params={"email_to": "ops@example.com"}, headers=bearer(app, superuser)
    )
    assert response.status_code == 201
    assert response.json() == {"message": "Test email sent"}
    [mail] = await smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["ops@example.com"]
    assert mail.message["Subject"] == "Keelson - Test email"
    assert "Keelson" in mail.message["From"]
    assert "SMTP works" in mail.text
    assert "SMTP works" in mail.html


async def test_test_email_without_smtp_is_503(
    client: httpx.AsyncClient, superuser_headers: dict[str, str]
) -> None:
    response = await client.post(
        TEST_EMAIL, params={"email_to": "ops@example.com"}, headers=superuser_headers
    )
    assert problem(response, 503)["detail"] == "Email is not configured (set SMTP_HOST)"


async def test_test_email_with_smtp_down_is_503(
    client_with: ClientFactory, superuser: User
) -> None:
    app, client = await client_with(smtp_host="127.0.0.1", smtp_port=unused_port(), smtp_tls=False)
    response = await client.post(
        TEST_EMAIL, params={"email_to": "ops@example.com"}, headers=bearer(app, superuser)
    )
    assert problem(response, 503)["detail"] == "The SMTP server did not accept the message"


async def test_plain_user_cannot_send_test_email(
    mail_client: tuple[FastAPI, httpx.AsyncClient], smtp_server: SmtpServer, user: User
) -> None:
    app, client = mail_client
    response = await client.post(
        TEST_EMAIL, params={"email_to": "ops@example.com"}, headers=bearer(app, user)
    )
    assert problem(response, 403)["detail"] == "The user doesn't have enough privileges"
    assert smtp_server.received == []


async def test_test_email_needs_a_token(client: httpx.AsyncClient) -> None:
    response = await client.post(TEST_EMAIL, params={"email_to": "ops@example.com"})
    problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "params",
    [
        {"email_to": "not-an-email"},
        {"email_to": ""},
        {"email_to": "a" * 250 + "@example.com"},
        {"email_to": "ops@example.com\r\nBcc: victim@example.com"},
        {},
    ],
    ids=["not-an-email", "empty", "too-long", "header-injection", "missing"],
)
async def test_bad_email_to_is_422(
    mail_client: tuple[FastAPI, httpx.AsyncClient],
    smtp_server: SmtpServer,
    superuser: User,
    params: dict[str, str],
) -> None:
    app, client = mail_client
    response = await client.post(TEST_EMAIL, params=params, headers=bearer(app, superuser))
    body = problem(response, 422)
    assert body["errors"][0]["loc"] == ["query", "email_to"]
    assert smtp_server.received == []
