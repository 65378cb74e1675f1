"""The one router: every API route is a KeelsonRoute, and its session kind is what it declares."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.datastructures import DefaultPlaceholder
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from service.api import ops
from service.api.v1 import API_PREFIX, API_RESPONSES, API_ROUTERS
from service.core.routing import KeelsonRoute, SessionMode, include_routes
from service.users import private_routes
from tests.support.clients import asgi_client


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


def _documented(*, flat: bool) -> dict[str, Any]:
    """The OpenAPI document of every router of the app, included one way or the other."""
    app = FastAPI(generate_unique_id_function=_template_operation_id)
    for router, prefix, responses in _INCLUDED:
        if flat:
            include_routes(app, router, prefix=prefix, responses=responses)
        else:
            app.include_router(router, prefix=prefix, responses=responses)
    document: dict[str, Any] = app.openapi()
    return document


def _template_operation_id(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


_INCLUDED: tuple[tuple[APIRouter, str, dict[int | str, dict[str, Any]] | None], ...] = (
    *((router, API_PREFIX, API_RESPONSES) for router in API_ROUTERS),
    (private_routes.router, API_PREFIX, API_RESPONSES),
    (ops.router, "", None),
)


def test_the_apps_routes_are_one_table_in_the_order_they_are_included(app: FastAPI) -> None:
    """No included router left to match level by level (FastAPI keeps an included router as
    one entry of the app's table, neither a Route nor a Mount): the hot routes come first."""
    assert all(isinstance(route, Route | Mount) for route in app.router.routes)
    api = [route for route in app.router.routes if isinstance(route, APIRoute)]
    assert [f"{sorted(r.methods or ())[0]} {r.path}" for r in api[:2]] == [
        "GET /api/v1/items/",
        "POST /api/v1/items/",
    ]
    assert all(isinstance(route, KeelsonRoute) for route in api if route.path.startswith("/api"))


def test_including_flat_documents_every_route_as_include_router_does() -> None:
    flat, nested = _documented(flat=True), _documented(flat=False)

    assert flat["paths"].keys() == nested["paths"].keys()
    assert flat == nested
    assert len(flat["paths"]) > 15


def test_including_flat_keeps_every_option_of_every_route() -> None:
    for router, prefix, responses in _INCLUDED:
        app = FastAPI()
        include_routes(app, router, prefix=prefix, responses=responses)
        made = [route for route in app.router.routes if isinstance(route, APIRoute)]
        declared = [route for route in router.routes if isinstance(route, APIRoute)]
        assert len(made) == len(declared)
        for new, old in zip(made, declared, strict=True):
            assert type(new) is type(old)
            assert new.path == prefix + old.path
            assert new.responses == {**(responses or {}), **old.responses}
            for option in ("endpoint", "methods", "status_code", "response_model", "tags",
                           "dependencies", "response_class", "include_in_schema",
                           "response_model_exclude_none", "strict_content_type",
                           "max_body_size", "form_limits", "name"):  # fmt: skip
                assert _value(getattr(new, option)) == _value(getattr(old, option)), (
                    old.path,
                    option,
                )


def _value(option: Any) -> Any:
    """What an option comes to: a default the route did not set is its default's value."""
    return option.value if isinstance(option, DefaultPlaceholder) else option


async def _greeting() -> str:
    return "declared"


_greeter = APIRouter(prefix="/hello")


@_greeter.get("/")
async def _hello(word: Annotated[str, Depends(_greeting)]) -> dict[str, str]:
    return {"word": word}


async def test_the_apps_dependency_overrides_reach_a_route_included_flat() -> None:
    app = FastAPI()
    include_routes(app, _greeter, prefix="/api")
    async with asgi_client(app) as client:
        assert (await client.get("/api/hello/")).json() == {"word": "declared"}
        app.dependency_overrides[_greeting] = lambda: "overridden"
        assert (await client.get("/api/hello/")).json() == {"word": "overridden"}


def test_only_api_routes_can_be_included_flat() -> None:
    router = APIRouter()

    async def plain(request: Request) -> Response:
        return Response()

    router.add_route("/plain", plain)

    with pytest.raises(TypeError, match="only API routes can be included flat"):
        include_routes(FastAPI(), router)
