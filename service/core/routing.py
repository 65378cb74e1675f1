"""The one router every domain uses: 415 for non-JSON bodies, and the request's database session.

An endpoint says what it does with the database by the type it asks for:

- `ReadSession`: autocommit, no BEGIN/COMMIT (a one-statement read is one round trip; a read of
  two statements sees two snapshots). The endpoint writes nothing.
- `WriteSession`: one transaction, committed when the endpoint returns, before the response is
  sent (a failing commit reaches the client as an error, never as a 2xx), rolled back if it
  raises (unless the error `keeps_writes`, core/errors.py).
- `Transactions`: the endpoint opens its own blocks (`async with transactions.write() as s`),
  each committed when it ends, and holds no connection between them: for slow work in the
  middle of a request (argon2) that must not keep a pooled connection.

`RequestSession` is for dependencies: the request's session in the mode the endpoint chose, so
a request uses one pooled connection, not one per dependency (CurrentUser, on every
authenticated request, reads it with `request_session(request)` instead, see
`uses_request_session`). The route
works the mode out once, from the endpoint's dependency tree, when the route is built.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from email.message import Message
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, params
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from service.core.db import Database, end_session
from service.core.errors import UnsupportedMediaType


class SessionMode(StrEnum):
    NONE = "none"  # the endpoint and its dependencies never touch the database
    READ = "read"
    WRITE = "write"
    UNITS = "units"  # Transactions: the endpoint's own blocks


class RequestSessionHolder:
    """The request's session, opened on first use and ended by the route once the endpoint
    returns. (A `yield` dependency with scope="function" did the same for ~110 us per request,
    more than the whole rest of dependency solving.)"""

    __slots__ = ("_database", "_writes", "session")

    def __init__(self, database: Database, *, writes: bool) -> None:
        self._database = database
        self._writes = writes
        self.session: AsyncSession | None = None

    def get(self) -> AsyncSession:
        if self.session is None:
            self.session = self._database.sessions(writes=self._writes)()
        return self.session

    async def end(self, error: BaseException | None = None) -> None:
        session, self.session = self.session, None
        if session is not None:
            await end_session(session, writes=self._writes, error=error)


class RequestTransactions:
    """Blocks an endpoint opens itself; the request's own session (the one CurrentUser read
    through) is given back first, so no connection is held outside a block."""

    __slots__ = ("_database", "_holder")

    def __init__(self, database: Database, holder: RequestSessionHolder) -> None:
        self._database = database
        self._holder = holder

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        await self._holder.end()
        async with self._database.write() as session:
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        await self._holder.end()
        async with self._database.read() as session:
            yield session


def _holder(request: Request) -> RequestSessionHolder:
    holder: RequestSessionHolder | None = getattr(request.state, "db_session", None)
    if holder is None:
        raise RuntimeError("database sessions exist only on routes of service.core.routing")
    return holder


# Dependencies are `async def`: a plain `def` runs in the threadpool (measured: 30% of GET
# /users/me CPU). Three functions rather than one with a parameter: the route tells the modes
# apart by which of them the endpoint's tree calls.
async def _read_session(request: Request) -> AsyncSession:
    return _holder(request).get()


async def _write_session(request: Request) -> AsyncSession:
    return _holder(request).get()


async def _request_session(request: Request) -> AsyncSession:
    return _holder(request).get()


def request_session(request: Request) -> AsyncSession:
    """The request's session, for a dependency registered with `uses_request_session`."""
    return _holder(request).get()


_SESSION_USERS: set[Callable[..., Any]] = set()


def uses_request_session[D: Callable[..., Any]](dependency: D) -> D:
    """Declares that `dependency` reads through `request_session(request)` rather than taking a
    `RequestSession` parameter (one dependency less to solve per request: CurrentUser). For the
    route's mode it counts as a `RequestSession`."""
    _SESSION_USERS.add(dependency)
    return dependency


async def _transactions(request: Request) -> RequestTransactions:
    return RequestTransactions(request.app.state.db, _holder(request))


ReadSession = Annotated[AsyncSession, Depends(_read_session)]
WriteSession = Annotated[AsyncSession, Depends(_write_session)]
Transactions = Annotated[RequestTransactions, Depends(_transactions)]
RequestSession = Annotated[AsyncSession, Depends(_request_session)]


