"""Every route the app serves, found from its router: all but an explicit public list refuse a
request without a token (401), and the superuser routes refuse a plain user (403).

A new route is checked the moment it exists: left unprotected, it fails here until someone adds
it to PUBLIC on purpose.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts

from service.auth.deps import _current_superuser, _current_user
from service.users.models import User
from tests.conftest import bearer, problem

# (method, path template) anyone may call without a token.
PUBLIC = frozenset(
    {
        ("POST", "/api/v1/login/access-token"),
        ("POST", "/api/v1/login/refresh"),
        ("POST", "/api/v1/password-recovery/{email}"),
        ("POST", "/api/v1/reset-password/"),
        ("POST", "/api/v1/users/signup"),
        # the template's dev-only user creation, routed only when ENVIRONMENT=local
        ("POST", "/api/v1/private/users/"),
        ("GET", "/api/v1/utils/health-check/"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        # interactive docs (DOCS_ENABLED; off by default outside ENVIRONMENT=local)
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/redoc"),
    }
)
# (method, path template) only a superuser may call.
SUPERUSER_ONLY = frozenset(
    {
        ("GET", "/api/v1/users/"),
        ("POST", "/api/v1/users/"),
        ("PATCH", "/api/v1/users/{user_id}"),
        ("DELETE", "/api/v1/users/{user_id}"),
        ("POST", "/api/v1/password-recovery-html-content/{email}"),
        ("POST", "/api/v1/utils/test-email/"),
    }
)
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


def routes(app: FastAPI) -> Iterator[tuple[str, str, Any]]:
    """(method, path template, route) for every route, included routers resolved."""
    for context in iter_route_contexts(app.routes):
        for method in sorted(context.methods or ()):
            if method != "HEAD" and context.path is not None:
                yield method, context.path, context.original_route


def concrete(path: str) -> str:
    """A path to request: emails where the template wants one, fresh UUIDs elsewhere."""
    return _PARAM.sub(
        lambda m: "someone@example.com" if "email" in m.group(1) else str(uuid.uuid4()), path
    )


def depends_on(route: Any, function: Callable[..., Any]) -> bool:
    def walk(dependant: Dependant) -> bool:
        return any(d.call is function or walk(d) for d in dependant.dependencies)

    dependant = getattr(route, "dependant", None)
    return dependant is not None and walk(dependant)


def test_the_app_has_the_routes_this_test_knows_about(app: FastAPI) -> None:
    found = {(method, path) for method, path, _ in routes(app)}
    assert found >= PUBLIC, PUBLIC - found
    assert found >= SUPERUSER_ONLY, SUPERUSER_ONLY - found
    assert len(found - PUBLIC) >= 18, "expected the whole authenticated API"


def test_superuser_routes_are_exactly_the_ones_that_require_a_superuser(app: FastAPI) -> None:
    """The superuser list and the code agree: a new superuser route must be listed here."""
    requiring = {(m, p) for m, p, route in routes(app) if depends_on(route, _current_superuser)}
    assert requiring == SUPERUSER_ONLY


def test_every_non_public_route_depends_on_the_current_user(app: FastAPI) -> None:
    unguarded = [
        (m, p)
        for m, p, route in routes(app)
        if (m, p) not in PUBLIC and not depends_on(route, _current_user)
    ]
    assert unguarded == []


async def test_every_non_public_route_refuses_a_missing_or_bad_token(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    checked = 0
    for method, path, _ in routes(app):
        if (method, path) in PUBLIC:
            continue
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            response = await client.request(method, concrete(path), headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            problem(response, 401)
            assert response.headers["www-authenticate"] == "Bearer", (method, path)
            checked += 1
    assert checked >= 2 * 18


async def test_public_routes_answer_without_a_token(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    for method, path, _ in routes(app):
        if (method, path) in PUBLIC:
            response = await client.request(method, concrete(path))
            assert response.status_code != 401, (method, path, response.text)


async def test_superuser_routes_refuse_a_plain_user(
    client: httpx.AsyncClient, app: FastAPI, user: User
) -> None:
    for method, path in sorted(SUPERUSER_ONLY):
        response = await client.request(method, concrete(path), headers=bearer(app, user))
        body = problem(response, 403)
        assert body["detail"] == "The user doesn't have enough privileges", (method, path)


async def test_superuser_routes_let_a_superuser_past_the_check(
    client: httpx.AsyncClient, app: FastAPI, superuser: User
) -> None:
    """The control for the test above: the 403 comes from the privilege check, not elsewhere."""
    for method, path in sorted(SUPERUSER_ONLY):
        response = await client.request(method, concrete(path), headers=bearer(app, superuser))
        assert response.status_code not in {401, 403}, (method, path, response.text)
