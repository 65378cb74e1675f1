"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from service.core.db import Database
from service.core.migrations import expected_heads, known_revisions
from service.main import create_app
from tests.conftest import make_settings, problem
from tests.support.clients import asgi_client
from tests.support.metrics import Scrape
from tests.support.metrics import scrape as scrape  # the fixture, for this module
from tests.support.postgres import create_database, drop_database


def series(metrics_text: str, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for metric in text_string_to_metric_families(metrics_text):
        for sample in metric.samples:
            if sample.name == family:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def test_healthz_answers_without_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_ok_when_database_at_head(client: httpx.AsyncClient, scrape: Scrape) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "migrations": "ok"}}
    metrics = await scrape()
    assert series(metrics, "keelson_ready") == {(): 1.0}


async def _client_for(app: FastAPI) -> httpx.AsyncClient:
    return asgi_client(app)


async def test_readyz_503_when_database_unreachable(scrape: Scrape) -> None:
    settings = make_settings(
        "postgresql://nobody@127.0.0.1:1/none", readiness_timeout_s=1, db_connect_timeout_s=1
    )
    app = create_app(settings)
    app.state.db = Database.from_settings(settings)
    async with await _client_for(app) as client:
        body = problem(await client.get("/readyz"), 503)
        assert body["check"] == "database"
        assert (await client.get("/healthz")).status_code == 200
        metrics = await scrape()
        assert series(metrics, "keelson_ready") == {(): 0.0}
    await app.state.db.dispose()


async def test_readyz_503_when_schema_not_migrated(pg_server_url: str) -> None:
    url = await create_database(pg_server_url, "keelson_unmigrated")
    settings = make_settings(url)
    app = create_app(settings)
    app.state.db = Database.from_settings(settings)
    try:
        async with await _client_for(app) as client:
            body = problem(await client.get("/readyz"), 503)
            assert body["check"] == "migrations"
    finally:
        await app.state.db.dispose()
        await drop_database(pg_server_url, url)


async def test_metrics_label_requests_by_route_template(
    client: httpx.AsyncClient, user_headers: dict[str, str], scrape: Scrape
) -> None:
    item_id = uuid.uuid4()
    await client.get(f"/api/v1/items/{item_id}", headers=user_headers)
    metrics = await scrape()
    requests = series(metrics, "keelson_http_requests_total")
    key = (("method", "GET"), ("route", "/api/v1/items/{id}"), ("status", "404"))
    assert requests.get(key, 0) >= 1
    assert not any(str(item_id) in dict(labels)["route"] for labels in requests)
    assert "keelson_http_request_duration_seconds_bucket" in metrics
    assert series(metrics, "keelson_db_pool_size") == {(): 5.0}


async def test_unmatched_paths_do_not_grow_label_cardinality(
    client: httpx.AsyncClient, scrape: Scrape
) -> None:
    await client.get("/no/such/path")  # the one unmatched series exists from here on
    # A scrape before `before`, so the scrape's own series exist already whichever test ran
    # first in this process (alone, this test used to see them appear and fail).
    await scrape()
    before = await scrape()
    for _ in range(1000):
        await client.get(f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}")
    after = await scrape()
    for family in ("keelson_http_requests_total", "keelson_http_request_duration_seconds_count"):
        assert series(after, family).keys() == series(before, family).keys()
    unmatched = (("method", "GET"), ("route", "<unmatched>"), ("status", "404"))
    growth = (
        series(after, "keelson_http_requests_total")[unmatched]
        - series(before, "keelson_http_requests_total")[unmatched]
    )
    assert growth == 1000


@pytest.mark.parametrize(
    ("incoming", "echoed"),
    [("abc-123_DEF.42", True), ("bad id with spaces", False), ("x" * 200, False)],
)
async def test_request_id_is_echoed_when_valid_else_generated(
    client: httpx.AsyncClient, incoming: str, echoed: bool
) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": incoming})
    returned = response.headers["x-request-id"]
    assert (returned == incoming) is echoed
    assert 1 <= len(returned) <= 128


async def test_unhandled_error_is_500_problem_with_request_id(settings: object) -> None:
    app = create_app(make_settings("postgresql://x@127.0.0.1:1/x"))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom: internal detail")

    app.state.route_templates = {}
    async with asgi_client(app, raise_app_exceptions=False) as client:
        response = await client.get("/boom", headers={"X-Request-ID": "req-1"})
    body = problem(response, 500)
    assert "kaboom" not in response.text
    assert response.headers["x-request-id"] == "req-1"
    assert body["detail"] == "The server failed to handle this request"


async def _stamp(url: str, revision: str | None) -> None:
    connection = await asyncpg.connect(
        make_url(url).set(drivername="postgresql").render_as_string(False)
    )
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS alembic_version (version_num varchar(32))"
        )
        await connection.execute("DELETE FROM alembic_version")
        if revision is not None:
            await connection.execute("INSERT INTO alembic_version VALUES ($1)", revision)
    finally:
        await connection.close()


# Written out by hand, not derived from service.core.migrations: the readiness rule must be
# checked against what the release promises, not against the helpers /readyz itself uses.
# A new migration makes test_head_revision_is_the_one_these_expectations_name fail: move HEAD
# and add the old head to BEHIND.
HEAD = "0005"
BEHIND = ("0001", "0002", "0003", "0004")


def test_head_revision_is_the_one_these_expectations_name() -> None:
    assert expected_heads() == {HEAD}
    assert known_revisions() == {*BEHIND, HEAD}


@pytest.mark.parametrize("revision", BEHIND)
async def test_readyz_503_migrations_when_schema_behind_head(
    pg_server_url: str, revision: str
) -> None:
    """Behind head (migrations pending): not ready, and the answer names the migrations check."""
    async with _stamped_app(pg_server_url, revision) as client:
        response = await client.get("/readyz")
    body = problem(response, 503)
    assert body["check"] == "migrations"
    assert body["detail"] == (
        f"migrations check failed: schema at ['{revision}'], code expects ['{HEAD}']"
    )


@pytest.mark.parametrize(
    "revision",
    [
        HEAD,
        # Ahead of head: the upgrade hook already migrated for the next release; the old pods
        # keep serving on the newer (expand-only) schema during the rollout and after a rollback.
        "9999_from_a_newer_release",
    ],
)
async def test_readyz_200_when_schema_at_or_ahead_of_head(
    pg_server_url: str, revision: str
) -> None:
    async with _stamped_app(pg_server_url, revision) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "migrations": "ok"}}


async def test_readyz_503_migrations_when_version_table_is_empty(pg_server_url: str) -> None:
    """An alembic_version table with no row (a half-initialised database) is not a schema."""
    async with _stamped_app(pg_server_url, None) as client:
        response = await client.get("/readyz")
    assert problem(response, 503)["check"] == "migrations"


@contextlib.asynccontextmanager
async def _stamped_app(
    pg_server_url: str, revision: str | None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client on an app whose database says it is at `revision` (no row when None)."""
    url = await create_database(pg_server_url, "keelson_stamped")
    await _stamp(url, revision)
    settings = make_settings(url)
    app = create_app(settings)
    app.state.db = Database.from_settings(settings)
    try:
        async with await _client_for(app) as client:
            yield client
    finally:
        await app.state.db.dispose()
        await drop_database(pg_server_url, url)