def _calls(dependant: Dependant) -> set[Callable[..., Any]]:
    calls: set[Callable[..., Any]] = set()
    for sub in dependant.dependencies:
        if sub.call is not None:
            calls.add(sub.call)
        calls |= _calls(sub)
    return calls


def session_mode(dependant: Dependant, where: str) -> SessionMode:
    """What the endpoint declared; two declarations that contradict each other are refused when
    the route is built, not at request time."""
    calls = _calls(dependant)
    declared = [
        mode
        for mode, call in (
            (SessionMode.READ, _read_session),
            (SessionMode.WRITE, _write_session),
            (SessionMode.UNITS, _transactions),
        )
        if call in calls
    ]
    if len(declared) > 1:
        names = " and ".join(mode.value for mode in declared)
        raise TypeError(f"{where} declares {names} sessions: choose one")
    if declared:
        return declared[0]
    # A dependency's own reads (CurrentUser on an endpoint that declares nothing) autocommit.
    uses_session = _request_session in calls or not _SESSION_USERS.isdisjoint(calls)
    return SessionMode.READ if uses_session else SessionMode.NONE


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


class KeelsonRoute(APIRoute):
    """Refuses non-JSON bodies on JSON endpoints with a 415 (FastAPI alone would hand the bytes
    to validation and answer a confusing 422), and runs the endpoint with its session."""

    session_mode: SessionMode

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        # APIRoute.__init__ calls this once the dependency tree is built: the mode is fixed here.
        self.session_mode = session_mode(self.dependant, f"{self.path} ({self.name})")
        handler = super().get_route_handler()
        body = self.body_field
        json_only = body is not None and not isinstance(body.field_info, params.Form)
        mode = self.session_mode
        if mode is SessionMode.NONE and not json_only:
            return handler
        writes = mode is SessionMode.WRITE

        async def with_session(request: Request) -> Response:
            content_type = request.headers.get("content-type", "")
            if json_only and _has_body(request) and not _is_json(content_type):
                raise UnsupportedMediaType("This endpoint accepts application/json bodies only")
            if mode is SessionMode.NONE:
                return await handler(request)
            holder = RequestSessionHolder(request.app.state.db, writes=writes)
            request.state.db_session = holder
            try:
                response = await handler(request)
            except BaseException as error:
                await holder.end(error)
                raise
            # Inside the route handler, so before the response is sent.
            await holder.end()
            return response

        return with_session


def api_router(**kwargs: Any) -> APIRouter:
    """The router every domain's routes.py makes (same arguments as APIRouter)."""
    return APIRouter(route_class=KeelsonRoute, **kwargs)


# Every option of a route, by the name add_api_route takes it under and APIRoute keeps it under.
_ROUTE_OPTIONS = tuple(
    name
    for name in inspect.signature(APIRouter.add_api_route).parameters
    if name not in ("self", "route_class_override")
)


def include_routes(
    app: FastAPI,
    router: APIRouter,
    *,
    prefix: str = "",
    responses: Mapping[int | str, dict[str, Any]] | None = None,
) -> None:
    """`app.include_router(router, prefix=..., responses=...)`, with the routes in the app's
    own table instead of behind an included router.

    FastAPI 0.165 matches included routers level by level, and twice at each level (the
    included router's `matches`, then its `_handle_selected`), with a saved and restored scope
    key per route it passes: GET /users/me spent ~12% of its instructions there (callgrind,
    docs/load-testing.md "Issue 14, fifth round"). Here each route is made again on the app's
    router with the options it was declared with, the prefix and the shared responses added as
    include_router adds them; the app's dependency overrides apply to it as to any app route.
    An option FastAPI adds to add_api_route that its APIRoute does not keep under the same name
    fails here, at start-up, not silently (tests/core/test_routing.py compares both ways of
    including on every route and on the whole OpenAPI document)."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"{route!r}: only API routes can be included flat")
        missing = [name for name in _ROUTE_OPTIONS if not hasattr(route, name)]
        if missing:
            raise TypeError(f"APIRoute no longer keeps add_api_route's {missing}")
        options = {name: getattr(route, name) for name in _ROUTE_OPTIONS}
        options["path"] = prefix + route.path
        options["responses"] = {**(responses or {}), **route.responses}
        app.router.add_api_route(**options, route_class_override=type(route))
