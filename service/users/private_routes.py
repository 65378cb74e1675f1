"""The template's development-only route: create a user without a token (ENVIRONMENT=local only).

The template's end-to-end suite creates its test users through `POST /api/v1/private/users/`, and
its backend serves the route only in development. create_app includes this router only when
ENVIRONMENT=local, so elsewhere the path is a 404 and absent from the OpenAPI document.
"""

from __future__ import annotations

from service.core.deps import PasswordsDep, WriteSession
from service.core.request_bodies import RequestBody
from service.core.routing import api_router
from service.users import service
from service.users.schemas import Email, FullName, Password, UserPublic, UserRegister

router = api_router(prefix="/private", tags=["private"])


class PrivateUserCreate(RequestBody):
    """The template's body. `is_verified` is accepted and, as there, not stored (no such column);
    the account is a plain active user whatever is sent."""

    refused_fields = frozenset({"is_superuser", "is_active", "hashed_password", "id", "created_at"})

    email: Email
    password: Password
    full_name: FullName
    is_verified: bool = False


@router.post("/users/", response_model=UserPublic)
async def create_user(
    session: WriteSession, passwords: PasswordsDep, body: PrivateUserCreate
) -> UserPublic:
    account = UserRegister(email=body.email, password=body.password, full_name=body.full_name)
    return UserPublic.model_validate(await service.create_user(session, passwords, account))
