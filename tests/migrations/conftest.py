"""Fixtures for the migration tests: a database of its own, stopped at a chosen revision."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from alembic import command

from service.core.migrations import alembic_config
from tests.support.postgres import create_database, drop_database


@pytest.fixture
async def database_at_0003(pg_server_url: str) -> AsyncIterator[str]:
    """Migrated to 0003, one step behind 0004, whose `LOCK TABLE items` the lock tests block."""
    url = await create_database(pg_server_url, "keelson_at_0003")
    await asyncio.to_thread(command.upgrade, alembic_config(url), "0003")
    yield url
    await drop_database(pg_server_url, url)
