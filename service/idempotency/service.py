"""Idempotency-Key rules: a retried request gets the first answer; a key reused for a different
request is refused. Keys are per user and expire after IDEMPOTENCY_KEY_TTL_S.

Everything happens inside the caller's one transaction: the key, the work and the stored answer
commit together or not at all, so a failed first attempt leaves the key free for the retry.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlmodel.ext.asyncio.session import AsyncSession

from service.core.digests import json_sha256
from service.core.errors import BadRequest, Conflict, Unprocessable
from service.idempotency import repository

# 1-255 printable ASCII characters (a UUID, a ULID, "order-42/try-1", ...).
_VALID_KEY = re.compile(r"[\x20-\x7e]{1,255}")

type Action = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]


class InvalidIdempotencyKey(BadRequest):
    def __init__(self) -> None:
        super().__init__("Idempotency-Key must be 1 to 255 printable ASCII characters")


class IdempotencyKeyReused(Unprocessable):
    def __init__(self) -> None:
        super().__init__("Idempotency-Key reused with a different request")


class IdempotencyKeyInProgress(Conflict):
    """The key's row exists without an answer: only seen if its first request never finished."""

    headers: ClassVar[Mapping[str, str]] = {"Retry-After": "1"}

    def __init__(self) -> None:
        super().__init__("A request with this Idempotency-Key is still in progress; retry later")


@dataclass(frozen=True, slots=True)
class Answer:
    """The first answer, as stored to be replayed: its status code is part of what is replayed
    (data the route chose, never interpreted here), its body the JSON the route sent."""

    status: int
    body: dict[str, Any]
    replayed: bool


def check_key(raw: str) -> str:
    if _VALID_KEY.fullmatch(raw) is None:
        raise InvalidIdempotencyKey
    return raw


def fingerprint(operation: str, payload: Mapping[str, Any]) -> str:
    """SHA-256 of the operation and its canonical JSON payload.

    Pass the validated payload, not the raw bytes: key order, whitespace and spelled-out defaults
    do not make a retry a different request.
    """
    return json_sha256({"operation": operation, "payload": payload})


async def run_once(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    key: str,
    fingerprint: str,
    ttl_s: int,
    action: Action,
) -> Answer:
    """Run `action` unless this user's key already has an answer; then return that answer.

    When the key's first request is still running in another transaction, claiming the key waits
    for it (PostgreSQL's unique-index wait): the retry then replays the answer that request
    committed, or owns the key if it rolled back.
    """
    if await repository.claim_key(
        session, user_id=user_id, key=key, fingerprint=fingerprint, ttl_s=ttl_s
    ):
        status, body = await action()
        await repository.store_response(session, user_id=user_id, key=key, status=status, body=body)
        return Answer(status=status, body=body, replayed=False)

    stored = await repository.get_key(session, user_id=user_id, key=key)
    if stored is not None and stored.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused
    if stored is None or stored.response_status is None or stored.response_body is None:
        raise IdempotencyKeyInProgress
    return Answer(status=stored.response_status, body=stored.response_body, replayed=True)


async def purge_expired_keys(session: AsyncSession, *, batch_size: int = 1000) -> int:
    """Delete up to `batch_size` expired keys; call repeatedly until it returns 0."""
    return await repository.delete_expired(session, limit=batch_size)
