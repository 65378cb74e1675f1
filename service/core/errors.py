"""Error model: domain exceptions by category, rendered in one place as RFC 9457 problem+json."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

PROBLEM_CONTENT_TYPE = "application/problem+json"
# SQLSTATE class 22, "data exception": PostgreSQL refused a value the request carried.


class DomainError(Exception):
    """Base for every error the service raises on purpose; subclasses pick the HTTP status."""

    status: ClassVar[int] = HTTPStatus.BAD_REQUEST
    problem_type: ClassVar[str] = "about:blank"
    headers: ClassVar[Mapping[str, str]] = {}
    # True for an error that reports something the request recorded (a counted login attempt,
    # a revoked token family): its transaction is committed before the error is answered.
    keeps_writes: ClassVar[bool] = False

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(DomainError):
    status = HTTPStatus.BAD_REQUEST


class Unauthorized(DomainError):
    """Missing or unusable credentials; the client must (re)authenticate."""

    status = HTTPStatus.UNAUTHORIZED
    headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": "Bearer"}


class Forbidden(DomainError):
    status = HTTPStatus.FORBIDDEN


class NotEnoughPrivileges(Forbidden):
    """The one answer for "a superuser could, you may not" (auth's SuperUser guard, and the
    users rule that only a superuser sees other accounts)."""

    def __init__(self) -> None:
        super().__init__("The user doesn't have enough privileges")


class NotFound(DomainError):
    status = HTTPStatus.NOT_FOUND


class Conflict(DomainError):
    status = HTTPStatus.CONFLICT


class PreconditionFailed(DomainError):
    """A conditional request (If-Match) whose condition no longer holds."""

    status = HTTPStatus.PRECONDITION_FAILED


class Unprocessable(DomainError):
    """Well-formed, but not a request this resource can carry out."""

    status = HTTPStatus.UNPROCESSABLE_CONTENT


class PayloadTooLarge(DomainError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaType(DomainError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class ServiceUnavailable(DomainError):
    status = HTTPStatus.SERVICE_UNAVAILABLE


def problem_response(
    status: int,
    detail: str,
    *,
    instance: str | None = None,
    problem_type: str = "about:blank",
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> Response:
    """The only place that builds an error body."""
    status = int(status)
    body: dict[str, Any] = {
        "type": problem_type,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    if extensions:
        body.update(extensions)
    return Response(
        orjson.dumps(body),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_CONTENT_TYPE,
    )


def _validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Location and message only: the offending input is never echoed (it may be a password)."""
    return [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in errors
    ]


def _summarize(errors: list[dict[str, Any]]) -> str:
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}" if where else f"{first['msg']}{more}"


async def _on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    return problem_response(
        exc.status,
        exc.detail,
        instance=request.url.path,
        problem_type=exc.problem_type,
        headers=exc.headers,
    )


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return problem_response(exc.status_code, detail, instance=request.url.path, headers=exc.headers)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_errors(exc.errors())
    return problem_response(
        HTTPStatus.UNPROCESSABLE_CONTENT,
        _summarize(errors),
        instance=request.url.path,
        extensions={"errors": errors},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _on_domain_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
