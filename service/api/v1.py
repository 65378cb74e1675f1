"""The /api/v1 routers: one per domain, their routes put in the app's own table.

create_app includes them with core/routing.include_routes, not include_router: FastAPI matches
included routers level by level, twice at each. The hot routes come first because matching is
a linear scan.
"""

from fastapi import APIRouter

from service.auth import routes as auth
from service.core.schemas import Problem, problem_responses
from service.items import routes as items
from service.users import routes as users
from service.utils import routes as utils

API_PREFIX = "/api/v1"

# Any /api/v1 operation may answer these; 422 replaces FastAPI's default validation schema.
API_RESPONSES = problem_responses(400, 401, 403, 404, 409, 413, 415, 422, 503)
API_ROUTERS: tuple[APIRouter, ...] = (items.router, users.router, auth.router, utils.router)
# Each domain declares the answers a browser or proxy must not store; the middleware gets them all.
NO_STORE_ROUTES = frozenset(
    API_PREFIX + path for path in auth.NO_STORE_PATHS | users.NO_STORE_PATHS
)


def openapi_components() -> dict[str, dict[str, object]]:
    """Schemas referenced by problem_responses, added to the OpenAPI document by create_app."""
    return {"Problem": Problem.model_json_schema(ref_template="#/components/schemas/{model}")}
