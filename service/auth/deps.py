"""The auth dependencies: the caller a bearer access token names (CurrentUser), or a superuser."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from service.core.errors import Forbidden, NotEnoughPrivileges, Unauthorized
from service.core.routing import request_session, uses_request_session
from service.core.security import InvalidToken, TokenCodec
from service.users import repository
from service.users.models import UserRecord


class InvalidCredentials(Unauthorized):
    def __init__(self) -> None:
        super().__init__("Could not validate credentials")


class NotAuthenticated(Unauthorized):
    def __init__(self) -> None:
        super().__init__("Not authenticated")


class InactiveUser(Forbidden):
    def __init__(self) -> None:
        super().__init__("Inactive user")


class _BearerUser(OAuth2PasswordBearer):
    """The caller a bearer access token names: one dependency, not three.

    It is FastAPI's OAuth2PasswordBearer (so the OpenAPI document keeps the template's
    `OAuth2PasswordBearer` scheme and Swagger's Authorize button), called with the request alone:
    it reads the header, decodes the token and looks the user up on the request's session
    itself. As three dependencies (the bearer scheme, the session and this lookup) FastAPI
    solved two more per authenticated request, ~25 µs each (docs/architecture.md "The edge").
    """

    async def __call__(self, request: Request) -> UserRecord:  # type: ignore[override]
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            # Our own 401 problem, not FastAPI's 403.
            raise NotAuthenticated
        tokens: TokenCodec = request.app.state.tokens
        try:
            claims = tokens.decode(token)
            user_id = uuid.UUID(claims["sub"])
        except (InvalidToken, ValueError):
            raise InvalidCredentials from None
        user = await repository.get_user_record(request_session(request), user_id)
        if user is None:  # deleted since the token was issued: the token is as good as revoked
            raise InvalidCredentials
        if not user.is_active:
            raise InactiveUser
        request.state.user_id = str(user.id)
        return user


_current_user = uses_request_session(
    _BearerUser(
        tokenUrl="/api/v1/login/access-token", scheme_name="OAuth2PasswordBearer", auto_error=False
    )
)

CurrentUser = Annotated[UserRecord, Depends(_current_user)]


async def _current_superuser(user: CurrentUser) -> UserRecord:
    if not user.is_superuser:
        raise NotEnoughPrivileges
    return user


SuperUser = Annotated[UserRecord, Depends(_current_superuser)]
