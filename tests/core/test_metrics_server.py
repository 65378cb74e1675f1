"""Metrics live on METRICS_PORT, never on the API port the ingress routes (issue 12, item 2)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.core import metrics
from service.core.db import Database
from service.main import create_app
from tests.conftest import make_settings, problem
from tests.support.clients import sync_get
from tests.support.metrics import Scrape
from tests.support.metrics import scrape as scrape  # the fixture, for this module
from tests.support.processes import base_env, free_port, keelson, wait_ready


def sample(body: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    for family in text_string_to_metric_families(body):
        for found in family.samples:
            if found.name == name and (labels is None or found.labels == labels):
                return float(found.value)
    return None


@pytest.fixture
def listening_socket() -> Iterator[int]:
    """A port some other process already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


async def test_api_port_answers_404_for_metrics_and_does_not_document_it(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/metrics")
    problem(response, 404)
    assert "keelson_" not in response.text
    openapi = (await client.get("/api/v1/openapi.json")).json()
    assert not [path for path in openapi["paths"] if "metrics" in path]


async def test_metrics_port_serves_the_registry_with_the_api_requests_counted(
    client: httpx.AsyncClient, scrape: Scrape
) -> None:
    before = sample(
        await scrape(),
        "keelson_http_requests_total",
        {"method": "GET", "route": "/readyz", "status": "200"},
    )
    assert (await client.get("/readyz")).status_code == 200
    body = await scrape()
    after = sample(
        body, "keelson_http_requests_total", {"method": "GET", "route": "/readyz", "status": "200"}
    )
    assert after == (before or 0) + 1
    assert sample(body, "keelson_ready") == 1.0
    assert sample(body, "keelson_build_info") == 1.0
    # Scrapes are not API requests: no series for a /metrics route exists any more.
    assert 'route="/metrics"' not in body


async def test_pool_gauges_read_the_pool_at_scrape_time(database_url: str, scrape: Scrape) -> None:
    settings = make_settings(database_url, db_pool_size=3, db_max_overflow=0)
    app = create_app(settings)
    database = Database.from_settings(settings)
    app.state.db = database
    engine: AsyncEngine = database.engine
    try:
        async with engine.connect() as held:
            await held.execute(text("SELECT 1"))
            body = await scrape()
            assert sample(body, "keelson_db_pool_size") == 3.0
            assert sample(body, "keelson_db_pool_checked_out") == 1.0
        assert sample(await scrape(), "keelson_db_pool_checked_out") == 0.0
    finally:
        await database.dispose()


def test_a_taken_metrics_port_fails_with_a_clear_error(listening_socket: int) -> None:
    with (
        pytest.raises(metrics.MetricsServerError) as raised,
        metrics.serving_metrics("127.0.0.1", listening_socket),
    ):
        pytest.fail("the block must not run when the port cannot be bound")
    assert str(raised.value) == (
        f"cannot serve metrics on 127.0.0.1:{listening_socket} (METRICS_PORT):"
        " Address already in use"
    )


async def test_a_scrape_is_answered_while_the_event_loop_is_blocked() -> None:
    """The metrics server has its own thread: a stuck event loop still gets scraped (its
    gauges show why), where a route on the API port would wait for the loop."""
    port = free_port()
    answered: dict[str, float] = {}

    def scrape_from_prometheus() -> None:
        started = time.monotonic()
        response = sync_get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        answered[str(response.status_code)] = time.monotonic() - started

    with metrics.serving_metrics("127.0.0.1", port):
        scraper = threading.Thread(target=scrape_from_prometheus)
        scraper.start()
        time.sleep(1.5)  # noqa: ASYNC251 - blocking the loop is the point
        finished_while_blocked = not scraper.is_alive()
        scraper.join(5)
    assert finished_while_blocked
    assert list(answered) == ["200"]
    assert answered["200"] < 1.5


def test_the_metrics_server_releases_its_port_when_the_block_ends() -> None:
    port = free_port()
    with metrics.serving_metrics("127.0.0.1", port):
        assert sync_get(f"http://127.0.0.1:{port}/metrics").status_code == 200
    with pytest.raises(httpx.ConnectError):
        sync_get(f"http://127.0.0.1:{port}/metrics", timeout=1)


@pytest.mark.slow
def test_keelson_serve_answers_the_api_and_metrics_on_separate_ports(database_url: str) -> None:
    port = free_port()
    env = base_env(DATABASE_URL=database_url)
    api = f"http://127.0.0.1:{port}"
    metrics_url = f"http://127.0.0.1:{env['METRICS_PORT']}/metrics"
    with keelson("serve", "--host", "127.0.0.1", "--port", str(port), env=env) as process:
        wait_ready(port, process)
        assert problem(sync_get(f"{api}/metrics"), 404)["status"] == 404
        scraped = sync_get(metrics_url)
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain")
        readyz = {"method": "GET", "route": "/readyz", "status": "200"}
        ready_probes = sample(scraped.text, "keelson_http_requests_total", readyz)
        assert ready_probes is not None
        assert ready_probes >= 1
        assert sample(scraped.text, "keelson_ready") == 1.0

        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    with pytest.raises(httpx.ConnectError):  # stopped with the server
        sync_get(metrics_url, timeout=1)


def serve_until_it_exits(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`keelson serve` that is expected to refuse to start: its exit and output (60 s bound)."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.slow
def test_keelson_serve_refuses_to_start_when_the_metrics_port_is_taken(
    database_url: str, listening_socket: int
) -> None:
    port = free_port()
    started = time.monotonic()
    result = serve_until_it_exits(
        ["--host", "127.0.0.1", "--port", str(port)],
        base_env(DATABASE_URL=database_url, METRICS_PORT=str(listening_socket)),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        f"keelson: cannot serve metrics on 127.0.0.1:{listening_socket} (METRICS_PORT):"
        " Address already in use"
    ) in result.stderr
    assert time.monotonic() - started < 30
    with pytest.raises(httpx.ConnectError):  # the API port was never opened
        sync_get(f"http://127.0.0.1:{port}/readyz", timeout=1)


def test_keelson_serve_refuses_an_api_port_equal_to_the_metrics_port(database_url: str) -> None:
    port = free_port()
    result = serve_until_it_exits(
        ["--port", str(port)], base_env(DATABASE_URL=database_url, METRICS_PORT=str(port))
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"--port {port} is also METRICS_PORT" in result.stderr
