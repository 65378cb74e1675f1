"""Request dependencies every domain shares: settings, crypto, mailer, database, client, paging."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from service.core.client_ip import client_key, resolve_client_ip
from service.core.config import Settings
from service.core.db import Database
from service.core.mailer import Mailer
from service.core.routing import ReadSession as ReadSession  # re-exported: one import line
from service.core.routing import Transactions as Transactions
from service.core.routing import WriteSession as WriteSession
from service.core.security import PasswordHashing, TokenCodec

# Dependencies are `async def` even when they only read app.state: a plain `def` would be run in
# the threadpool, a thread hop per dependency per request (measured: 30% of GET /users/me CPU).


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

# Offset paging, the same bounds on every list (the template's defaults: skip=0, limit=100).
Skip = Annotated[int, Query(ge=0, le=1_000_000)]
Limit = Annotated[int, Query(ge=1, le=1000)]
