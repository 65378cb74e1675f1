"""Oversized bodies, headers and URLs are refused cleanly, before any parsing."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.items.models import Item
from tests.conftest import problem
from tests.support.clients import sync_http_client
from tests.support.processes import base_env, free_port, keelson, wait_ready

LIMIT = 1_048_576  # MAX_REQUEST_BODY_BYTES default


async def item_count(session: AsyncSession) -> int:
    return (await session.exec(select(func.count()).select_from(Item))).one()


async def test_declared_oversized_body_is_413_problem(
    client: httpx.AsyncClient, user_headers: dict[str, str], session: AsyncSession
) -> None:
    body = b'{"title": "' + b"x" * LIMIT + b'"}'
    response = await client.post(
        "/api/v1/items/",
        content=body,
        headers={**user_headers, "content-type": "application/json"},
    )
    assert problem(response, 413)["detail"] == f"The request body exceeds {LIMIT} bytes"
    assert response.headers["x-request-id"]
    assert await item_count(session) == 0


async def test_chunked_oversized_body_is_413_problem(
    client: httpx.AsyncClient, user_headers: dict[str, str], session: AsyncSession
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"title": "'
        for _ in range(20):
            yield b"x" * 65_536
        yield b'"}'

    response = await client.post(
        "/api/v1/items/",
        content=chunks(),
        headers={**user_headers, "content-type": "application/json"},
    )
    problem(response, 413)
    assert await item_count(session) == 0


async def test_body_just_under_the_limit_reaches_validation(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    body = b'{"title": "' + b"x" * (LIMIT - 100) + b'"}'
    response = await client.post(
        "/api/v1/items/", content=body, headers={**user_headers, "content-type": "application/json"}
    )
    problem(response, 422)  # too long a title: validation answered, not the size guard


@pytest.fixture
def live_server(database_url: str) -> Iterator[int]:
    port = free_port()
    env = base_env(DATABASE_URL=database_url, ACCESS_LOG_ENABLED="false")
    with keelson("serve", "--host", "127.0.0.1", "--port", str(port), env=env) as process:
        wait_ready(port, process)
        yield port


def raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65_536):
            received += chunk
    return received


@pytest.mark.slow
def test_overlong_header_and_url_are_refused_without_a_500(live_server: int) -> None:
    huge_header = (
        b"GET /api/v1/users/me HTTP/1.1\r\nHost: t\r\nX-Filler: "
        + b"a" * 200_000
        + b"\r\nConnection: close\r\n\r\n"
    )
    huge_url = (
        b"GET /healthz?" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    for request in (huge_header, huge_url):
        status_line = raw_request(live_server, request).split(b"\r\n", 1)[0]
        status = int(status_line.split()[1]) if status_line else 0
        assert status != 500
        assert status == 0 or 400 <= status < 500, status_line
    # and the server is still healthy afterwards
    with sync_http_client(f"http://127.0.0.1:{live_server}") as http:
        assert http.get("/healthz").status_code == 200
