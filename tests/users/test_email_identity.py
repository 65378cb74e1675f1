"""One address is one account whatever its case or Unicode form, decided in Python (NFC +
casefold) and stored that way, so a C-collation database (whose lower() lowers ASCII only)
behaves like any other: sign-up, login, recovery and the throttle all agree."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.auth.live import LOGIN, Live, live_app, own_database_fixture
from tests.conftest import problem
from tests.support.smtp import SmtpServer, reset_token_in, running_smtp_server

TYPED = "Élodie@example.com"
STORED = "élodie@example.com"
PASSWORD = "elodie-password-1"
ACCOUNT_LIMIT = 3


database = own_database_fixture("keelson_email")


@pytest.fixture
async def smtp_server() -> AsyncIterator[SmtpServer]:
    """tests/support/smtp.py's server, with SMTPUTF8: a non-ASCII recipient needs a relay that
    offers it (aiosmtplib refuses to send otherwise, and the mail is logged as failed)."""
    async with running_smtp_server(smtputf8=True) as server:
        yield server


@pytest.fixture
async def live(database: str, smtp_server: SmtpServer) -> AsyncIterator[Live]:
    settings = {"login_max_failures_per_account": ACCOUNT_LIMIT, **smtp_server.settings()}
    async with live_app(database, **settings) as live:
        yield live


async def sign_up(live: Live, email: str) -> int:
    response = await live.client.post(
        "/api/v1/users/signup", json={"email": email, "password": PASSWORD}
    )
    return response.status_code


def test_normal_form_is_nfc_casefold() -> None:
    from service.users.models import normalize_email  # here: the module also runs against main

    assert normalize_email(" E\u0301LODIE@Example.COM ") == STORED
    assert normalize_email("Straße@x.io") == "strasse@x.io"


async def test_the_database_is_c_collated(live: Live) -> None:
    """The premise of this module: lower() here would not lower É."""
    collation = await live.scalar(
        "SELECT datcollate FROM pg_database WHERE datname = current_database()"
    )
    assert collation == "C"
    assert await live.scalar("SELECT lower('É')") == "É"


async def test_a_non_ascii_address_signs_up_logs_in_and_recovers(
    live: Live, smtp_server: SmtpServer
) -> None:
    signed_up = await live.client.post(
        "/api/v1/users/signup", json={"email": TYPED, "password": PASSWORD}
    )
    assert signed_up.status_code == 200, signed_up.text
    assert signed_up.json()["email"] == STORED
    assert await live.scalar("SELECT email FROM users") == STORED

    for form in (TYPED, STORED, "E\u0301LODIE@EXAMPLE.COM"):
        await live.login(form, PASSWORD)

    recovered = await live.client.post(f"/api/v1/password-recovery/{TYPED}")
    assert recovered.status_code == 200
    [mail] = [m for m in smtp_server.received if "reset-password" in m.text]
    assert mail.rcpt_tos == [STORED]
    reset = await live.client.post(
        "/api/v1/reset-password/",
        json={"token": reset_token_in(mail.text), "new_password": "elodie-password-2"},
    )
    assert reset.status_code == 200, reset.text
    await live.login(TYPED, "elodie-password-2")


@pytest.mark.parametrize("twin", [STORED, "E\u0301lodie@example.com", "ÉLODIE@EXAMPLE.COM"])
async def test_another_form_of_the_address_cannot_sign_up_beside_it(live: Live, twin: str) -> None:
    assert await sign_up(live, TYPED) == 200
    response = await live.client.post(
        "/api/v1/users/signup", json={"email": twin, "password": PASSWORD}
    )
    assert problem(response, 409)["detail"] == (
        "The user with this email already exists in the system"
    )
    assert await live.scalar("SELECT count(*) FROM users") == 1


async def test_an_admin_cannot_rename_someone_onto_another_form_of_the_address(
    live: Live,
) -> None:
    admin = await live.user("root@example.com", is_superuser=True)
    assert await sign_up(live, TYPED) == 200
    other = await live.user("other@example.com")
    response = await live.client.patch(
        f"/api/v1/users/{other.id}",
        headers=live.headers(admin),
        json={"email": "ÉLODIE@example.com"},
    )
    assert problem(response, 409)["detail"] == (
        "The user with this email already exists in the system"
    )


async def test_every_form_of_the_address_counts_on_one_throttle(live: Live) -> None:
    assert await sign_up(live, TYPED) == 200
    for form in (TYPED, STORED, "E\u0301LODIE@example.com"):
        failed = await live.client.post(LOGIN, data={"username": form, "password": "wrong-pass-1"})
        assert problem(failed, 400)["detail"] == "Incorrect email or password"

    throttled = await live.client.post(LOGIN, data={"username": STORED, "password": PASSWORD})

    assert problem(throttled, 429)["detail"] == "Too many failed login attempts; try again later"


async def test_the_lookup_by_email_uses_the_unique_index(live: Live) -> None:
    """lower(stored) = lower(normalised) is what the repository sends (both sides through the
    same lower(), whatever the collation); the expression index must still serve it."""
    await live.scalar(
        "WITH made AS (INSERT INTO users (id, email, hashed_password, is_active, is_superuser)"
        " SELECT gen_random_uuid(), 'u' || n || '@x.io', 'h', true, false"
        " FROM generate_series(1, 5000) AS n RETURNING 1) SELECT count(*) FROM made"
    )
    async with live.db.engine.begin() as connection:
        await connection.exec_driver_sql("ANALYZE users")
        rows = await connection.exec_driver_sql(
            "EXPLAIN SELECT id FROM users WHERE lower(email) = lower($1::VARCHAR)", ("u7@x.io",)
        )
        plan = "\n".join(row[0] for row in rows)
    assert "uq_users_email_lower" in plan, plan
