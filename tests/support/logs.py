"""Reading the service's JSON log lines from captured stdout."""

from __future__ import annotations

import json
from typing import Any


def json_log_lines(output: str) -> list[dict[str, Any]]:
    events = []
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events
