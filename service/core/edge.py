"""The edge: the one pure-ASGI middleware every HTTP request passes, around everything else.

It does, once per request, what every answer needs: the request id (X-Request-ID, bound into
the log context), the security headers (plus `Cache-Control: no-store` on credential routes),
CORS (core/cors.py: its headers, and preflights answered here), the body size limit (413), the
request metrics, the access log line, and the last-resort 500 problem. Health checks are
answered here from bytes built at start-up (`ConstantAnswer`), with the same headers and
metrics, without routing, dependencies or a database.

One middleware rather than one per concern: each pure-ASGI layer adds a coroutine frame and a
`send` wrapper to every message of every request. Measured in-process (GET /api/v1/users/me,
16 concurrent requests, CPU per request): four layers (security headers, request context, body
limit, CORS) cost 190 µs of 712 µs; see docs/architecture.md "The edge".
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core import metrics
from service.core.cors import CorsPolicy, is_preflight
from service.core.errors import PayloadTooLarge, problem_response

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_ORIGIN = b"origin"
_CONTENT_LENGTH = b"content-length"
_TRANSFER_ENCODING = b"transfer-encoding"

# Every answer, errors included. A header the endpoint set itself is left alone.
BASE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
)
NO_STORE = (b"cache-control", b"no-store")

access_log = structlog.get_logger("keelson.access")
error_log = structlog.get_logger("keelson.error")


def security_headers(hsts_max_age_s: int | None) -> tuple[tuple[bytes, bytes], ...]:
    """The headers every answer carries; HSTS only when configured (TLS usually ends at the
    ingress, so we cannot tell by ourselves)."""
    if hsts_max_age_s is None:
        return BASE_HEADERS
    return (*BASE_HEADERS, (b"strict-transport-security", f"max-age={hsts_max_age_s}".encode()))


def _origin(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == _ORIGIN:
            return bytes(value)
    return None


def new_request_id() -> str:
    """32 random hex digits, as uuid4().hex was. An id only joins log lines, it guards nothing,
    so it comes from the process's PRNG (seeded from os.urandom, reseeded after a fork): ~0.7 us
    against ~3.4 us and a getrandom() system call per request for uuid4."""
    return f"{random.getrandbits(128):032x}"  # nosec B311 - not a secret


def incoming_request_id(scope: Scope) -> str:
    """The client's X-Request-ID when well formed (so its logs join ours), else a new one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            return value.decode("ascii") if _VALID_REQUEST_ID.match(value) else new_request_id()
    return new_request_id()


def route_templates(routes: Sequence[BaseRoute]) -> dict[int, str]:
    """Full path template of every route, keyed by the route object FastAPI puts in scope["route"].

    The route object only knows its path inside its own router; the prefixes come from includes.
    """
    return {
        id(context.original_route): context.path
        for context in iter_route_contexts(routes)
        if context.path is not None
    }


def route_template(scope: Scope) -> str:
    """The matched route's template (bounded label set); anything unmatched is one fixed value."""
    route = scope.get("route")
    if route is None:
        return metrics.UNMATCHED_ROUTE
    templates: dict[int, str] = scope["app"].state.route_templates
    return templates.get(id(route), metrics.UNMATCHED_ROUTE)


@dataclass(frozen=True, slots=True)
class ConstantAnswer:
    """A 200 JSON answer known in advance (a health check)."""

    route: str
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]

    @classmethod
    def json(cls, route: str, body: bytes) -> ConstantAnswer:
        headers = (
            (b"content-type", b"application/json"),
            (_CONTENT_LENGTH, str(len(body)).encode()),
        )
        return cls(route=route, body=body, headers=headers)


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    max_body_bytes: int
    access_log: bool = True
    hsts_max_age_s: int | None = None
    no_store_routes: frozenset[str] = frozenset()
    cors: CorsPolicy | None = None
    # GET, exact path. A request with an Origin header takes the full stack, so CORS answers
    # stay whole.
    constant_answers: Mapping[str, ConstantAnswer] | None = None


