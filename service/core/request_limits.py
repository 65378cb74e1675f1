"""Refuses request bodies over MAX_REQUEST_BODY_BYTES with a 413 problem, before any parsing.

A declared Content-Length over the limit is refused before a byte is read; a chunked body is
counted as it arrives, and reading stops as soon as it passes the limit.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.errors import PayloadTooLarge, problem_response


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects malformed lengths before we see them
    return None


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _error(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"The request body exceeds {self.max_body_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            error = self._error()
            response = problem_response(error.status, error.detail, instance=scope["path"])
            await response(scope, receive, send)
            return

        received = 0
        exceeded = False
        replaced = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    exceeded = True
                    raise self._error()
            return message

        async def send_413_once_exceeded(message: Message) -> None:
            """Whatever the app made of the aborted read (FastAPI turns it into a 400), the client
            is told the truth: 413."""
            nonlocal replaced
            if not exceeded:
                await send(message)
                return
            if message["type"] == "http.response.start" and not replaced:
                replaced = True
                error = self._error()
                response = problem_response(error.status, error.detail, instance=scope["path"])
                await response(scope, receive, send)

        await self.app(scope, counted_receive, send_413_once_exceeded)
