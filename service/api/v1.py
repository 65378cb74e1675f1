"""The /api/v1 routers: one per domain, each included straight into the app.

No umbrella APIRouter: every nesting level is walked again on every request (FastAPI matches
routes level by level), and the hot routes come first because matching is a linear scan.
"""

from fastapi import APIRouter

from service.auth.routes import router as auth_router
from service.core.schemas import Problem, problem_responses
from service.items.routes import router as items_router
from service.users.routes import router as users_router
from service.utils.routes import router as utils_router

# Any /api/v1 operation may answer these; 422 replaces FastAPI's default validation schema.
API_RESPONSES = problem_responses(400, 401, 403, 404, 409, 413, 415, 422, 503)
API_ROUTERS: tuple[APIRouter, ...] = (items_router, users_router, auth_router, utils_router)


def openapi_components() -> dict[str, dict[str, object]]:
    """Schemas referenced by problem_responses, added to the OpenAPI document by create_app."""
    return {"Problem": Problem.model_json_schema(ref_template="#/components/schemas/{model}")}
