"""kind e2e load generator: steady authenticated reads until /tmp/stop appears; counts non-2xx.

Runs in the service image (standard library only). Every request opens a new connection, so each
one is routed afresh by the Service, as a client behind an ingress would be during a rollout.
Prints one JSON progress line every 10 s and a JSON summary last; exits 1 on any failure.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

BASE_URL = os.environ["BASE_URL"].rstrip("/")
if not BASE_URL.startswith(("http://", "https://")):
    sys.exit(f"load.py: BASE_URL must be an http(s) URL, got {BASE_URL!r}")
EMAIL = os.environ["LOGIN_EMAIL"]
PASSWORD = os.environ["LOGIN_PASSWORD"]
WORKERS = int(os.environ.get("WORKERS", "4"))
PAUSE_S = float(os.environ.get("PAUSE_S", "0.05"))
MAX_S = float(os.environ.get("MAX_S", "3600"))
# The pod's own emptyDir; `kubectl exec ... touch /tmp/stop` ends the run.
STOP = Path(os.environ.get("STOP_FILE", "/tmp/stop"))  # noqa: S108
TOKEN_MAX_AGE_S = 600  # access tokens live 15 minutes by default: renew well before that
PATHS = ("/api/v1/users/me", "/api/v1/items/?limit=5")

lock = threading.Lock()
statuses: Counter[str] = Counter()
failures: list[dict[str, object]] = []
token: dict[str, object] = {"value": "", "at": 0.0}


def record(path: str, status: str) -> None:
    with lock:
        statuses[status] += 1
        if not status.startswith("2") and len(failures) < 50:
            failures.append({"t": round(time.time(), 3), "path": path, "status": status})


def request(path: str, data: bytes | None = None, bearer: str = "") -> tuple[str, bytes]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    if data is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    # BASE_URL is checked to be http(s) above, so no file: or custom scheme can be opened.
    req = urllib.request.Request(BASE_URL + path, data=data, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310
            return str(response.status), response.read()
    except urllib.error.HTTPError as error:
        return str(error.code), b""
    except (urllib.error.URLError, OSError) as error:
        return f"error:{type(error).__name__}", b""


def current_token() -> str:
    with lock:
        if token["value"] and time.monotonic() - float(str(token["at"])) < TOKEN_MAX_AGE_S:
            return str(token["value"])
        form = urllib.parse.urlencode({"username": EMAIL, "password": PASSWORD}).encode()
        status, body = request("/api/v1/login/access-token", data=form)
        if status != "200":
            statuses[f"login:{status}"] += 1
            return ""
        token["value"] = json.loads(body)["access_token"]
        token["at"] = time.monotonic()
        return str(token["value"])


def worker(deadline: float) -> None:
    turn = 0
    while not STOP.exists() and time.monotonic() < deadline:
        path = PATHS[turn % len(PATHS)]
        turn += 1
        bearer = current_token()
        if not bearer:
            record("/api/v1/login/access-token", "login-failed")
        else:
            status, _ = request(path, bearer=bearer)
            record(path, status)
        time.sleep(PAUSE_S)


def summary(started: float) -> dict[str, object]:
    with lock:
        ok = sum(n for status, n in statuses.items() if status.startswith("2"))
        return {
            "seconds": round(time.monotonic() - started, 1),
            "ok": ok,
            "non_2xx": sum(statuses.values()) - ok,
            "by_status": dict(statuses),
            "failures": list(failures),
        }


def main() -> int:
    started = time.monotonic()
    deadline = started + MAX_S
    threads = [threading.Thread(target=worker, args=(deadline,)) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    print(json.dumps({"event": "load_started", "workers": WORKERS, "base_url": BASE_URL}))
    next_progress = started + 10
    while any(thread.is_alive() for thread in threads):
        time.sleep(0.2)
        if time.monotonic() >= next_progress:
            next_progress += 10
            print(json.dumps({"event": "progress", **summary(started)}), flush=True)
    result = summary(started)
    print(json.dumps({"event": "summary", **result}), flush=True)
    return 0 if result["non_2xx"] == 0 and int(str(result["ok"])) > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
