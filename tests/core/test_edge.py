"""Health checks answered ahead of the framework: the same answer the routes give, with the
headers and metrics every answer has, and the full stack whenever the request needs it."""

from __future__ import annotations

import httpx
from prometheus_client import REGISTRY

from tests.core.test_security_headers import assert_base_headers
from tests.support.smtp import ClientFactory
from tests.support.smtp import client_with as client_with  # the fixture, for this module

HEALTH_CHECK = "/api/v1/utils/health-check/"


def _served(route: str) -> float:
    sample = REGISTRY.get_sample_value(
        "keelson_http_requests_total", {"method": "GET", "route": route, "status": "200"}
    )
    return sample or 0.0


async def test_health_answers_match_their_routes_and_carry_headers_and_metrics(
    client_with: ClientFactory,
) -> None:
    _, client = await client_with(backend_cors_origins="https://app.example")
    origin = {"Origin": "https://app.example"}  # an Origin takes the full stack: the routes
    for path, body in ((HEALTH_CHECK, True), ("/healthz", {"status": "ok"})):
        before = _served(path)
        edge = await client.get(path, headers={"X-Request-ID": "probe-1"})
        assert (edge.status_code, edge.json()) == (200, body)
        assert edge.headers["content-type"] == "application/json"
        assert edge.headers["x-request-id"] == "probe-1"
        assert_base_headers(edge)
        assert "access-control-allow-origin" not in edge.headers
        assert _served(path) == before + 1

        routed = await client.get(path, headers=origin)
        assert (routed.status_code, routed.content) == (200, edge.content)
        assert routed.headers["access-control-allow-origin"] == "https://app.example"
        assert _served(path) == before + 2


async def test_edge_answers_get_a_fresh_request_id_and_hsts_when_configured(
    client_with: ClientFactory,
) -> None:
    _, client = await client_with(hsts_enabled=True, hsts_max_age_s=63_072_000)
    first, second = (
        await client.get("/healthz"),
        await client.get("/healthz", headers={"X-Request-ID": "bad id!"}),
    )
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert all(len(r.headers["x-request-id"]) == 32 for r in (first, second))
    assert first.headers["strict-transport-security"] == "max-age=63072000"


async def test_other_methods_and_near_paths_take_the_full_stack(client: httpx.AsyncClient) -> None:
    assert (await client.post(HEALTH_CHECK)).status_code == 405
    assert (await client.put("/healthz")).status_code == 405
    near = await client.get("/api/v1/utils/health-check", follow_redirects=False)
    assert near.status_code == 307
    assert near.headers["location"].endswith(HEALTH_CHECK)
