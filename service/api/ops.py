"""Health and readiness endpoints for Kubernetes, outside /api/v1 (metrics: METRICS_PORT)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import JSONResponse, Response

from service.core import metrics
from service.core.db import Database
from service.core.errors import problem_response
from service.core.migrations import expected_heads, schema_is_compatible

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def liveness() -> dict[str, str]:
    """Answers while the event loop runs; never touches the database (a DB outage must not
    make Kubernetes restart every pod)."""
    return {"status": "ok"}


async def _schema_revisions(database: Database) -> set[str]:
    async with database.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
        rows = await connection.execute(text("SELECT version_num FROM alembic_version"))
        return {row[0] for row in rows}


@router.get("/readyz")
async def readiness(request: Request) -> Response:
    """Ready when the database answers within READINESS_TIMEOUT_S and its schema is at (or,
    during an upgrade, ahead of) the head this code expects; otherwise 503 naming the check."""
    database: Database = request.app.state.db
    timeout_s = request.app.state.settings.readiness_timeout_s
    try:
        revisions = await asyncio.wait_for(_schema_revisions(database), timeout_s)
    except (TimeoutError, SQLAlchemyError, OSError) as error:
        metrics.READY.set(0)
        check = "database" if not _is_missing_table(error) else "migrations"
        detail = f"{check} check failed: {type(error).__name__}"
        return problem_response(503, detail, instance="/readyz", extensions={"check": check})
    if not schema_is_compatible(revisions):
        metrics.READY.set(0)
        detail = (
            f"migrations check failed: schema at {sorted(revisions)},"
            f" code expects {sorted(expected_heads())}"
        )
        return problem_response(503, detail, instance="/readyz", extensions={"check": "migrations"})
    metrics.READY.set(1)
    return JSONResponse({"status": "ready", "checks": {"database": "ok", "migrations": "ok"}})


def _is_missing_table(error: BaseException) -> bool:
    return "alembic_version" in str(error) and "does not exist" in str(error)
