"""A server under load: its base URL, the superuser's token, and seeding/cleaning its items."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx

from .machine import log

if TYPE_CHECKING:
    from .postgres import BenchPostgres
    from .processes import Server

BENCH_EMAIL = "admin@example.com"
BENCH_DESCRIPTION = "created by wrk"  # rows the create case inserts; deleted after it
ITEM_TABLES = {"items", "item"}  # Keelson's, the template's: the only names put into SQL text
API_SEED_LIMIT = 50_000  # more than this through the API takes too long: seed by SQL (--dsn)


@dataclass
class Target:
    label: str
    base_url: str
    email: str
    password: str
    dsn: str | None = None
    server: Server | None = None
    postgres: BenchPostgres | None = None
    aux: Server | None = None  # the baseline server a "hello"/"lean" case runs against
    metrics_url: str | None = None  # keelson's /metrics (its own port), for the pool's counters
    token: str = ""
    user_id: str = ""
    profile_dir: Path | None = None
    quiet_wait_s: float = 0.0
    retry_noisy: int = 0
    items_table: str = "items"  # one of ITEM_TABLES: the template names its table "item"

    def __post_init__(self) -> None:
        if self.items_table not in ITEM_TABLES:
            raise ValueError(f"unknown items table {self.items_table!r}")

    def login(self) -> None:
        response = httpx.post(
            self.base_url + "/api/v1/login/access-token",
            data={"username": self.email, "password": self.password},
            timeout=30,
        )
        if response.status_code != 200:
            sys.exit(
                f"bench: login to {self.base_url} failed: {response.status_code} {response.text}"
            )
        self.token = response.json()["access_token"]
        me = httpx.get(self.base_url + "/api/v1/users/me", headers=self.auth_headers(), timeout=10)
        me.raise_for_status()
        self.user_id = me.json()["id"]

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def wrk_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "WRK_TOKEN": self.token,
            "WRK_USERNAME": self.email,
            "WRK_PASSWORD": self.password,
            "WRK_BODY": json.dumps({"title": "bench item", "description": BENCH_DESCRIPTION}),
        }

    def item_count(self) -> int:
        response = httpx.get(
            self.base_url + "/api/v1/items/?skip=0&limit=1", headers=self.auth_headers(), timeout=60
        )
        response.raise_for_status()
        return int(response.json()["count"])

    def ensure_items(self, wanted: int) -> None:
        """Bring the superuser's item count up to `wanted` (SQL when possible, else the API)."""
        if self.dsn:
            asyncio.run(sql_seed_items(self.dsn, self.user_id, wanted, self.items_table))
            return
        have = self.item_count()
        if have >= wanted:
            return
        if wanted - have > API_SEED_LIMIT:
            sys.exit(f"bench: seeding over {API_SEED_LIMIT:,} items needs SQL access: pass --dsn")
        log(f"seeding {wanted - have} items via the API")
        asyncio.run(api_seed_items(self, wanted - have))

    def delete_bench_rows(self) -> None:
        if self.dsn:
            asyncio.run(
                sql_execute(
                    self.dsn,
                    f'DELETE FROM "{self.items_table}" WHERE description = $1',  # noqa: S608
                    BENCH_DESCRIPTION,
                )
            )


async def sql_execute(dsn: str, query: str, *args: Any) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(query, *args)
    finally:
        await conn.close()


async def sql_seed_items(dsn: str, owner_id: str, wanted: int, table: str = "items") -> None:
    """One INSERT ... SELECT generate_series: a million rows in seconds, not an API call each.
    Keelson's `items` and the template's `item` have the same columns for this."""
    if table not in ITEM_TABLES:
        raise ValueError(f"unknown items table {table!r}")
    count_sql = f'SELECT count(*) FROM "{table}" WHERE owner_id = $1'  # noqa: S608 - ITEM_TABLES
    insert_sql = f"""
        INSERT INTO "{table}" (id, title, description, owner_id, created_at)
        SELECT gen_random_uuid(), 'item ' || g, 'seeded by bench.py', $1,
               now() - make_interval(secs => g + $3)
        FROM generate_series(1, $2::int) AS g
    """  # noqa: S608 - ITEM_TABLES
    conn = await asyncpg.connect(dsn)
    try:
        have = await conn.fetchval(count_sql, owner_id)
        missing = wanted - have
        if missing > 0:
            started = time.monotonic()
            await conn.execute(insert_sql, owner_id, missing, float(have))
            await conn.execute(f'VACUUM (ANALYZE) "{table}"')
            log(f"seeded {missing:,} items by SQL in {time.monotonic() - started:.1f}s")
    finally:
        await conn.close()


async def api_seed_items(target: Target, count: int) -> None:
    semaphore = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=target.base_url, headers=target.auth_headers()) as client:

        async def one(n: int) -> None:
            async with semaphore:
                r = await client.post(
                    "/api/v1/items/",
                    json={"title": f"item {n}", "description": "seeded by bench.py"},
                    timeout=30,
                )
                r.raise_for_status()

        await asyncio.gather(*(one(n) for n in range(count)))
