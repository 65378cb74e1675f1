"""Constant answers served ahead of the framework.

Health checks are hit many times a second by probes and load balancers and need no routing,
dependencies, body handling or database. Answering them before FastAPI's middleware stack made
GET /api/v1/utils/health-check/ cost about what a bare hello-world costs, instead of 3x that.
They still carry the security headers and X-Request-ID every answer carries and are counted in
the request metrics; they are not access-logged (a probe every few seconds per pod is noise).
A request with an Origin header takes the full stack, so CORS answers stay whole.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from service.core import metrics
from service.core.request_context import REQUEST_ID_HEADER, incoming_request_id

_ORIGIN = b"origin"


@dataclass(frozen=True, slots=True)
class ConstantAnswer:
    """A 200 JSON answer known in advance, with its metric series bound once."""

    route: str
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]

    @classmethod
    def json(
        cls, route: str, body: bytes, extra_headers: Iterable[tuple[bytes, bytes]]
    ) -> ConstantAnswer:
        headers = (
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *extra_headers,
        )
        return cls(route=route, body=body, headers=headers)


class EdgeAnsweringAPI(FastAPI):
    """FastAPI that answers `constant_answers` (GET, exact path) before its own stack runs."""

    constant_answers: Mapping[str, ConstantAnswer] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            answer = self.constant_answers.get(scope["path"])
            if answer is not None and not _has_origin(scope):
                await _answer(answer, scope, send)
                return
        await super().__call__(scope, receive, send)


def _has_origin(scope: Scope) -> bool:
    return any(name == _ORIGIN for name, _ in scope["headers"])


async def _answer(answer: ConstantAnswer, scope: Scope, send: Send) -> None:
    started_at = time.perf_counter()
    request_id = (REQUEST_ID_HEADER, incoming_request_id(scope).encode("ascii"))
    await send(
        {"type": "http.response.start", "status": 200, "headers": [*answer.headers, request_id]}
    )
    await send({"type": "http.response.body", "body": answer.body})
    metrics.HTTP_REQUESTS.labels("GET", answer.route, "200").inc()
    metrics.HTTP_REQUEST_DURATION.labels("GET", answer.route).observe(
        time.perf_counter() - started_at
    )
