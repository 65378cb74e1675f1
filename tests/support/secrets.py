"""The check run on every response the suite receives: no password or hash ever goes out."""

from __future__ import annotations

import json
from typing import Any

import httpx

FORBIDDEN_KEY_PARTS = ("password", "hash")
# How many responses went through the scan in this process: tests that build their own
# pipeline (the fuzz run) assert it grew by the number of responses they received.
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


def assert_no_secrets_in(url: str, content_type: str, content: bytes) -> None:
    """The scan itself, for any HTTP library's response: its URL, content type and body."""
    SCANNED["responses"] += 1
    text = content.decode("utf-8", errors="replace")
    assert "$argon2" not in text, f"{url}: an argon2 hash left the service"
    # The OpenAPI document names password fields by design; it holds no user data.
    if httpx.URL(url).path.endswith("/openapi.json"):
        return
    if "json" in content_type and content:
        leaked = _walk_keys(json.loads(text))
        assert not leaked, f"{url}: secret-looking fields in the body: {leaked}"


def assert_no_secrets(response: httpx.Response) -> None:
    assert_no_secrets_in(
        str(response.request.url), response.headers.get("content-type", ""), response.content
    )
