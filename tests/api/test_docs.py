"""The docs pages and their assets, served by the service itself, only when docs are enabled."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI

from service.core.docs import REDOC_CSP, SWAGGER_CSP
from tests.support.clients import asgi_client
from tests.support.smtp import ClientFactory

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-init.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
_REFERENCES = re.compile(r'(?:src|href|spec-url|data-openapi-url)="([^"]*)"')


def references(html: str) -> list[str]:
    return _REFERENCES.findall(html)


@pytest.mark.parametrize(("path", "csp"), [("/docs", SWAGGER_CSP), ("/redoc", REDOC_CSP)])
async def test_docs_pages_load_only_from_this_origin(
    client: httpx.AsyncClient, path: str, csp: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == csp
    found = references(response.text)
    assert "/api/v1/openapi.json" in found
    assert all(ref.startswith(("/docs/assets/", "/api/v1/openapi.json")) for ref in found), found
    assert "http" not in response.text  # no absolute URL at all, so no CDN
    assert "<script>" not in response.text  # no inline script: script-src 'self' holds


def test_the_policies_allow_nothing_from_elsewhere() -> None:
    for csp in (SWAGGER_CSP, REDOC_CSP):
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert "http" not in csp
        assert "'unsafe-eval'" not in csp
    assert "'unsafe-inline'" not in SWAGGER_CSP


@pytest.mark.parametrize("name", sorted(ASSETS))
async def test_assets_are_served_locally(client: httpx.AsyncClient, name: str) -> None:
    response = await client.get(f"/docs/assets/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(ASSETS[name])
    assert response.headers["x-content-type-options"] == "nosniff"
    assert len(response.content) > 100


async def test_swagger_ui_is_the_bundle_not_a_stub(client: httpx.AsyncClient) -> None:
    bundle = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in bundle.content
    assert len(bundle.content) > 500_000


@pytest.mark.parametrize(
    "path", ["/docs/assets/../docs.py", "/docs/assets/%2e%2e/docs.py", "/docs/assets/nope.js"]
)
async def test_assets_outside_the_folders_are_404(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 404


async def test_pages_honour_the_root_path(app: FastAPI) -> None:
    async with asgi_client(app, root_path="/behind-proxy") as client:
        html = (await client.get("/behind-proxy/docs")).text
    found = references(html)
    assert len(found) == 5  # css, icon, openapi, bundle, init
    assert all(ref.startswith("/behind-proxy/") for ref in found), found


async def test_docs_disabled_serves_neither_pages_nor_assets(client_with: ClientFactory) -> None:
    _, client = await client_with(docs_enabled=False)
    for path in ("/docs", "/redoc", "/docs/assets/swagger-ui-bundle.js", "/api/v1/openapi.json"):
        assert (await client.get(path)).status_code == 404, path
