"""The API through a real PgBouncer in transaction mode: a representative slice of its HTTP paths,
readiness, and the statement timeout, with server connections shared by concurrent requests."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import problem
from tests.pooler.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    STATEMENT_TIMEOUT_MS,
    PooledStack,
)
from tests.support.clients import http_client
from tests.support.postgres import asyncpg_dsn
from tests.support.processes import free_port, keelson, log_events

pytestmark = pytest.mark.slow

LOGIN = "/api/v1/login/access-token"
REFRESH = "/api/v1/login/refresh"
ME = "/api/v1/users/me"
ITEMS = "/api/v1/items/"


async def _login(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post(LOGIN, data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _auth(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def _stored(stack: PooledStack, query: str, *args: object) -> Any:
    connection = await asyncpg.connect(asyncpg_dsn(stack.direct_url))
    try:
        return await connection.fetch(query, *args)
    finally:
        await connection.close()


async def test_readiness_and_server_connections_stay_within_pgbouncers_pool(
    stack: PooledStack,
) -> None:
    async with http_client(stack.base_url) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "migrations": "ok"}}
    database = stack.pooled_url.rsplit("/", 1)[1]
    [row] = await _stored(
        stack,
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        database,
    )
    assert row["n"] <= stack.bouncer.pool_size  # keelson's pool of 5+5 shares PgBouncer's 2


async def test_concurrent_reads_and_writes_share_two_server_connections_without_errors(
    stack: PooledStack,
) -> None:
    """Autocommit reads and transactional writes interleave on 2 server connections: a named
    prepared statement would land on the wrong one ("does not exist"); none may fail."""
    async with http_client(stack.base_url, timeout=20) as client:
        headers = _auth(await _login(client))
        prefix = uuid.uuid4().hex[:8]

        async def worker(n: int) -> list[int]:
            statuses = []
            for i in range(8):
                created = await client.post(
                    ITEMS, headers=headers, json={"title": f"{prefix}-{n}-{i}"}
                )
                statuses.append(created.status_code)
                read = await client.get(f"{ITEMS}{created.json()['id']}", headers=headers)
                statuses.append(read.status_code)
                statuses.append((await client.get(ME, headers=headers)).status_code)
            return statuses

        results = await asyncio.gather(*(worker(n) for n in range(12)))
    assert [s for statuses in results for s in statuses] == [200] * (12 * 8 * 3)
    [row] = await _stored(
        stack, "SELECT count(*) AS n FROM items WHERE title LIKE $1", f"{prefix}-%"
    )
    assert row["n"] == 12 * 8


async def test_me_items_crud_with_etag_and_if_match_through_the_pooler(stack: PooledStack) -> None:
    async with http_client(stack.base_url, timeout=10) as client:
        headers = _auth(await _login(client))
        me = await client.get(ME, headers=headers)
        assert (me.status_code, me.json()["email"]) == (200, ADMIN_EMAIL)
        assert "hashed_password" not in me.text

        created = await client.post(ITEMS, headers=headers, json={"title": "Pooled"})
        assert created.status_code == 200
        item = created.json()
        url = f"{ITEMS}{item['id']}"
        etag = (await client.get(url, headers=headers)).headers["etag"]
        assert etag == created.headers["etag"]

        updated = await client.put(
            url, headers={**headers, "If-Match": etag}, json={"title": "Pooled v2"}
        )
        assert (updated.status_code, updated.json()["title"]) == (200, "Pooled v2")
        stale = await client.put(url, headers={**headers, "If-Match": etag}, json={"title": "Lost"})
        problem(stale, 412)
        [row] = await _stored(stack, "SELECT title FROM items WHERE id = $1", uuid.UUID(item["id"]))
        assert row["title"] == "Pooled v2"

        deleted = await client.delete(url, headers={**headers, "If-Match": updated.headers["etag"]})
        assert deleted.status_code == 200
        problem(await client.get(url, headers=headers), 404)
    assert await _stored(stack, "SELECT 1 FROM items WHERE id = $1", uuid.UUID(item["id"])) == []


async def test_idempotent_create_replays_through_the_pooler_and_stores_one_item(
    stack: PooledStack,
) -> None:
    key = f"pooled-{uuid.uuid4()}"
    async with http_client(stack.base_url, timeout=10) as client:
        headers = {**_auth(await _login(client)), "Idempotency-Key": key}
        title = f"once-{uuid.uuid4().hex[:8]}"
        first, retry = [
            await client.post(ITEMS, headers=headers, json={"title": title}) for _ in range(2)
        ]
    assert (first.status_code, retry.status_code) == (200, 200)
    assert retry.json() == first.json()
    assert retry.headers["etag"] == first.headers["etag"]
    rows = await _stored(stack, "SELECT id FROM items WHERE title = $1", title)
    assert [str(r["id"]) for r in rows] == [first.json()["id"]]


async def test_refresh_rotation_and_reuse_detection_through_the_pooler(stack: PooledStack) -> None:
    async with http_client(stack.base_url, timeout=10) as client:
        first = await _login(client)
        rotated = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
        assert rotated.status_code == 200
        second = rotated.json()
        assert second["refresh_token"] != first["refresh_token"]
        assert (await client.get(ME, headers=_auth(second))).status_code == 200
        reused = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
        assert problem(reused, 401)["detail"] == "Invalid refresh token"
        # Reuse revoked the family: the token issued by the rotation is refused as well.
        after = await client.post(REFRESH, json={"refresh_token": second["refresh_token"]})
        problem(after, 401)


async def test_statement_timeout_is_a_role_default_behind_the_pooler(stack: PooledStack) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(stack.pooled_url), statement_cache_size=0)
    try:
        shown = await connection.fetchval("SHOW statement_timeout")
        idle = await connection.fetchval("SHOW idle_in_transaction_session_timeout")
    finally:
        await connection.close()
    assert shown == f"{STATEMENT_TIMEOUT_MS}ms"
    assert idle == "10s"


async def test_statement_timeout_fires_through_the_pooler_as_504_and_changes_nothing(
    stack: PooledStack,
) -> None:
    async with http_client(stack.base_url, timeout=10) as client:
        headers = _auth(await _login(client))
        created = await client.post(ITEMS, headers=headers, json={"title": "Locked"})
        item_id = uuid.UUID(created.json()["id"])
        locker = await asyncpg.connect(asyncpg_dsn(stack.direct_url))
        try:
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("SELECT 1 FROM items WHERE id = $1 FOR UPDATE", item_id)
            started = time.monotonic()
            response = await client.put(
                f"{ITEMS}{item_id}", headers=headers, json={"title": "Blocked"}
            )
            elapsed = time.monotonic() - started
            await transaction.rollback()
            title = await locker.fetchval("SELECT title FROM items WHERE id = $1", item_id)
        finally:
            await locker.close()
        body = problem(response, 504)
        assert body["detail"] == "The database did not answer in time"
        assert response.headers["retry-after"] == "2"
        assert STATEMENT_TIMEOUT_MS / 1000 <= elapsed < 3.0
        assert title == "Locked"
        # The server connection the timed-out request used serves the next request fine.
        assert (await client.get(f"{ITEMS}{item_id}", headers=headers)).status_code == 200


async def test_without_pooler_mode_keelson_cannot_use_pgbouncer(stack: PooledStack) -> None:
    """DB_POOLER=none sends the timeouts as startup parameters, which PgBouncer refuses: the
    server stays unready (503 naming the database) rather than half-working."""
    # A metrics port of its own: the stack's server holds the one in stack.env, and a second
    # server that cannot bind it exits at once.
    env = {**stack.env, "DB_POOLER": "none", "METRICS_PORT": str(free_port())}
    port = free_port()
    with keelson("serve", "--host", "127.0.0.1", "--port", str(port), env=env) as server:
        deadline = time.monotonic() + 30
        status = None
        async with http_client(f"http://127.0.0.1:{port}") as client:
            while time.monotonic() < deadline:
                assert server.poll() is None, server.communicate(timeout=5)[0][-2000:]
                try:
                    response = await client.get("/readyz")
                except httpx.TransportError:
                    await asyncio.sleep(0.2)
                    continue
                status = response.status_code
                break
        assert status == 503
        assert problem(response, 503)["check"] == "database"
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert "unsupported startup parameter" in stack.bouncer.log()
    assert any(e.get("event") == "shutdown_complete" for e in log_events(output))
