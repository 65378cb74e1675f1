"""The check run on every response the suite receives: no password or hash ever goes out."""

from __future__ import annotations

import json
from typing import Any

import httpx

FORBIDDEN_KEY_PARTS = ("password", "hash")
SCANNED = {"responses": 0}


def _walk_keys(value: Any, path: str = "$") -> list[str]:
    found = []
    if isinstance(value, dict):
        for key, child in value.items():
            if any(part in str(key).lower() for part in FORBIDDEN_KEY_PARTS):
                found.append(f"{path}.{key}")
            found.extend(_walk_keys(child, f"{path}.{key}"))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(_walk_keys(child, f"{path}[{index}]"))
    return found


def assert_no_secrets(response: httpx.Response) -> None:
    SCANNED["responses"] += 1
    text = response.content.decode("utf-8", errors="replace")
    assert "$argon2" not in text, f"{response.request.url}: an argon2 hash left the service"
    # The OpenAPI document names password fields by design; it holds no user data.
    if response.request.url.path.endswith("/openapi.json"):
        return
    if "json" in response.headers.get("content-type", ""):
        leaked = _walk_keys(json.loads(text))
        assert not leaked, f"{response.request.url}: secret-looking fields in the body: {leaked}"
