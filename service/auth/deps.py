"""The auth dependencies: the caller a bearer access token names (CurrentUser), or a superuser."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from service.core.errors import Forbidden, NotEnoughPrivileges, Unauthorized
from service.core.routing import RequestSession
from service.core.security import InvalidToken, TokenCodec
from service.users import repository
from service.users.models import UserRecord

# auto_error=False: a missing token is answered by our own 401 problem, not FastAPI's 403.
_bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/login/access-token", auto_error=False)


class InvalidCredentials(Unauthorized):
    def __init__(self) -> None:
        super().__init__("Could not validate credentials")


class NotAuthenticated(Unauthorized):
    def __init__(self) -> None:
        super().__init__("Not authenticated")


class InactiveUser(Forbidden):
    def __init__(self) -> None:
        super().__init__("Inactive user")


async def _current_user(
    request: Request,
    session: RequestSession,
    token: Annotated[str | None, Depends(_bearer)],
) -> UserRecord:
    if not token:
        raise NotAuthenticated
    # app.state read directly rather than through TokensDep: one dependency less to solve on
    # every authenticated request.
    tokens: TokenCodec = request.app.state.tokens
    try:
        claims = tokens.decode(token)
        user_id = uuid.UUID(claims["sub"])
    except (InvalidToken, ValueError):
        raise InvalidCredentials from None
    user = await repository.get_user_record(session, user_id)
    if user is None:  # deleted since the token was issued: the token is as good as revoked
        raise InvalidCredentials
    if not user.is_active:
        raise InactiveUser
    request.state.user_id = str(user.id)
    return user


CurrentUser = Annotated[UserRecord, Depends(_current_user)]


async def _current_superuser(user: CurrentUser) -> UserRecord:
    if not user.is_superuser:
        raise NotEnoughPrivileges
    return user


SuperUser = Annotated[UserRecord, Depends(_current_superuser)]
