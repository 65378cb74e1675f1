"""Dependencies shared by the API routes: settings, crypto helpers, and the authenticated user."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from service.core.client_ip import client_key, resolve_client_ip
from service.core.config import Settings
from service.core.db import Database
from service.core.db import SessionDep as SessionDep  # re-exported for the routes
from service.core.errors import Forbidden, Unauthorized
from service.core.mailer import Mailer
from service.core.security import InvalidToken, PasswordHashing, TokenCodec
from service.users import repository
from service.users.models import UserRecord

# Dependencies are `async def` even when they only read app.state: a plain `def` would be run in
# the threadpool, a thread hop per dependency per request (measured: 30% of GET /users/me CPU).

# auto_error=False: a missing token is answered by our own 401 problem, not FastAPI's 403.
_bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/login/access-token", auto_error=False)


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _passwords(request: Request) -> PasswordHashing:
    passwords: PasswordHashing = request.app.state.passwords
    return passwords


async def _tokens(request: Request) -> TokenCodec:
    tokens: TokenCodec = request.app.state.tokens
    return tokens


async def _database(request: Request) -> Database:
    """For work that outlives the request (background tasks open their own sessions)."""
    database: Database = request.app.state.db
    return database


async def _mailer(request: Request) -> Mailer:
    mailer: Mailer = request.app.state.mailer
    return mailer


async def _client(request: Request) -> str:
    """The key per-client limits count under: the client's address (an IPv6 client's /64)."""
    settings: Settings = request.app.state.settings
    peer = request.client.host if request.client else None
    return client_key(resolve_client_ip(peer, request.headers, settings.trusted_proxy_cidrs))


SettingsDep = Annotated[Settings, Depends(_settings)]
PasswordsDep = Annotated[PasswordHashing, Depends(_passwords)]
TokensDep = Annotated[TokenCodec, Depends(_tokens)]
MailerDep = Annotated[Mailer, Depends(_mailer)]
DatabaseDep = Annotated[Database, Depends(_database)]
ClientDep = Annotated[str, Depends(_client)]


class InvalidCredentials(Unauthorized):
    def __init__(self) -> None:
        super().__init__("Could not validate credentials")


class NotAuthenticated(Unauthorized):
    def __init__(self) -> None:
        super().__init__("Not authenticated")


class InactiveUser(Forbidden):
    def __init__(self) -> None:
        super().__init__("Inactive user")


class SuperuserRequired(Forbidden):
    def __init__(self) -> None:
        super().__init__("The user doesn't have enough privileges")


async def _current_user(
    request: Request,
    session: SessionDep,
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
        raise SuperuserRequired
    return user


SuperUser = Annotated[UserRecord, Depends(_current_superuser)]
