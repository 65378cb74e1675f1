"""Queries on the idempotency_keys table."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, null, update
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.core.tables import purge_batch
from service.idempotency.models import IdempotencyKey


@dataclass(frozen=True, slots=True)
class StoredKey:
    request_fingerprint: str
    response_status: int | None
    response_body: dict[str, Any] | None


def _this_key(user_id: uuid.UUID, key: str) -> Any:
    return (col(IdempotencyKey.user_id) == user_id) & (col(IdempotencyKey.key) == key)


async def claim_key(
    session: AsyncSession, *, user_id: uuid.UUID, key: str, fingerprint: str, ttl_s: int
) -> bool:
    """Insert the key, or take over an expired one; True when this transaction now owns it.

    A live key owned by a transaction that has not finished makes this statement wait (PostgreSQL's
    unique-index check) until that transaction commits (we then get False) or rolls back (the key
    is free again and we own it).
    """
    now = func.now()
    new = insert(IdempotencyKey).values(
        user_id=user_id,
        key=key,
        request_fingerprint=fingerprint,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
    )
    claim = new.on_conflict_do_update(
        index_elements=[col(IdempotencyKey.user_id), col(IdempotencyKey.key)],
        set_={
            "request_fingerprint": new.excluded.request_fingerprint,
            "response_status": null(),
            "response_body": null(),
            "created_at": new.excluded.created_at,
            "expires_at": new.excluded.expires_at,
        },
        where=col(IdempotencyKey.expires_at) < now,
    ).returning(col(IdempotencyKey.user_id))
    claimed = (await session.exec(claim)).first()
    return claimed is not None


async def get_key(session: AsyncSession, *, user_id: uuid.UUID, key: str) -> StoredKey | None:
    query = select(
        col(IdempotencyKey.request_fingerprint),
        col(IdempotencyKey.response_status),
        col(IdempotencyKey.response_body),
    ).where(_this_key(user_id, key))
    row = (await session.exec(query)).first()
    return None if row is None else StoredKey(*row)


async def store_response(
    session: AsyncSession, *, user_id: uuid.UUID, key: str, status: int, body: dict[str, Any]
) -> None:
    await session.exec(
        update(IdempotencyKey)
        .where(_this_key(user_id, key))
        .values(response_status=status, response_body=body)
    )


async def delete_expired(session: AsyncSession, *, limit: int) -> int:
    """Delete up to `limit` expired keys (oldest first); returns how many went."""
    expires_at = col(IdempotencyKey.expires_at)
    key = (col(IdempotencyKey.user_id), col(IdempotencyKey.key))
    purge = purge_batch(
        IdempotencyKey, key, expires_at < func.now(), limit, oldest_first=expires_at
    )
    deleted = await session.exec(purge.returning(col(IdempotencyKey.key)))
    return len(deleted.all())
