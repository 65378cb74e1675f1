"""Queries on the idempotency_keys table: named statements compiled once from the table, run on
the driver (core/statements.py runs them; rows are asyncpg Records).

`response_body` is JSONB. On the raw asyncpg connection SQLAlchemy's JSON type no longer
(de)serialises it; the jsonb codec SQLAlchemy's asyncpg dialect registers on every connection it
opens (`setup_asyncpg_jsonb_codec`, in `on_connect`) does the driver's part: it takes the JSON
*text* (a str: a dict or bytes is refused) and gives back the decoded value (`json.loads`), SQL
NULL as None. So the body is written as canonical JSON text and read as it comes; rows stored
by SQLAlchemy's serializer before read back the same (jsonb keeps the value, not the spelling).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Integer, Interval, Table, Uuid, bindparam, func, null, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlmodel.ext.asyncio.session import AsyncSession

from service.core.digests import canonical_json
from service.core.statements import compile_statement, execute, fetch_one, rows_affected
from service.core.tables import purge_batch
from service.idempotency.models import IdempotencyKey

idempotency_keys: Table = IdempotencyKey.metadata.tables["idempotency_keys"]


@dataclass(frozen=True, slots=True)
class StoredKey:
    request_fingerprint: str
    response_status: int | None
    response_body: dict[str, Any] | None


_THIS_KEY = (idempotency_keys.c.user_id == bindparam("user_id", type_=Uuid)) & (
    idempotency_keys.c.key == bindparam("key")
)


_NOW = func.now()
_NEW = insert(idempotency_keys).values(
    user_id=bindparam("user_id", type_=Uuid),
    key=bindparam("key"),
    request_fingerprint=bindparam("fingerprint"),
    created_at=_NOW,
    expires_at=_NOW + bindparam("ttl", type_=Interval),
)
_CLAIM = compile_statement(
    _NEW.on_conflict_do_update(
        index_elements=[idempotency_keys.c.user_id, idempotency_keys.c.key],
        set_={
            "request_fingerprint": _NEW.excluded.request_fingerprint,
            # SQL NULL (a literal, not a parameter): "no answer yet", never the JSON value null.
            "response_status": null(),
            "response_body": null(),
            "created_at": _NEW.excluded.created_at,
            "expires_at": _NEW.excluded.expires_at,
        },
        where=idempotency_keys.c.expires_at < _NOW,
    ).returning(idempotency_keys.c.user_id)
)


async def claim_key(
    session: AsyncSession, *, user_id: uuid.UUID, key: str, fingerprint: str, ttl_s: int
) -> bool:
    """Insert the key, or take over an expired one; True when this transaction now owns it.

    A live key owned by a transaction that has not finished makes this statement wait (PostgreSQL's
    unique-index check) until that transaction commits (we then get False) or rolls back (the key
    is free again and we own it).
    """
    claimed = await fetch_one(
        session,
        _CLAIM,
        user_id=user_id,
        key=key,
        fingerprint=fingerprint,
        ttl=timedelta(seconds=ttl_s),
    )
    return claimed is not None


_GET = compile_statement(
    select(
        idempotency_keys.c.request_fingerprint,
        idempotency_keys.c.response_status,
        idempotency_keys.c.response_body,
    ).where(_THIS_KEY)
)


async def get_key(session: AsyncSession, *, user_id: uuid.UUID, key: str) -> StoredKey | None:
    row = await fetch_one(session, _GET, user_id=user_id, key=key)
    if row is None:
        return None
    return StoredKey(
        request_fingerprint=row["request_fingerprint"],
        response_status=row["response_status"],
        response_body=row["response_body"],  # decoded by the connection's jsonb codec
    )


_STORE = compile_statement(
    update(idempotency_keys)
    .where(_THIS_KEY)
    .values(
        response_status=bindparam("status", type_=Integer),
        response_body=bindparam("body"),  # $n::JSONB, the JSON text
    )
)


async def store_response(
    session: AsyncSession, *, user_id: uuid.UUID, key: str, status: int, body: dict[str, Any]
) -> None:
    await execute(
        session,
        _STORE,
        user_id=user_id,
        key=key,
        status=status,
        body=canonical_json(body).decode(),
    )


_PURGE = compile_statement(
    purge_batch(
        IdempotencyKey,
        (idempotency_keys.c.user_id, idempotency_keys.c.key),
        idempotency_keys.c.expires_at < func.now(),
        bindparam("limit", type_=Integer),
        oldest_first=idempotency_keys.c.expires_at,
    )
)


async def delete_expired(session: AsyncSession, *, limit: int) -> int:
    """Delete up to `limit` expired keys (oldest first); returns how many went."""
    return rows_affected(await execute(session, _PURGE, limit=limit))
