"""/docs and /redoc in a real headless Chromium against a real `keelson dev`, with no network.

Every request that is not to the server on 127.0.0.1 is blocked and recorded, and every
Content-Security-Policy violation is recorded: the pages must work with both lists empty. Swagger
UI must list the operations, "Authorize" with the form login must work, and "Try it out" on
GET /api/v1/users/me must answer 200 inside the page.

Chromium is Debian's (/usr/bin/chromium, installed by .ci/run), driven by the Playwright package;
Playwright's own browser download is never used. Without Chromium this test fails under CI=true
and is skipped (with the reason shown) elsewhere.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import BrowserContext, Page, Route, expect, sync_playwright

from tests.support.processes import base_env, free_port, keelson, wait_ready

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("KEELSON_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DEV_LOGIN = ("admin@example.com", "changethis")  # the superuser `keelson dev` seeds
SCREENSHOT = Path(os.environ.get("KEELSON_DOCS_SCREENSHOT", "/tmp/keelson-docs.png"))
# Collects CSP violations from the first script on, before any of the page's own.
RECORD_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


def _chromium() -> str:
    found = shutil.which(CHROMIUM)
    if found is None:
        reason = f"Chromium not found at {CHROMIUM} (Debian package `chromium`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def dev_server() -> Iterator[str]:
    port = free_port()
    with keelson("dev", "--port", str(port), env=base_env()) as process:
        wait_ready(port, process)
        yield f"http://127.0.0.1:{port}"
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


class Offline:
    """A browser context that lets through only requests to the dev server, and says what else
    was attempted."""

    def __init__(self, context: BrowserContext, origin: str) -> None:
        self.context = context
        self.origin = urlsplit(origin)
        self.blocked: list[str] = []
        self.served: list[str] = []
        context.route("**/*", self._filter)
        context.add_init_script(RECORD_CSP)

    def _filter(self, route: Route) -> None:
        url = urlsplit(route.request.url)
        if (url.scheme, url.hostname, url.port) == (
            self.origin.scheme,
            "127.0.0.1",
            self.origin.port,
        ):
            self.served.append(url.path)
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort("blockedbyclient")


@pytest.fixture
def offline(dev_server: str, tmp_path: Path) -> Iterator[Offline]:
    executable = _chromium()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh profile every test
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1600},
        )
        try:
            yield Offline(context, dev_server)
        finally:
            context.close()


def csp_violations(page: Page) -> list[Any]:
    violations: list[Any] = page.evaluate("window.__cspViolations")
    return violations


def test_swagger_ui_renders_authorizes_and_tries_an_operation_offline(
    offline: Offline, dev_server: str
) -> None:
    page = offline.context.new_page()
    page.goto(f"{dev_server}/docs")

    operations = page.locator(".opblock")
    expect(operations.first).to_be_visible(timeout=20_000)
    assert operations.count() >= 20
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/users/me").first).to_be_visible()

    page.locator("button.authorize").first.click()
    dialog = page.locator(".modal-ux")
    dialog.locator("#oauth_username").fill(DEV_LOGIN[0])
    dialog.locator("#oauth_password").fill(DEV_LOGIN[1])
    dialog.locator("button.modal-btn.authorize").click()
    expect(dialog.locator("button", has_text="Logout")).to_be_visible(timeout=10_000)
    expect(dialog.get_by_role("heading", name="Authorized")).to_be_visible()
    dialog.locator("button.btn-done").click()

    me = page.locator("#operations-users-users-read_user_me")
    me.locator(".opblock-summary").click()
    me.get_by_role("button", name="Try it out").click()
    me.get_by_role("button", name="Execute").click()
    status = me.locator(".live-responses-table .response .response-col_status").first
    expect(status).to_have_text("200", timeout=10_000)
    expect(me.locator(".live-responses-table .microlight").first).to_contain_text(DEV_LOGIN[0])

    page.screenshot(path=str(SCREENSHOT), full_page=False)
    assert offline.blocked == []
    assert csp_violations(page) == []
    assert "/docs/assets/swagger-ui-bundle.js" in offline.served


def test_redoc_renders_offline(offline: Offline, dev_server: str) -> None:
    page = offline.context.new_page()
    page.goto(f"{dev_server}/redoc")
    expect(page.get_by_role("heading", name="Read User Me").first).to_be_attached(timeout=20_000)
    expect(page.locator("h1").first).to_contain_text("Keelson")
    search = page.get_by_placeholder("Search...")
    search.fill("signup")  # the search index runs in ReDoc's Web Worker
    results = page.locator("[role=search] li, .search-result")
    expect(results.first).to_contain_text("Register User", timeout=10_000)

    page.screenshot(path=str(SCREENSHOT.with_name("keelson-redoc.png")))
    assert offline.blocked == []
    # ReDoc's sidebar footer always renders Redocly's logo from its CDN (an <img> that hides
    # itself when it fails): the page's CSP stops it before any request is made, and only it.
    assert csp_violations(page) == ["img-src https://cdn.redoc.ly/redoc/logo-mini.svg"]
    assert "/docs/assets/redoc.standalone.js" in offline.served
