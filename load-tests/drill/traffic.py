"""Constant mixed traffic through the balancer, every response recorded under the current phase:
reads (GET /users/me, GET /items/) and idempotent writes (POST /items/ with an Idempotency-Key,
retried with the same key until acknowledged)."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx


@dataclass(frozen=True)
class Record:
    phase: str
    kind: str  # "read" or "write"
    status: int | None  # None: transport error
    error: str | None
    latency_s: float
    at: float
    served_by: str | None
    retry_after: str | None
    item_id: str | None = None


@dataclass
class Traffic:
    base_url: str
    headers: dict[str, str]
    readers: int = 3
    writers: int = 2
    think_s: float = 0.02
    phase: str = "warmup"
    records: list[Record] = field(default_factory=list)
    acknowledged: dict[str, str] = field(default_factory=dict)  # title -> item id
    retried_writes: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def _send(self, client: httpx.AsyncClient, kind: str, request: httpx.Request) -> Record:
        started = time.monotonic()
        try:
            response = await client.send(request)
        except httpx.HTTPError as error:
            record = Record(
                self.phase,
                kind,
                None,
                type(error).__name__,
                time.monotonic() - started,
                started,
                None,
                None,
            )
        else:
            ok_write = kind == "write" and response.status_code == 200
            record = Record(
                self.phase,
                kind,
                response.status_code,
                None,
                time.monotonic() - started,
                started,
                response.headers.get("x-served-by"),
                response.headers.get("retry-after"),
                response.json()["id"] if ok_write else None,
            )
        self.records.append(record)
        return record

    async def _reader(self, client: httpx.AsyncClient, n: int) -> None:
        paths = ["/api/v1/users/me", "/api/v1/items/?limit=20"]
        i = n
        while not self._stop.is_set():
            request = client.build_request("GET", paths[i % 2], headers=self.headers)
            await self._send(client, "read", request)
            i += 1
            await asyncio.sleep(self.think_s)

    async def _writer(self, client: httpx.AsyncClient, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            title = f"drill-{n}-{i}-{uuid.uuid4().hex[:6]}"
            key = str(uuid.uuid4())
            i += 1
            attempts = 0
            while True:  # the same key until acknowledged: a retry never duplicates
                request = client.build_request(
                    "POST",
                    "/api/v1/items/",
                    headers={**self.headers, "Idempotency-Key": key},
                    json={"title": title},
                )
                record = await self._send(client, "write", request)
                attempts += 1
                if record.status == 200:
                    assert record.item_id is not None
                    self.acknowledged[title] = record.item_id
                    break
                if attempts == 2:
                    self.retried_writes += 1
                if attempts > 50:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(self.think_s)

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(30),
            limits=httpx.Limits(max_connections=self.readers + self.writers + 4),
        )
        for n in range(self.readers):
            self._tasks.append(asyncio.create_task(self._reader(self._client, n)))
        for n in range(self.writers):
            self._tasks.append(asyncio.create_task(self._writer(self._client, n)))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()


async def stored_titles(dsn: str) -> dict[str, int]:
    """Title -> how many items carry it, for every item the writers stored (an asyncpg DSN)."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT title, count(*) AS n FROM items WHERE title LIKE 'drill-%' GROUP BY title"
        )
    finally:
        await connection.close()
    return {row["title"]: row["n"] for row in rows}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summarize(records: list[Record], phase: str) -> dict[str, Any]:
    mine = [r for r in records if r.phase == phase]
    latencies = [r.latency_s * 1000 for r in mine if r.status is not None]
    non_2xx = Counter(str(r.status) for r in mine if r.status is not None and r.status >= 300)
    errors = Counter(r.error for r in mine if r.status is None)
    bad_503 = sum(1 for r in mine if r.status == 503 and r.retry_after is None)
    failures = [r for r in mine if r.status is None or r.status >= 300]
    return {
        "requests": len(mine),
        "non_2xx": dict(non_2xx),
        "errors": dict(errors),
        "failed": len(failures),
        "503_without_retry_after": bad_503,
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "served_by": dict(Counter(r.served_by or "-" for r in mine)),
        "first_failure_at": min((r.at for r in failures), default=None),
        "last_failure_at": max((r.at + r.latency_s for r in failures), default=None),
    }
