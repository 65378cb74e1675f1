"""Security headers on every response, in one pure-ASGI middleware.

Every answer (errors included) gets `X-Content-Type-Options: nosniff`, `Referrer-Policy:
no-referrer`, `X-Frame-Options: DENY` and `Content-Security-Policy: frame-ancestors 'none'`; the
routes listed as sensitive get `Cache-Control: no-store`; `Strict-Transport-Security` is added
only when configured (clients reach us over TLS, usually terminated at the ingress). A header the
endpoint set itself is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.request_context import route_template

BASE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
)
NO_STORE = (b"cache-control", b"no-store")


def security_headers(hsts_max_age_s: int | None) -> tuple[tuple[bytes, bytes], ...]:
    """The headers every answer carries; HSTS only when configured."""
    if hsts_max_age_s is None:
        return BASE_HEADERS
    return (*BASE_HEADERS, (b"strict-transport-security", f"max-age={hsts_max_age_s}".encode()))


class SecurityHeadersMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        no_store_routes: Iterable[str] = (),
        hsts_max_age_s: int | None = None,
    ) -> None:
        """`no_store_routes` are route templates (`/api/v1/users/me`); `hsts_max_age_s` None
        sends no Strict-Transport-Security."""
        self.app = app
        self.no_store_routes = frozenset(no_store_routes)
        self.headers = security_headers(hsts_max_age_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", ())}
                # The router has written the matched route into the scope by now.
                wanted = list(self.headers)
                if route_template(scope) in self.no_store_routes:
                    wanted.append(NO_STORE)
                extra = [(name, value) for name, value in wanted if name not in present]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
