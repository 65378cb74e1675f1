"""The /api/v1 router: one include per domain."""

from fastapi import APIRouter

from service.auth.routes import router as auth_router
from service.items.routes import router as items_router
from service.users.routes import router as users_router
from service.utils.routes import router as utils_router

api_router = APIRouter()
api_router.include_router(auth_router)
api_router.include_router(users_router)
api_router.include_router(utils_router)
api_router.include_router(items_router)