def _body_headers(scope: Scope) -> tuple[int | None, bool]:
    """The declared Content-Length (None if absent or malformed) and whether the body is
    chunked."""
    declared: int | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name == _CONTENT_LENGTH:
            try:
                declared = int(value)
            except ValueError:
                declared = None  # the server rejects malformed lengths before we see them
        elif name == _TRANSFER_ENCODING:
            chunked = True
    return declared, chunked


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, settings: EdgeSettings) -> None:
        self.app = app
        self.max_body_bytes = settings.max_body_bytes
        self.access_log = settings.access_log
        self.headers = security_headers(settings.hsts_max_age_s)
        self.no_store_routes = settings.no_store_routes
        self.constant_answers = dict(settings.constant_answers or {})
        self.cors = settings.cors
        self.series = metrics.RequestSeries()

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"The request body exceeds {self.max_body_bytes} bytes")

    def _add_headers(
        self,
        scope: Scope,
        message: Message,
        request_id: bytes,
        origin: bytes | None,
        app_answer: bool,
    ) -> None:
        headers: list[tuple[bytes, bytes]] = list(message.get("headers", ()))
        if app_answer and self.cors is not None:
            self.cors.add_headers(headers, origin)
        wanted: Iterable[tuple[bytes, bytes]] = self.headers
        if route_template(scope) in self.no_store_routes:
            wanted = (*self.headers, NO_STORE)
        present = {name.lower() for name, _ in headers}
        headers.extend(pair for pair in wanted if pair[0] not in present)
        headers.append((REQUEST_ID_HEADER, request_id))
        message["headers"] = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        request_id = incoming_request_id(scope)
        request_id_bytes = request_id.encode("ascii")
        method = scope["method"]
        origin = _origin(scope)

        if method == "GET" and self.constant_answers and origin is None:
            answer = self.constant_answers.get(scope["path"])
            if answer is not None:
                await self._answer(answer, request_id_bytes, send, started_at)
                return

        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        response_started = False
        exceeded = False  # a chunked body went over the limit while the app read it
        # The app's answers get CORS headers; the edge's own (413, 500, a preflight) do not:
        # they got none when CORS was a middleware behind the edge.
        app_answer = True

        async def edge_send(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                if exceeded:  # whatever the app made of the aborted read, the client gets 413
                    return
                response_started = True
                status = message["status"]
                self._add_headers(scope, message, request_id_bytes, origin, app_answer)
            elif exceeded:
                return
            await send(message)

        app_receive = receive
        declared, chunked = _body_headers(scope)
        if chunked and declared is None:
            # Only a chunked body is counted as it arrives: a declared length is enforced by the
            # server, and checked against the limit below before a byte is read.
            received = 0

            async def counted_receive() -> Message:
                nonlocal received, exceeded
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body_bytes:
                        exceeded = True
                        raise self._too_large()
                return message

            app_receive = counted_receive

        metrics.HTTP_IN_FLIGHT.inc()
        try:
            if declared is not None and declared > self.max_body_bytes:
                app_answer = False
                await self._problem(self._too_large(), scope, receive, edge_send)
            elif (
                origin is not None
                and method == "OPTIONS"
                and self.cors is not None
                and is_preflight(scope["headers"])
            ):
                app_answer = False
                await self._preflight(self.cors, origin, scope, edge_send)
            else:
                await self.app(scope, app_receive, edge_send)
            if exceeded and not response_started:
                exceeded = False
                app_answer = False
                await self._problem(self._too_large(), scope, receive, edge_send)
        except Exception:
            app_answer = False
            if exceeded and not response_started:
                exceeded = False
                await self._problem(self._too_large(), scope, receive, edge_send)
            else:
                error_log.exception("unhandled_error", path=scope["path"])
                status = 500
                if not response_started:
                    response = problem_response(
                        500, "The server failed to handle this request", instance=scope["path"]
                    )
                    await response(scope, receive, edge_send)
        finally:
            metrics.HTTP_IN_FLIGHT.dec()
            duration_s = time.perf_counter() - started_at
            route = route_template(scope)
            self.series.observe(method, route, str(status), duration_s)
            if self.access_log:
                state: dict[str, Any] = scope.get("state") or {}
                access_log.info(
                    "request",
                    method=method,
                    route=route,
                    path=scope["path"],
                    status=status,
                    duration_ms=round(duration_s * 1000, 2),
                    user_id=state.get("user_id"),
                )

    async def _problem(
        self, error: PayloadTooLarge, scope: Scope, receive: Receive, send: Send
    ) -> None:
        response = problem_response(error.status, error.detail, instance=scope["path"])
        await response(scope, receive, send)

    async def _preflight(self, cors: CorsPolicy, origin: bytes, scope: Scope, send: Send) -> None:
        status, body, headers = cors.preflight(origin, scope["headers"])
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(
        self, answer: ConstantAnswer, request_id: bytes, send: Send, started_at: float
    ) -> None:
        """Health checks are hit every few seconds per pod by probes: counted, not logged."""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*answer.headers, *self.headers, (REQUEST_ID_HEADER, request_id)],
            }
        )
        await send({"type": "http.response.body", "body": answer.body})
        self.series.observe("GET", answer.route, "200", time.perf_counter() - started_at)
