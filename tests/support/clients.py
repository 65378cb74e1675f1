"""The suite's HTTP clients: each response any of them receives goes through the secrets scan.

Build clients here, never with httpx directly (tests/test_code_quality.py checks that), so no
test can receive a response from the service without it being checked for passwords and hashes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI

from tests.support.secrets import assert_no_secrets

ASGI_BASE_URL = "http://testserver"


async def _scan_async(response: httpx.Response) -> None:
    await response.aread()
    assert_no_secrets(response)
    # One turn of the event loop, as a server gets between two requests: the app's log lines
    # are batched per iteration (service/core/logging.LineBatcher), and the batch is written by
    # a callback that runs before this task resumes, so a test reading stdout next sees them.
    await asyncio.sleep(0)


def _scan_sync(response: httpx.Response) -> None:
    response.read()
    assert_no_secrets(response)


def asgi_client(
    app: FastAPI,
    *,
    peer: tuple[str, int] | None = None,
    raise_app_exceptions: bool = True,
    base_url: str = ASGI_BASE_URL,
    root_path: str = "",
    **options: Any,
) -> httpx.AsyncClient:
    """A client calling the app in-process; `peer` is the client address the app sees,
    `root_path` the prefix a proxy in front would strip."""
    transport = httpx.ASGITransport(
        app=app,
        raise_app_exceptions=raise_app_exceptions,
        client=peer or ("127.0.0.1", 123),
        root_path=root_path,
    )
    return httpx.AsyncClient(
        transport=transport,
        base_url=base_url,
        event_hooks={"response": [_scan_async]},
        **options,
    )


def http_client(base_url: str, **options: Any) -> httpx.AsyncClient:
    """An async client for a real server over TCP (a `keelson serve` the test started)."""
    return httpx.AsyncClient(base_url=base_url, event_hooks={"response": [_scan_async]}, **options)


def sync_http_client(base_url: str = "", **options: Any) -> httpx.Client:
    """The blocking twin of http_client, for tests that drive a server from threads."""
    return httpx.Client(base_url=base_url, event_hooks={"response": [_scan_sync]}, **options)


def sync_get(url: str, **options: Any) -> httpx.Response:
    """One scanned GET from a blocking test (a thread, or code outside the event loop)."""
    with sync_http_client() as client:
        return client.get(url, **options)
