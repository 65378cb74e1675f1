"""The new-account email (signup and superuser create) over real SMTP, and the email counter."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from prometheus_client import REGISTRY

from service.users.models import User
from tests.conftest import bearer
from tests.support.smtp import ClientFactory, SmtpServer, unused_port

SIGNUP = "/api/v1/users/signup"
PASSWORD = "signup-password-1"


def emails_counted(kind: str, outcome: str) -> float:
    sample = REGISTRY.get_sample_value("keelson_emails_total", {"kind": kind, "outcome": outcome})
    return sample or 0.0


async def test_signup_mails_the_new_account_without_its_password(
    mail_client: tuple[FastAPI, httpx.AsyncClient], smtp_server: SmtpServer
) -> None:
    _, client = mail_client
    sent_before = emails_counted("new_account", "sent")
    response = await client.post(SIGNUP, json={"email": "new@example.com", "password": PASSWORD})
    assert response.status_code == 200

    [mail] = await smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["new@example.com"]
    assert mail.message["Subject"] == "Keelson - New account for new@example.com"
    assert "http://localhost:5173" in mail.text
    assert 'href="http://localhost:5173"' in mail.html
    assert PASSWORD not in mail.text
    assert PASSWORD not in mail.html
    assert emails_counted("new_account", "sent") == sent_before + 1


async def test_superuser_create_mails_the_new_account(
    mail_client: tuple[FastAPI, httpx.AsyncClient], smtp_server: SmtpServer, superuser: User
) -> None:
    app, client = mail_client
    response = await client.post(
        "/api/v1/users/",
        headers=bearer(app, superuser),
        json={"email": "made@example.com", "password": PASSWORD},
    )
    assert response.status_code == 200
    [mail] = await smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["made@example.com"]
    assert PASSWORD not in mail.text


async def test_refused_signup_sends_nothing(
    mail_client: tuple[FastAPI, httpx.AsyncClient], smtp_server: SmtpServer, user: User
) -> None:
    _, client = mail_client
    duplicate = await client.post(SIGNUP, json={"email": user.email, "password": PASSWORD})
    assert duplicate.status_code == 409
    assert await smtp_server.delivered_so_far() == []


async def test_without_smtp_signup_sends_nothing(client: httpx.AsyncClient, app: FastAPI) -> None:
    assert not app.state.mailer.enabled
    before = emails_counted("new_account", "skipped") + emails_counted("new_account", "sent")
    response = await client.post(SIGNUP, json={"email": "new@example.com", "password": PASSWORD})
    assert response.status_code == 200
    after = emails_counted("new_account", "skipped") + emails_counted("new_account", "sent")
    assert after == before


async def test_smtp_down_signup_still_succeeds_and_the_failure_is_counted(
    client_with: ClientFactory,
) -> None:
    _, client = await client_with(smtp_host="127.0.0.1", smtp_port=unused_port(), smtp_tls=False)
    failed_before = emails_counted("new_account", "failed")
    response = await client.post(SIGNUP, json={"email": "new@example.com", "password": PASSWORD})
    assert response.status_code == 200
    assert response.json()["email"] == "new@example.com"
    assert emails_counted("new_account", "failed") == failed_before + 1
