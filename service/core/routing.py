"""A route class that answers 415 when a JSON endpoint receives a body of another media type.

FastAPI alone would hand the raw bytes to validation and answer a confusing 422; a client that
sends form data or XML to a JSON endpoint deserves to be told the media type is the problem.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any

from fastapi import params
from starlette.requests import Request
from starlette.responses import Response

from service.core.db import SessionRoute
from service.core.errors import UnsupportedMediaType


def _is_json(content_type: str) -> bool:
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return (length is not None and length != "0") or "transfer-encoding" in request.headers


class StrictJSONRoute(SessionRoute):
    """A SessionRoute that refuses non-JSON bodies on JSON endpoints with a 415."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        body = self.body_field
        if body is None or isinstance(body.field_info, params.Form):
            return handler

        async def require_json(request: Request) -> Response:
            if _has_body(request) and not _is_json(request.headers.get("content-type", "")):
                raise UnsupportedMediaType("This endpoint accepts application/json bodies only")
            return await handler(request)

        return require_json
