"""Concurrent recovery requests for one user cannot raise the number of live reset links (and
mails) past MAX_LIVE_RESET_TOKENS: issuance is serialised on the user's row.

The race is forced: the user's row is held FOR UPDATE from a second connection, which stops
every request before it inserts a link (the insert's foreign-key check needs a KEY SHARE lock on
that row) and, with the fix, before it counts the live links; then the row is released.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.auth.service import MAX_LIVE_RESET_TOKENS
from tests.auth.live import Live, live_app, own_database_fixture
from tests.support.smtp import SmtpServer

REQUESTS = 10
SAME_ANSWER = {"message": "If that email is registered, we sent a password recovery link"}


database = own_database_fixture("keelson_resetcap")


@pytest.fixture
async def live(database: str, smtp_server: SmtpServer) -> AsyncIterator[Live]:
    # A connection per request, one for the lock holder and one to watch pg_stat_activity.
    async with live_app(database, db_pool_size=REQUESTS + 2, **smtp_server.settings()) as live:
        yield live


async def test_concurrent_recovery_requests_keep_the_live_link_cap(
    live: Live, smtp_server: SmtpServer
) -> None:
    user = await live.user("cap@example.com")
    async with live.holding("SELECT id FROM users WHERE id = :id FOR UPDATE", id=user.id):
        requests = asyncio.gather(
            *(live.client.post(f"/api/v1/password-recovery/{user.email}") for _ in range(REQUESTS))
        )
        # Old code queues on the insert, fixed code on its lock of the row: both are "waiting".
        await live.wait_for_lock_waiters(
            REQUESTS, "SELECT users", "INSERT INTO password_reset_tokens"
        )
    answers = await requests  # each answer returns once its background work (and mail) is done

    assert [(r.status_code, r.json()) for r in answers] == [(200, SAME_ANSWER)] * REQUESTS
    live_links = await live.scalar(
        "SELECT count(*) FROM password_reset_tokens WHERE user_id = :id AND used_at IS NULL"
        " AND expires_at > now()",
        id=user.id,
    )
    assert live_links == MAX_LIVE_RESET_TOKENS
    assert [m.rcpt_tos for m in smtp_server.received] == [[user.email]] * MAX_LIVE_RESET_TOKENS
