"""CORS, header by header: what a browser is told for each kind of request (these answers were
pinned on Starlette's CORSMiddleware before the edge took its job over)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Response
from prometheus_client import REGISTRY

from service.core.cors import CorsPolicy
from service.main import create_app
from tests.conftest import make_settings
from tests.support.clients import asgi_client

NOT_RUNNING = "postgresql://nobody@127.0.0.1:1/none"  # none of these requests reads the DB
ALLOWED = "https://app.example"
EXPOSED = "X-Request-ID, ETag, Idempotent-Replayed, Retry-After, RateLimit, RateLimit-Policy"
SECURITY = [
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("content-security-policy", "frame-ancestors 'none'"),
    ("x-request-id", "r1"),
]
NOT_FOUND = [("content-length", "98"), ("content-type", "application/problem+json")]
PREFLIGHT_VARY = (
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers, "
    "Access-Control-Request-Private-Network"
)
ALL_METHODS = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, QUERY"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(NOT_RUNNING, backend_cors_origins=ALLOWED))
    _add_vary_route(app)
    async with asgi_client(app) as client:
        yield client


def _add_vary_route(app: FastAPI) -> None:
    @app.get("/vary")
    async def vary() -> Response:  # an endpoint that sets Vary itself
        return Response(b"x", headers={"Vary": "Accept-Encoding"})

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("unhandled")


async def _call(
    client: httpx.AsyncClient, method: str, path: str, **headers: str
) -> tuple[int, bytes, list[tuple[str, str]]]:
    response = await client.request(
        method,
        path,
        headers={"X-Request-ID": "r1", **{k.replace("_", "-"): v for k, v in headers.items()}},
    )
    return response.status_code, response.content, response.headers.multi_items()


def _preflights(status: str) -> float:
    sample = REGISTRY.get_sample_value(
        "keelson_http_requests_total",
        {"method": "OPTIONS", "route": "<unmatched>", "status": status},
    )
    return sample or 0.0


async def test_without_origin_only_vary_origin_is_added(client: httpx.AsyncClient) -> None:
    status, _, headers = await _call(client, "GET", "/nowhere")
    assert status == 404
    assert headers == [*NOT_FOUND, ("vary", "Origin"), *SECURITY]


@pytest.mark.parametrize("origin", [ALLOWED, "http://localhost:5173"], ids=["listed", "frontend"])
async def test_an_allowed_origin_is_named_with_credentials_and_exposed_headers(
    client: httpx.AsyncClient, origin: str
) -> None:
    status, _, headers = await _call(client, "GET", "/nowhere", Origin=origin)
    assert status == 404
    assert headers == [
        *NOT_FOUND,
        ("access-control-allow-credentials", "true"),
        ("access-control-expose-headers", EXPOSED),
        ("access-control-allow-origin", origin),
        ("vary", "Origin"),
        *SECURITY,
    ]


@pytest.mark.parametrize(
    "origin", ["https://evil.example", f"{ALLOWED}/", "HTTPS://APP.EXAMPLE", "null", ""]
)
async def test_a_disallowed_origin_is_not_named(client: httpx.AsyncClient, origin: str) -> None:
    status, _, headers = await _call(client, "GET", "/nowhere", Origin=origin)
    assert status == 404
    assert headers == [
        *NOT_FOUND,
        ("access-control-allow-credentials", "true"),
        ("access-control-expose-headers", EXPOSED),
        ("vary", "Origin"),
        *SECURITY,
    ]


async def test_an_endpoints_own_vary_is_kept_in_place_with_origin_added(
    client: httpx.AsyncClient,
) -> None:
    _, _, plain = await _call(client, "GET", "/vary")
    assert plain == [("vary", "Accept-Encoding, Origin"), ("content-length", "1"), *SECURITY]

    _, _, cross = await _call(client, "GET", "/vary", Origin=ALLOWED)
    assert cross == [
        ("vary", "Accept-Encoding, Origin"),
        ("content-length", "1"),
        ("access-control-allow-credentials", "true"),
        ("access-control-expose-headers", EXPOSED),
        ("access-control-allow-origin", ALLOWED),
        *SECURITY,
    ]


async def test_a_preflight_from_an_allowed_origin_is_answered_ok(
    client: httpx.AsyncClient,
) -> None:
    before = _preflights("200")
    status, body, headers = await _call(
        client,
        "OPTIONS",
        "/api/v1/items/",
        Origin=ALLOWED,
        Access_Control_Request_Method="POST",
        Access_Control_Request_Headers="Authorization, Content-Type",
    )
    assert (status, body) == (200, b"OK")
    assert headers == [
        ("vary", PREFLIGHT_VARY),
        ("access-control-allow-methods", ALL_METHODS),
        ("access-control-max-age", "600"),
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-origin", ALLOWED),
        ("access-control-allow-headers", "Authorization, Content-Type"),
        ("content-length", "2"),
        ("content-type", "text/plain; charset=utf-8"),
        *SECURITY,
    ]
    assert _preflights("200") == before + 1  # counted like any answer, under no route


async def test_a_preflight_without_requested_headers_names_none(
    client: httpx.AsyncClient,
) -> None:
    status, body, headers = await _call(
        client, "OPTIONS", "/anywhere", Origin=ALLOWED, Access_Control_Request_Method="GET"
    )
    assert (status, body) == (200, b"OK")
    assert [name for name, _ in headers if name.startswith("access-control-")] == [
        "access-control-allow-methods",
        "access-control-max-age",
        "access-control-allow-credentials",
        "access-control-allow-origin",
    ]


@pytest.mark.parametrize(
    ("origin", "extra", "failures"),
    [
        ("https://evil.example", {"Access_Control_Request_Method": "POST"}, "origin"),
        (ALLOWED, {"Access_Control_Request_Method": "FOO"}, "method"),
        (ALLOWED, {"Access_Control_Request_Method": "post"}, "method"),  # methods are exact
        (
            ALLOWED,
            {
                "Access_Control_Request_Method": "GET",
                "Access_Control_Request_Private_Network": "true",
            },
            "private-network",
        ),
        (
            "https://evil.example",
            {
                "Access_Control_Request_Method": "FOO",
                "Access_Control_Request_Private_Network": "true",
            },
            "origin, method, private-network",
        ),
    ],
    ids=["origin", "method", "lower-case-method", "private-network", "all"],
)
async def test_a_disallowed_preflight_is_400_and_names_what_failed(
    client: httpx.AsyncClient, origin: str, extra: dict[str, str], failures: str
) -> None:
    before = _preflights("400")
    status, body, headers = await _call(client, "OPTIONS", "/api/v1/items/", Origin=origin, **extra)
    assert (status, body) == (400, f"Disallowed CORS {failures}".encode())
    allow_origin = [("access-control-allow-origin", ALLOWED)] if origin == ALLOWED else []
    assert headers == [
        ("vary", PREFLIGHT_VARY),
        ("access-control-allow-methods", ALL_METHODS),
        ("access-control-max-age", "600"),
        ("access-control-allow-credentials", "true"),
        *allow_origin,
        ("content-length", str(len(body))),
        ("content-type", "text/plain; charset=utf-8"),
        *SECURITY,
    ]
    assert _preflights("400") == before + 1


async def test_options_without_a_requested_method_is_routed_as_a_simple_request(
    client: httpx.AsyncClient,
) -> None:
    status, _, headers = await _call(client, "OPTIONS", "/nowhere", Origin=ALLOWED)
    assert status == 404
    assert ("access-control-allow-origin", ALLOWED) in headers
    assert ("access-control-max-age", "600") not in headers


async def test_a_requested_method_without_an_origin_is_not_a_preflight(
    client: httpx.AsyncClient,
) -> None:
    status, _, headers = await _call(
        client, "OPTIONS", "/nowhere", Access_Control_Request_Method="POST"
    )
    assert status == 404
    assert headers == [*NOT_FOUND, ("vary", "Origin"), *SECURITY]


async def test_the_edges_own_413_carries_no_cors_headers(client: httpx.AsyncClient) -> None:
    """The edge answers an oversized body before anything behind it runs (as Starlette's
    CORSMiddleware, behind the edge, never saw it)."""
    status, _, headers = await _call(
        client, "POST", "/api/v1/items/", Origin=ALLOWED, Content_Length="99999999"
    )
    assert status == 413
    assert [name for name, _ in headers if "access-control" in name or name == "vary"] == []


async def test_the_edges_own_500_carries_no_cors_headers(client: httpx.AsyncClient) -> None:
    status, _, headers = await _call(client, "GET", "/boom", Origin=ALLOWED)
    assert status == 500
    assert [name for name, _ in headers if "access-control" in name or name == "vary"] == []


def test_a_cors_policy_refuses_the_wildcard_origin() -> None:
    with pytest.raises(ValueError, match=r"CORS origins must be listed: '\*' is refused"):
        CorsPolicy(["https://app.example", "*"])
