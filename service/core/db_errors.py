"""Database trouble as HTTP: down, too slow or out of connections is a 503/504 a client may retry;
a value the database cannot store is a 400; a row the request acts for that vanished is a 401.

Never a 500 with a stack trace: the client learns to come back later, the operator reads one
warning line and the pool-timeout counter. Errors of the named statements, which run on the
asyncpg connection, arrive here as the same DBAPIError subclasses (core/statements.py
translates them, with `connection_invalidated` set on a disconnect).
"""

from __future__ import annotations

from http import HTTPStatus

import structlog
from fastapi import FastAPI, Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.responses import Response

from service.core import metrics
from service.core.errors import problem_response

log = structlog.get_logger(__name__)
RETRY_AFTER_S = "2"

# SQLSTATE classes that mean "the database cannot serve us right now", not "your data is wrong":
# 08 connection exception, 53 insufficient resources, 57P operator intervention (shutdown, restart).
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P")
_QUERY_CANCELED = "57014"  # statement_timeout fired
_DATA_EXCEPTION_CLASS = "22"  # a value PostgreSQL cannot hold, e.g. a NUL character in text
# foreign_key_violation. Every foreign key of the schema references users.id, the account the
# request acts for (tests/users/test_vanishing_user.py keeps that true), so a violation means that
# account was deleted while the request ran: its credentials are no longer good.
_FOREIGN_KEY_VIOLATION = "23503"


def _sqlstate(error: DBAPIError) -> str:
    return str(getattr(error.orig, "sqlstate", None) or "")


def _retry_later(request: Request, status: int, detail: str) -> Response:
    return problem_response(
        status, detail, instance=request.url.path, headers={"Retry-After": RETRY_AFTER_S}
    )


async def _on_pool_timeout(request: Request, exc: Exception) -> Response:
    metrics.DB_POOL_TIMEOUTS.inc()
    log.warning("db_pool_timeout", path=request.url.path)
    return _retry_later(
        request,
        HTTPStatus.SERVICE_UNAVAILABLE,
        "The service is busy: no database connection became free in time",
    )


async def _on_connect_failure(request: Request, exc: Exception) -> Response:
    """asyncpg raises plain OSError (refused, unreachable, timed out) when it cannot connect."""
    log.warning("db_unavailable", path=request.url.path, error=type(exc).__name__)
    return _retry_later(
        request, HTTPStatus.SERVICE_UNAVAILABLE, "The database is unavailable; retry shortly"
    )


async def _on_dbapi_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DBAPIError)
    sqlstate = _sqlstate(exc)
    if sqlstate == _QUERY_CANCELED:
        log.warning("db_statement_timeout", path=request.url.path)
        return _retry_later(
            request, HTTPStatus.GATEWAY_TIMEOUT, "The database did not answer in time"
        )
    if sqlstate.startswith(_DATA_EXCEPTION_CLASS):
        # The schema let it through but the column cannot hold it: the client's error, told
        # without echoing the value.
        log.warning("db_rejected_value", sqlstate=sqlstate, path=request.url.path)
        return problem_response(
            HTTPStatus.BAD_REQUEST,
            "The request contains a value that cannot be stored (for example a NUL character)",
            instance=request.url.path,
        )
    if sqlstate == _FOREIGN_KEY_VIOLATION:
        log.info("db_referenced_row_gone", path=request.url.path)
        return problem_response(
            HTTPStatus.UNAUTHORIZED,
            "Could not validate credentials",
            instance=request.url.path,
            headers={"WWW-Authenticate": "Bearer"},
        )
    if exc.connection_invalidated or sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES):
        log.warning("db_unavailable", path=request.url.path, sqlstate=sqlstate)
        return _retry_later(
            request, HTTPStatus.SERVICE_UNAVAILABLE, "The database is unavailable; retry shortly"
        )
    raise exc  # a real bug (bad SQL, constraint we did not expect): the last-resort 500


def install_db_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PoolTimeout, _on_pool_timeout)
    app.add_exception_handler(DBAPIError, _on_dbapi_error)
    app.add_exception_handler(OSError, _on_connect_failure)
