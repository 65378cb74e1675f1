"""SHA-256 digests the service stores or compares: of a secret token, and of canonical JSON."""

from __future__ import annotations

import hashlib
import uuid

import orjson

# Canonical JSON: sorted keys, no whitespace, UTF-8, datetimes in UTC with "Z". For plain JSON
# values (what model_dump(mode="json") gives) these are the bytes of
# json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False): the idempotency
# fingerprints stored before this helper replaced that call stay valid.
_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z


def json_default(value: object) -> str:
    """orjson's `default=` for this service's rows: asyncpg's own UUID class (a uuid.UUID
    subclass) is not one orjson writes natively."""
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def sha256_hex(data: str | bytes) -> str:
    """What the database stores instead of a token (256 random bits need no salt or slow hash)."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def canonical_json(value: object) -> bytes:
    return orjson.dumps(value, default=json_default, option=_CANONICAL)


def json_sha256(value: object) -> str:
    """The SHA-256 of `value` as canonical JSON: equal values give equal digests, whatever the
    key order they were built in."""
    return sha256_hex(canonical_json(value))
