"""One SHA-256-of-canonical-JSON helper, and digests that keep the formulas already stored."""

from __future__ import annotations

import hashlib
import json

import pytest

from service.core.digests import json_sha256, sha256_hex
from service.idempotency.service import fingerprint

AWKWARD = 'é \u2028 "quoted" \\ \x01 \x7f 😀 </script>'


def _stored_formula(operation: str, payload: dict[str, object]) -> str:
    """The formula idempotency fingerprints were stored under before json_sha256 (stdlib json)."""
    canonical = json.dumps(
        {"operation": operation, "payload": payload},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize(
    "payload",
    [
        {"title": "milk", "description": None},
        {"title": AWKWARD, "description": AWKWARD[::-1]},
        {"z": [1, 2.5, -0.1, True, False, None], "a": {"y": "ü", "b": 10**15}},
        {},
    ],
)
def test_an_idempotency_fingerprint_stored_before_still_matches(payload: dict[str, object]) -> None:
    assert fingerprint("POST /api/v1/items/", payload) == _stored_formula(
        "POST /api/v1/items/", payload
    )


def test_key_order_does_not_change_the_digest() -> None:
    assert json_sha256({"a": 1, "b": [2, {"d": 3, "c": 4}]}) == json_sha256(
        {"b": [2, {"c": 4, "d": 3}], "a": 1}
    )
    assert json_sha256({"a": 1}) != json_sha256({"a": 2})


def test_a_token_digest_is_the_hex_sha256_of_its_utf8_bytes() -> None:
    assert sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_hex("abc") == sha256_hex(b"abc")
