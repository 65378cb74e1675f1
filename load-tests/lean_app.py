"""The stretch ceiling: the issue's "lean implementation" of the DB cases, measured in the same run.

FastAPI + one raw asyncpg pool of 20 + orjson responses, no ORM, no middleware, no logging, no
metrics. It reads Keelson's database and accepts Keelson's access tokens (same SECRET_KEY, issuer
and audience), so bench.py can load it with the very same wrk scripts and tokens:

    DATABASE_URL=postgresql://... SECRET_KEY=... uv run python load-tests/lean_app.py --port 8200

It answers GET /api/v1/users/me, GET and POST /api/v1/items/ with Keelson's shapes, and nothing
else; the "Keelson keeps 80% of it" stretch target compares against these figures.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import jwt
import orjson
import uvicorn
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import Response

SECRET_KEY = os.environ.get("SECRET_KEY", "")
ISSUER = os.environ.get("JWT_ISSUER", "keelson")
AUDIENCE = os.environ.get("JWT_AUDIENCE", "keelson-api")
USER_COLUMNS = "id, email, is_active, is_superuser, full_name, created_at"
ITEM_COLUMNS = "id, title, description, owner_id, created_at"


def dsn() -> str:
    return os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://", 1)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = await asyncpg.create_pool(dsn(), min_size=20, max_size=20)
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


def json_response(value: Any) -> Response:
    return Response(orjson.dumps(value, default=str), media_type="application/json")


def row(record: asyncpg.Record) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in record.items()}


async def current_user(request: Request, authorization: str | None) -> asyncpg.Record:
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, "Not authenticated")
    try:
        claims = jwt.decode(
            authorization[7:], SECRET_KEY, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER
        )
        user_id = uuid.UUID(claims["sub"])
    except (jwt.PyJWTError, KeyError, ValueError):
        raise HTTPException(401, "Could not validate credentials") from None
    user = await request.app.state.pool.fetchrow(
        f"SELECT {USER_COLUMNS} FROM users WHERE id = $1",  # noqa: S608 - constant columns
        user_id,
    )
    if user is None or not user["is_active"]:
        raise HTTPException(401, "Could not validate credentials")
    return user


@app.get("/api/v1/utils/health-check/")
async def health_check() -> Response:
    return json_response(True)


@app.get("/api/v1/users/me")
async def read_me(request: Request, authorization: str | None = Header(None)) -> Response:
    return json_response(row(await current_user(request, authorization)))


@app.get("/api/v1/items/")
async def read_items(
    request: Request, skip: int = 0, limit: int = 100, authorization: str | None = Header(None)
) -> Response:
    user = await current_user(request, authorization)
    pool = request.app.state.pool
    if user["is_superuser"]:
        items = await pool.fetch(
            f"SELECT {ITEM_COLUMNS} FROM items ORDER BY created_at DESC, id DESC"  # noqa: S608
            " OFFSET $1 LIMIT $2",
            skip,
            limit,
        )
        count = await pool.fetchval("SELECT count(*) FROM items")
    else:
        items = await pool.fetch(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE owner_id = $1"  # noqa: S608
            " ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT $3",
            user["id"],
            skip,
            limit,
        )
        count = await pool.fetchval("SELECT count(*) FROM items WHERE owner_id = $1", user["id"])
    return json_response({"data": [row(i) for i in items], "count": count})


@app.post("/api/v1/items/")
async def create_item(request: Request, authorization: str | None = Header(None)) -> Response:
    user = await current_user(request, authorization)
    body = orjson.loads(await request.body())
    item = await request.app.state.pool.fetchrow(
        f"INSERT INTO items (id, title, description, owner_id, created_at)"  # noqa: S608
        f" VALUES ($1, $2, $3, $4, now()) RETURNING {ITEM_COLUMNS}",
        uuid.uuid4(),
        body["title"],
        body.get("description"),
        user["id"],
    )
    return json_response(row(item))


@app.get("/")
async def root() -> Response:
    return json_response({"lean": True})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    args = parser.parse_args()
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
