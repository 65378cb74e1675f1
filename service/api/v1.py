"""The /api/v1 router: one include per domain."""

from fastapi import APIRouter

from service.auth.routes import router as auth_router
from service.core.schemas import Problem, problem_responses
from service.items.routes import router as items_router
from service.users.routes import router as users_router
from service.utils.routes import router as utils_router

# Any /api/v1 operation may answer these; 422 replaces FastAPI's default validation schema.
api_router = APIRouter(responses=problem_responses(400, 401, 403, 404, 409, 413, 415, 422, 503))
api_router.include_router(auth_router)
api_router.include_router(users_router)
api_router.include_router(utils_router)
api_router.include_router(items_router)


def openapi_components() -> dict[str, dict[str, object]]:
    """Schemas referenced by problem_responses, added to the OpenAPI document by create_app."""
    return {"Problem": Problem.model_json_schema(ref_template="#/components/schemas/{model}")}
