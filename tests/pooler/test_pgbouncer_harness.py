"""The suite's PgBouncer keeps serving however much it logs (issue 15: it froze on a full pipe)."""

from __future__ import annotations

import time

import asyncpg

from tests.support.pgbouncer import PgBouncer

PIPE_CAPACITY_BYTES = 65536  # Linux's default pipe buffer, which used to hold PgBouncer's stderr


async def test_pgbouncer_keeps_serving_after_logging_more_than_a_pipe_holds(
    pg_server_url: str,
) -> None:
    with PgBouncer(pg_server_url, pool_size=2) as bouncer:
        dsn = bouncer.url("postgres").replace("postgresql+asyncpg", "postgresql")
        started = time.monotonic()
        answered = 0
        # Each login and logout logs two lines (~280 bytes): 600 of them log ~2.5 pipes' worth.
        # Before the fix the pooler blocked writing to its unread stderr after ~230 and every
        # later connect timed out.
        for n in range(600):
            connection = await asyncpg.connect(dsn, statement_cache_size=0, timeout=2)
            try:
                assert await connection.fetchval("SELECT $1::int", n, timeout=2) == n
            finally:
                await connection.close(timeout=2)
            answered += 1
        logged = len(bouncer.log().encode())
        assert bouncer.process is not None
        assert bouncer.process.poll() is None
    assert answered == 600
    assert logged > 2 * PIPE_CAPACITY_BYTES, logged
    assert time.monotonic() - started < 30
