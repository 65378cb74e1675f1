"""What SmtpServer.delivered_so_far relies on, checked rather than assumed."""

from __future__ import annotations

import asyncio

import aiosmtplib
from fastapi import BackgroundTasks, FastAPI

from tests.support.clients import asgi_client
from tests.support.smtp import SmtpServer, running_smtp_server


def app_mailing_after_the_response(smtp: SmtpServer) -> FastAPI:
    app = FastAPI()

    async def send_late() -> None:
        await asyncio.sleep(0.3)  # a slow background task: the response went out long before
        await aiosmtplib.send(
            "Subject: late\r\n\r\nbody\r\n",
            sender="a@example.com",
            recipients=["b@example.com"],
            hostname=smtp.host,
            port=smtp.port,
        )

    @app.post("/mail")
    async def mail(background: BackgroundTasks) -> dict[str, str]:
        background.add_task(send_late)
        return {"status": "queued"}

    return app


async def test_asgi_client_returns_only_after_the_background_mail_was_received() -> None:
    async with (
        running_smtp_server() as smtp,
        asgi_client(app_mailing_after_the_response(smtp)) as c,
    ):
        response = await c.post("/mail")
        assert response.json() == {"status": "queued"}
        # No wait of any kind: the mail is already there.
        assert [mail.rcpt_tos for mail in smtp.received] == [["b@example.com"]]
        assert [m.message["Subject"] for m in await smtp.delivered_so_far()] == ["late"]


async def test_delivered_so_far_waits_for_an_open_conversation_to_end() -> None:
    async with running_smtp_server() as smtp:
        client = aiosmtplib.SMTP(hostname=smtp.host, port=smtp.port)
        await client.connect()
        assert smtp.open_sessions == 1
        waiting = asyncio.create_task(smtp.delivered_so_far())
        await asyncio.sleep(0)
        assert not waiting.done()
        await client.sendmail("a@example.com", ["c@example.com"], "Subject: open\r\n\r\nx\r\n")
        await client.quit()
        assert [mail.rcpt_tos for mail in await waiting] == [["c@example.com"]]
        assert smtp.open_sessions == 0
