"""Interactive API docs (Swagger UI at /docs, ReDoc at /redoc) with every asset served by us.

FastAPI's own pages load their JavaScript and CSS from a CDN, so offline, in an air-gapped cluster
or behind a strict egress policy they are blank. The assets come from the `fastapi-offline`
package instead (its wheel carries swagger-ui-dist and redoc's standalone bundle, refreshed by its
releases, so updating them is a version bump in uv.lock rather than megabytes of vendored files
to track here). Only its static folder is used, not its app factory. Swagger UI is started by a
file of ours (docs_assets/swagger-init.js) rather than FastAPI's inline script, so each page's
Content-Security-Policy allows scripts from this origin only.
"""

from __future__ import annotations

from html import escape
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs/assets"
ASSETS_PACKAGE = ("fastapi_offline", "static")
OUR_ASSETS = Path(__file__).parent / "docs_assets"
# What each bundle needs, found by loading the pages in Chromium with no network and recording
# every CSP violation (tests/api/test_docs_browser.py): Swagger UI runs with style-src 'self' (its
# CSS draws icons as data: SVGs). ReDoc does not: without 'unsafe-inline' its styled-components
# cannot inject their <style> elements and the page shows "Something went wrong"; without
# worker-src blob: its search (a Web Worker started from a blob: URL) finds nothing.
SWAGGER_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
REDOC_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; worker-src blob:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


def _assets() -> StaticFiles:
    """Ours, then the package's; fails at start-up when fastapi-offline stops shipping a file."""
    package, folder = ASSETS_PACKAGE
    bundled = files(package) / folder
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"):
        if not (bundled / name).is_file():
            raise RuntimeError(f"{package} no longer ships {folder}/{name}")
    return StaticFiles(directory=OUR_ASSETS, packages=[ASSETS_PACKAGE])


def _page(title: str, head: str, body: str, csp: str) -> HTMLResponse:
    html = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"{head}</head>\n<body>\n{body}</body>\n</html>\n"
    )
    return HTMLResponse(html, headers={"Content-Security-Policy": csp})


def install_docs(app: FastAPI, *, openapi_url: str, title: str) -> None:
    """Routes /docs, /redoc and the assets under ASSETS_PATH; call only when docs are enabled."""
    app.mount(ASSETS_PATH, _assets(), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = escape(request.scope.get("root_path", ""))
        assets = f"{root}{ASSETS_PATH}"
        head = (
            f'<link rel="stylesheet" href="{assets}/swagger-ui.css">\n'
            f'<link rel="icon" type="image/png" href="{assets}/favicon.png">\n'
        )
        body = (
            f'<div id="swagger-ui" data-openapi-url="{root}{escape(openapi_url)}"></div>\n'
            f'<script src="{assets}/swagger-ui-bundle.js"></script>\n'
            f'<script src="{assets}/swagger-init.js"></script>\n'
        )
        return _page(f"{title} - Swagger UI", head, body, SWAGGER_CSP)

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = escape(request.scope.get("root_path", ""))
        assets = f"{root}{ASSETS_PATH}"
        head = f'<link rel="icon" type="image/png" href="{assets}/favicon.png">\n'
        body = (
            f'<redoc spec-url="{root}{escape(openapi_url)}"></redoc>\n'
            f'<script src="{assets}/redoc.standalone.js"></script>\n'
        )
        return _page(f"{title} - ReDoc", head, body, REDOC_CSP)
