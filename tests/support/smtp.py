"""A real SMTP server (aiosmtpd) inside the test process, and apps wired to send mail to it.

The server runs on the test's own event loop, bound to 127.0.0.1 on a port the OS picks, so the
service's aiosmtplib client speaks real SMTP over a real socket and nothing leaves the machine.
Re-export the fixtures from a directory's conftest.py (`from tests.support.smtp import
smtp_server as smtp_server`) to use them there.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, cast
from urllib.parse import unquote

import httpx
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.core.db import Database
from service.main import create_app
from tests.conftest import _savepoint_sessions, make_settings
from tests.support.clients import asgi_client

LOOPBACK = "127.0.0.1"
_RESET_LINK = re.compile(r"/reset-password\?token=([A-Za-z0-9._~%-]+)")


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None, "the mail has no text/plain part"
        return cast(str, cast(EmailMessage, part).get_content())

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None, "the mail has no text/html part"
        return cast(str, cast(EmailMessage, part).get_content())


@dataclass(slots=True)
class SmtpServer:
    host: str
    port: int
    received: list[ReceivedMail] = field(default_factory=list)
    open_sessions: int = 0  # SMTP connections accepted and not yet closed
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def session_opened(self) -> None:
        self.open_sessions += 1
        self._idle.clear()

    def session_closed(self) -> None:
        self.open_sessions -= 1
        if self.open_sessions == 0:
            self._idle.set()

    def settings(self) -> dict[str, Any]:
        """Settings overrides that point the service at this server (plain SMTP, no STARTTLS)."""
        return {"smtp_host": self.host, "smtp_port": self.port, "smtp_tls": False}

    async def wait_for(self, count: int = 1, timeout_s: float = 5.0) -> list[ReceivedMail]:
        """The first `count` mails, waiting for them to arrive; fails after `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.received[:count]

    async def delivered_so_far(self, timeout_s: float = 5.0) -> list[ReceivedMail]:
        """Every mail received, once no SMTP conversation is still open (fails after timeout_s).

        "No (more) mail arrived" is decided on this instead of after a sleep: with the in-process
        ASGI client a request's background tasks have finished when its response is returned
        (tests/support/test_smtp.py checks that), so each mail the request sends has been
        received or is still in an open conversation, never yet to start.
        """
        async with asyncio.timeout(timeout_s):
            while self.open_sessions:
                await self._idle.wait()
        return list(self.received)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        content = envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        message = message_from_bytes(raw, policy=policy.default)
        self.received.append(
            ReceivedMail(str(envelope.mail_from), [str(r) for r in envelope.rcpt_tos], message)
        )
        self._arrived.set()
        return "250 Message accepted for delivery"


class _CountingSMTP(SMTP):
    """aiosmtpd's server protocol, telling the handler when a conversation opens and closes."""

    def __init__(self, handler: SmtpServer, **options: Any) -> None:
        super().__init__(handler, **options)
        self._counter = handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._counter.session_opened()
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self._counter.session_closed()


@contextlib.asynccontextmanager
async def running_smtp_server(*, smtputf8: bool = False) -> AsyncIterator[SmtpServer]:
    """smtputf8: offer SMTPUTF8, which a non-ASCII recipient needs (aiosmtplib refuses to send
    to one otherwise, and the mail is logged as failed)."""
    handler = SmtpServer(host=LOOPBACK, port=0)
    loop = asyncio.get_running_loop()
    # hostname given explicitly: the default is socket.getfqdn(), a DNS lookup.
    server = await loop.create_server(
        lambda: _CountingSMTP(handler, hostname="localhost", loop=loop, enable_SMTPUTF8=smtputf8),
        LOOPBACK,
        0,
    )
    handler.port = server.sockets[0].getsockname()[1]
    try:
        yield handler
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await server.wait_closed()


def unused_port() -> int:
    """A loopback port with nothing listening on it (for "the SMTP server is down")."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
    return port


def reset_token_in(text: str) -> str:
    """The token of the password-reset link in a mail or page."""
    match = _RESET_LINK.search(text)
    assert match is not None, f"no reset link in: {text!r}"
    return unquote(match.group(1))


type ClientFactory = Callable[..., Awaitable[tuple[FastAPI, httpx.AsyncClient]]]


@pytest.fixture
async def smtp_server() -> AsyncIterator[SmtpServer]:
    async with running_smtp_server() as server:
        yield server


@pytest.fixture
async def client_with(
    database_url: str, engine: AsyncEngine, connection: AsyncConnection
) -> AsyncIterator[ClientFactory]:
    """Builds an app from the test settings plus overrides, joined to the test's transaction.

    Create the client during fixture set-up when a test reads logs: create_app reconfigures the
    root logger, which drops the handlers pytest's caplog installed before it.
    """
    async with contextlib.AsyncExitStack() as stack:

        async def make(**overrides: Any) -> tuple[FastAPI, httpx.AsyncClient]:
            database = Database(engine=engine, sessionmaker=_savepoint_sessions(connection))
            app = create_app(make_settings(database_url, **overrides), database=database)
            stack.callback(app.state.passwords.close)
            client = await stack.enter_async_context(asgi_client(app))
            return app, client

        yield make


@pytest.fixture
async def mail_client(
    client_with: ClientFactory, smtp_server: SmtpServer
) -> tuple[FastAPI, httpx.AsyncClient]:
    """An app whose SMTP settings point at `smtp_server`, and a client for it."""
    return await client_with(**smtp_server.settings())
