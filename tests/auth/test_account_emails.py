"""The new-account email (a superuser's create only, as in the template) over real SMTP."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from prometheus_client import REGISTRY

from service.users.models import User
from tests.conftest import bearer
from tests.support.smtp import ClientFactory, SmtpServer, unused_port

SIGNUP = "/api/v1/users/signup"
CREATE = "/api/v1/users/"
PASSWORD = "signup-password-1"


def emails_counted(kind: str, outcome: str) -> float:
    sample = REGISTRY.get_sample_value("keelson_emails_total", {"kind": kind, "outcome": outcome})
    return sample or 0.0


async def test_superuser_create_mails_the_new_account_without_its_password(
    mail_client: tuple[FastAPI, httpx.AsyncClient], smtp_server: SmtpServer, superuser: User
) -> None:
    app, client = mail_client
    sent_before = emails_counted("new_account", "sent")
    response = await client.post(
        CREATE,
        headers=bearer(app, superuser),
        json={"email": "made@example.com", "password": PASSWORD},
    )
    assert response.status_code == 200

    [mail] = await smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["made@example.com"]
    assert mail.message["Subject"] == "Keelson - New account for made@example.com"
    assert "http://localhost:5173" in mail.text
    assert 'href="http://localhost:5173"' in mail.html
    assert PASSWORD not in mail.text
    assert PASSWORD not in mail.html
    assert emails_counted("new_account", "sent") == sent_before + 1


async def first_mail_after_asking_a_reset_for(
    client: httpx.AsyncClient, smtp_server: SmtpServer, email: str
) -> str:
    """Ask a reset for `email` and wait for the first mail: any mail an earlier request sent
    arrived before it (the app's background tasks end before its answer does, here)."""
    assert (await client.post(f"/api/v1/password-recovery/{email}")).status_code == 200
    [first] = await smtp_server.wait_for(1)
    return str(first.message["Subject"])


async def test_signup_mails_nothing_as_in_the_template(
    mail_client: tuple[FastAPI, httpx.AsyncClient], smtp_server: SmtpServer
) -> None:
    _, client = mail_client
    sent_before = emails_counted("new_account", "sent")
    response = await client.post(SIGNUP, json={"email": "new@example.com", "password": PASSWORD})
    assert response.status_code == 200
    subject = await first_mail_after_asking_a_reset_for(client, smtp_server, "new@example.com")
    assert subject == "Keelson - Password recovery"
    assert emails_counted("new_account", "sent") == sent_before


async def test_refused_create_sends_nothing(
    mail_client: tuple[FastAPI, httpx.AsyncClient],
    smtp_server: SmtpServer,
    superuser: User,
    user: User,
) -> None:
    app, client = mail_client
    duplicate = await client.post(
        CREATE, headers=bearer(app, superuser), json={"email": user.email, "password": PASSWORD}
    )
    assert duplicate.status_code == 409
    subject = await first_mail_after_asking_a_reset_for(client, smtp_server, user.email)
    assert subject == "Keelson - Password recovery"
    assert len(smtp_server.received) == 1


async def test_without_smtp_create_sends_nothing(
    client: httpx.AsyncClient, app: FastAPI, superuser: User
) -> None:
    assert not app.state.mailer.enabled
    before = emails_counted("new_account", "skipped") + emails_counted("new_account", "sent")
    response = await client.post(
        CREATE,
        headers=bearer(app, superuser),
        json={"email": "new@example.com", "password": PASSWORD},
    )
    assert response.status_code == 200
    after = emails_counted("new_account", "skipped") + emails_counted("new_account", "sent")
    assert after == before


async def test_smtp_down_create_still_succeeds_and_the_failure_is_counted(
    client_with: ClientFactory, superuser: User
) -> None:
    app, client = await client_with(smtp_host="127.0.0.1", smtp_port=unused_port(), smtp_tls=False)
    failed_before = emails_counted("new_account", "failed")
    response = await client.post(
        CREATE,
        headers=bearer(app, superuser),
        json={"email": "new@example.com", "password": PASSWORD},
    )
    assert response.status_code == 200
    assert response.json()["email"] == "new@example.com"
    assert emails_counted("new_account", "failed") == failed_before + 1
