"""Scraping the in-process metrics registry over HTTP, as Prometheus does, on a free port."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import pytest

from service.core import metrics
from tests.support.clients import http_client
from tests.support.processes import free_port

Scrape = Callable[[], Awaitable[str]]


@pytest.fixture
def scrape() -> Iterator[Scrape]:
    """`await scrape()` returns the /metrics body from a real metrics server (the one
    `keelson serve` runs), started for the test on 127.0.0.1."""
    port = free_port()

    async def get() -> str:
        async with http_client(f"http://127.0.0.1:{port}") as client:
            response = await client.get("/metrics")
        assert response.status_code == 200, response.text
        return response.text

    with metrics.serving_metrics("127.0.0.1", port):
        yield get
