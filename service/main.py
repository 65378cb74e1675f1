"""The application factory: wiring only (settings, middleware, routers, errors, lifespan)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from service import __version__
from service.api.ops import router as ops_router
from service.api.v1 import (
    API_PREFIX,
    API_RESPONSES,
    API_ROUTERS,
    NO_STORE_ROUTES,
    openapi_components,
)
from service.core import metrics
from service.core.config import Environment, Settings, load_settings
from service.core.cors import CorsPolicy
from service.core.db import Database
from service.core.db_errors import install_db_error_handlers
from service.core.docs import install_docs
from service.core.edge import ConstantAnswer, EdgeMiddleware, EdgeSettings, route_templates
from service.core.errors import install_error_handlers
from service.core.logging import configure_logging, flush_logs
from service.core.mailer import Mailer
from service.core.rate_limits import install_rate_limit_handler
from service.core.routing import include_routes
from service.core.security import PasswordHashing, TokenCodec
from service.core.tables import discover_models
from service.core.telemetry import (
    build_tracer_provider,
    fastapi_telemetry,
    instrument_database,
    uninstrument_database,
)
from service.users.private_routes import router as private_users_router

OPENAPI_URL = f"{API_PREFIX}/openapi.json"
log = structlog.get_logger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if app.state.db is None:
        app.state.db = Database.from_settings(settings)
        if app.state.tracer_provider is not None:
            instrument_database(app.state.db.engine, app.state.tracer_provider)
    await app.state.passwords.warm_up()
    log.info("startup", version=__version__, environment=settings.environment.value)
    try:
        yield
    finally:
        await app.state.db.dispose()
        app.state.passwords.close()
        if app.state.tracer_provider is not None:
            uninstrument_database()
            app.state.tracer_provider.shutdown()  # flushes spans still in the batch
        log.info("shutdown_complete")
        flush_logs()  # the loop may stop before the batch's callback runs


def _document_problems(app: FastAPI) -> None:
    """Add the Problem schema that every error response refers to."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in openapi_components().items():
                schemas[name] = definition
                schemas.update(definition.pop("$defs", {}))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def observe_database_pool(app: FastAPI) -> None:
    """Point the process's pool gauges at `app`'s database, whichever it holds when scraped (the
    lifespan may open it later, tests swap it). One app per process in production; a test that
    swaps an app's database points them at it again."""
    metrics.observe_pool(lambda: app.state.db.engine.pool if app.state.db else None)


def create_app(
    settings: Settings | None = None,
    database: Database | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """`database` and `tracer_provider` are for tests; by default both come from settings."""
    settings = settings or load_settings()
    tracer_provider = tracer_provider or build_tracer_provider(settings)
    configure_logging(settings)
    discover_models()
    metrics.BUILD_INFO.labels(__version__, settings.git_commit).set(1)

    app = FastAPI(
        title=settings.project_name,
        version=__version__,
        openapi_url=OPENAPI_URL if settings.docs_enabled else None,
        docs_url=None,  # install_docs serves both pages with local assets
        redoc_url=None,
        lifespan=lifespan,
        telemetry=fastapi_telemetry(tracer_provider),  # type: ignore[arg-type]
        # The template's operation ids ("items-read_items"), so its generated clients regenerate
        # with the same method names.
        generate_unique_id_function=lambda route: (
            f"{route.tags[0]}-{route.name}" if route.tags else route.name
        ),
    )
    app.state.settings = settings
    app.state.db = database
    observe_database_pool(app)
    app.state.tracer_provider = tracer_provider
    if database is not None and tracer_provider is not None:
        instrument_database(database.engine, tracer_provider)
    app.state.passwords = PasswordHashing(settings)
    app.state.tokens = TokenCodec(settings)
    app.state.mailer = Mailer(settings)

    install_error_handlers(app)
    install_db_error_handlers(app)
    install_rate_limit_handler(app)
    for router in API_ROUTERS:
        include_routes(app, router, prefix=API_PREFIX, responses=API_RESPONSES)
    if settings.environment is Environment.LOCAL:  # the template serves it in development only
        include_routes(app, private_users_router, prefix=API_PREFIX, responses=API_RESPONSES)
    include_routes(app, ops_router)
    if settings.docs_enabled:
        install_docs(app, openapi_url=OPENAPI_URL, title=settings.project_name)
    app.state.route_templates = route_templates(app.routes)
    _document_problems(app)

    # Outermost: every answer, the 413s and 500s it makes itself included, carries the request
    # id and the security headers, and is counted and logged. CORS is answered there too.
    app.add_middleware(
        EdgeMiddleware,
        settings=EdgeSettings(
            max_body_bytes=settings.max_request_body_bytes,
            access_log=settings.access_log_enabled,
            hsts_max_age_s=settings.hsts_max_age_s if settings.hsts_enabled else None,
            no_store_routes=frozenset(NO_STORE_ROUTES),
            cors=CorsPolicy(
                settings.cors_origins,
                # readable by browser clients: ETag for If-Match, the idempotent-replay marker,
                # and when a throttled login may be retried
                expose_headers=(
                    "X-Request-ID",
                    "ETag",
                    "Idempotent-Replayed",
                    "Retry-After",
                    "RateLimit",
                    "RateLimit-Policy",
                ),
            ),
            constant_answers=_constant_answers(),
        ),
    )
    return app


def _constant_answers() -> dict[str, ConstantAnswer]:
    """The health checks, answered at the edge with the bytes their routes would send."""
    health_check = f"{API_PREFIX}/utils/health-check/"
    return {
        health_check: ConstantAnswer.json(health_check, b"true"),
        "/healthz": ConstantAnswer.json("/healthz", b'{"status":"ok"}'),
    }
