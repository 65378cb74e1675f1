"""Logs, traces and metrics as an operator sees them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.users.models import User
from tests.conftest import USER_PASSWORD, bearer
from tests.ops.metric_names import exposed_metric_names, metric_names_used
from tests.support.clients import asgi_client
from tests.support.metrics import Scrape
from tests.support.metrics import scrape as scrape  # the fixture, for this module


def log_lines(output: str) -> list[dict[str, Any]]:
    lines = []
    for raw in output.splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


async def _client(app: FastAPI) -> httpx.AsyncClient:
    return asgi_client(app)


async def test_request_span_uses_route_template_and_db_spans_join_its_trace(
    traced: tuple[FastAPI, InMemorySpanExporter],
    user: User,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app, exporter = traced
    item_id = uuid.uuid4()
    async with await _client(app) as client:
        response = await client.get(f"/api/v1/items/{item_id}", headers=bearer(app, user))
    assert response.status_code == 404

    spans = exporter.get_finished_spans()
    [server] = [s for s in spans if s.name == "GET /api/v1/items/{id}"]
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/api/v1/items/{id}"
    request_db_spans = [
        s
        for s in spans
        if s.attributes
        and "db.system" in str(s.attributes)
        and s.context.trace_id == server.context.trace_id
    ]
    # The request loads the user, then looks for the item: both queries are children of its trace.
    assert len(request_db_spans) >= 2, [(s.name, s.attributes) for s in spans]
    assert all(s.parent is not None for s in request_db_spans)

    [access] = [
        line for line in log_lines(capsys.readouterr().out) if line.get("event") == "request"
    ]
    assert access["trace_id"] == format(server.context.trace_id, "032x")
    assert access["route"] == "/api/v1/items/{id}"
    assert access["status"] == 404
    assert access["user_id"] == str(user.id)
    assert access["request_id"] == response.headers["x-request-id"]


async def test_access_log_line_has_the_promised_fields(
    client: httpx.AsyncClient, user_headers: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    response = await client.get(
        "/api/v1/users/me", headers={**user_headers, "X-Request-ID": "trace-me-1"}
    )
    assert response.status_code == 200
    [access] = [
        line for line in log_lines(capsys.readouterr().out) if line.get("event") == "request"
    ]
    assert access["request_id"] == "trace-me-1"
    assert access["method"] == "GET"
    assert access["route"] == "/api/v1/users/me"
    assert access["status"] == 200
    assert isinstance(access["duration_ms"], float)
    assert access["level"] == "info"
    assert "timestamp" in access


async def test_no_password_or_token_reaches_the_logs(
    client: httpx.AsyncClient, user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    login = await client.post(
        "/api/v1/login/access-token",
        data={"username": user.email, "password": USER_PASSWORD},
    )
    token = login.json()["access_token"]
    await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    await client.post(
        "/api/v1/login/access-token", data={"username": user.email, "password": "wrong-secret-99"}
    )
    await client.post("/api/v1/users/signup", json={"email": "bad", "password": "signup-secret-77"})
    output = capsys.readouterr().out
    assert log_lines(output), "expected JSON log lines"
    for secret in (
        USER_PASSWORD,
        "wrong-secret-99",
        "signup-secret-77",
        token,
        user.hashed_password,
    ):
        assert secret not in output


async def test_every_metric_used_by_dashboard_and_alerts_is_exposed(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], scrape: Scrape
) -> None:
    await client.post(
        "/api/v1/login/access-token", data={"username": user.email, "password": USER_PASSWORD}
    )
    await client.get("/api/v1/users/me", headers=user_headers)
    await client.get("/readyz")
    body = await scrape()
    missing = metric_names_used() - exposed_metric_names(body)
    assert not missing, f"dashboard/rules use metrics the service does not expose: {missing}"


async def test_login_outcomes_are_counted(
    client: httpx.AsyncClient, user: User, make_user: Any, scrape: Scrape
) -> None:
    def outcomes(text: str) -> dict[str, float]:
        found = {}
        for line in text.splitlines():
            if line.startswith("keelson_login_attempts_total{"):
                outcome = line.split('outcome="')[1].split('"')[0]
                found[outcome] = float(line.rsplit(" ", 1)[1])
        return found

    await make_user("sleepy@example.com", is_active=False)
    before = outcomes(await scrape())
    attempts = [
        (user.email, USER_PASSWORD),
        (user.email, "wrong-password"),
        ("nobody@example.com", "whatever-123"),
        ("sleepy@example.com", USER_PASSWORD),
    ]
    for email, password in attempts:
        await client.post(
            "/api/v1/login/access-token", data={"username": email, "password": password}
        )
    after = outcomes(await scrape())
    for outcome in ("success", "bad_password", "unknown_user", "inactive"):
        assert after[outcome] - before.get(outcome, 0) == 1, outcome


async def test_tracing_is_off_by_default(app: FastAPI) -> None:
    assert app.state.tracer_provider is None
