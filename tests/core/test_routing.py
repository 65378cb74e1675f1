"""The one router: every API route is a KeelsonRoute, and its session kind is what it declares."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from service.api.v1 import API_PREFIX
from service.core.routing import KeelsonRoute, SessionMode


def _api_routes(app: FastAPI) -> dict[str, APIRoute]:
    """Every route under /api/v1, by its full path and method."""
    return {
        f"{method} {context.path}": context.original_route
        for context in iter_route_contexts(app.routes)
        if context.path is not None
        and context.path.startswith(API_PREFIX)
        and isinstance(context.original_route, APIRoute)
        for method in context.original_route.methods or ()
    }


def test_every_api_route_is_built_by_the_service_router(app: FastAPI) -> None:
    """A router made without core.routing.api_router would fail only at request time (no
    session); here it fails at once, naming the route."""
    routes = _api_routes(app)
    stray = [name for name, route in routes.items() if not isinstance(route, KeelsonRoute)]
    assert stray == []
    assert len(routes) > 20


def test_no_get_route_writes(app: FastAPI) -> None:
    """GET answers are safe to repeat: none declares a WriteSession or Transactions."""
    writing = [
        name
        for name, route in _api_routes(app).items()
        if name.startswith("GET ")
        and isinstance(route, KeelsonRoute)
        and route.session_mode in (SessionMode.WRITE, SessionMode.UNITS)
    ]
    assert writing == []


def test_the_hot_reads_autocommit_and_the_writes_are_transactions(app: FastAPI) -> None:
    modes = {
        name: route.session_mode
        for name, route in _api_routes(app).items()
        if isinstance(route, KeelsonRoute)
    }
    assert modes["GET /api/v1/users/me"] is SessionMode.READ  # CurrentUser's lookup only
    assert modes["GET /api/v1/items/"] is SessionMode.READ
    assert modes["POST /api/v1/items/"] is SessionMode.WRITE
    assert modes["POST /api/v1/login/access-token"] is SessionMode.UNITS
    assert modes["PATCH /api/v1/users/me/password"] is SessionMode.UNITS
    assert modes["GET /api/v1/utils/health-check/"] is SessionMode.NONE
