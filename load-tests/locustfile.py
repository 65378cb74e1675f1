"""A realistic Keelson traffic mix for long runs against any deployment, incl. behind an ingress.

Each simulated user signs up its own account (or shares the account in KEELSON_LOAD_EMAIL /
KEELSON_LOAD_PASSWORD), logs in, then mostly reads: its profile, its item list (first page and
later pages), single items; and sometimes writes: creates, updates and deletes its own items, and
logs in again. Every answer is checked, so a wrong status or body counts as a failure.

    uv run --group load locust -f load-tests/locustfile.py --headless \\
        --host http://127.0.0.1:8000 --users 50 --spawn-rate 10 --run-time 2m

Environment:
    KEELSON_LOAD_EMAIL, KEELSON_LOAD_PASSWORD  use this one account instead of signing up users
    KEELSON_LOAD_MAX_ITEMS                      items a user keeps before it deletes (default 50)
"""

from __future__ import annotations

import os
import random
import uuid
from typing import Any

from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser

API = "/api/v1"
SHARED_EMAIL = os.environ.get("KEELSON_LOAD_EMAIL")
SHARED_PASSWORD = os.environ.get("KEELSON_LOAD_PASSWORD")
MAX_ITEMS = int(os.environ.get("KEELSON_LOAD_MAX_ITEMS", "50"))


@events.init_command_line_parser.add_listener
def _document_env(parser: Any) -> None:
    parser.epilog = __doc__


class KeelsonUser(FastHttpUser):
    """One person using the dashboard: reads often, writes sometimes."""

    wait_time = between(0.2, 1.5)

    def on_start(self) -> None:
        self.item_ids: list[str] = []
        if SHARED_EMAIL and SHARED_PASSWORD:
            self.email, self.password = SHARED_EMAIL, SHARED_PASSWORD
        else:
            self.email = f"load-{uuid.uuid4().hex[:16]}@example.com"
            self.password = f"pw-{uuid.uuid4().hex}"
            with self.client.post(
                f"{API}/users/signup",
                json={"email": self.email, "password": self.password, "full_name": "Load Test"},
                name=f"{API}/users/signup",
                catch_response=True,
            ) as response:
                if response.status_code != 200:
                    response.failure(f"signup answered {response.status_code}")
        self.login()

    # -- helpers ----------------------------------------------------------------------------

    def login(self) -> None:
        with self.client.post(
            f"{API}/login/access-token",
            data={"username": self.email, "password": self.password},
            name=f"{API}/login/access-token",
            catch_response=True,
        ) as response:
            body = response.json() if response.status_code == 200 else {}
            token = body.get("access_token")
            if not token or body.get("token_type") != "bearer":
                response.failure(f"login answered {response.status_code}")
                self.headers: dict[str, str] = {}
                return
        self.headers = {"Authorization": f"Bearer {token}"}

    def _expect(self, response: Any, status: int, *keys: str) -> dict[str, Any] | None:
        if response.status_code != status:
            response.failure(f"expected {status}, got {response.status_code}")
            return None
        body = response.json()
        missing = [k for k in keys if k not in body]
        if missing:
            response.failure(f"missing fields {missing}")
            return None
        return body if isinstance(body, dict) else None

    # -- reads --------------------------------------------------------------------------------

    @task(10)
    def read_me(self) -> None:
        with self.client.get(
            f"{API}/users/me", headers=self.headers, name=f"{API}/users/me", catch_response=True
        ) as response:
            body = self._expect(response, 200, "id", "email")
            if body is not None and body["email"].lower() != self.email.lower():
                response.failure("users/me returned someone else")

    @task(12)
    def list_items(self) -> None:
        with self.client.get(
            f"{API}/items/?skip=0&limit=100",
            headers=self.headers,
            name=f"{API}/items/ (first page)",
            catch_response=True,
        ) as response:
            body = self._expect(response, 200, "data", "count")
            if body is None:
                return
            if not SHARED_EMAIL:
                self.item_ids = [item["id"] for item in body["data"]][:MAX_ITEMS] or self.item_ids
            cursor = body.get("next_cursor")
        if cursor and random.random() < 0.3:
            with self.client.get(
                f"{API}/items/",
                params={"limit": 100, "cursor": cursor},
                headers=self.headers,
                name=f"{API}/items/ (next page by cursor)",
                catch_response=True,
            ) as response:
                self._expect(response, 200, "data", "count")

    @task(4)
    def read_item(self) -> None:
        if not self.item_ids:
            return
        with self.client.get(
            f"{API}/items/{random.choice(self.item_ids)}",
            headers=self.headers,
            name=f"{API}/items/[id]",
            catch_response=True,
        ) as response:
            # 404 is fine: another user's session (shared account) may have deleted it.
            if response.status_code == 404:
                response.success()
            else:
                self._expect(response, 200, "id", "title", "owner_id")

    # -- writes -------------------------------------------------------------------------------

    @task(4)
    def create_item(self) -> None:
        payload = {"title": f"load item {uuid.uuid4().hex[:8]}", "description": "locust"}
        with self.client.post(
            f"{API}/items/",
            json=payload,
            headers=self.headers,
            name=f"{API}/items/ (create)",
            catch_response=True,
        ) as response:
            body = self._expect(response, 200, "id", "title", "owner_id", "created_at")
            if body is not None:
                self.item_ids.append(body["id"])
        if len(self.item_ids) > MAX_ITEMS:
            self.delete_item()

    @task(2)
    def update_item(self) -> None:
        if not self.item_ids:
            return
        with self.client.put(
            f"{API}/items/{random.choice(self.item_ids)}",
            json={"title": f"updated {uuid.uuid4().hex[:8]}"},
            headers=self.headers,
            name=f"{API}/items/[id] (update)",
            catch_response=True,
        ) as response:
            if response.status_code == 404:
                response.success()
            else:
                self._expect(response, 200, "id", "title")

    @task(1)
    def delete_item(self) -> None:
        if not self.item_ids:
            return
        item_id = self.item_ids.pop(random.randrange(len(self.item_ids)))
        with self.client.delete(
            f"{API}/items/{item_id}",
            headers=self.headers,
            name=f"{API}/items/[id] (delete)",
            catch_response=True,
        ) as response:
            if response.status_code == 404:
                response.success()
            else:
                self._expect(response, 200, "message")

    @task(1)
    def login_again(self) -> None:
        self.login()
