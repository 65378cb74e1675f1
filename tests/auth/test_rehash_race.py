"""A login that re-hashes an outdated password hash never overwrites a password change that
committed while its argon2 ran (the re-hash is stored only over the hash it verified).

Forced: a second connection changes the hash and holds its transaction open, the login reads the
old hash, verifies it, and queues its re-hash on the row; then the change commits.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from service.core.security import PasswordHashing
from tests.auth.live import LOGIN, Live, live_app, own_database_fixture
from tests.conftest import USER_PASSWORD, make_settings, problem

NEW_PASSWORD = "changed-password-1"


database = own_database_fixture("keelson_rehash")


async def hash_with(database: str, password: str, **argon2: int) -> str:
    hashing = PasswordHashing(make_settings(database, **argon2))
    try:
        return await hashing.hash(password)
    finally:
        hashing.close()


async def test_a_rehash_does_not_undo_a_concurrent_password_change(database: str) -> None:
    async with live_app(database) as live:
        await rehash_races_a_change(live, database)


async def rehash_races_a_change(live: Live, database: str) -> None:
    old_hash = await hash_with(database, USER_PASSWORD, argon2_time_cost=2, argon2_memory_kib=2048)
    user = await live.user()
    async with live.db.engine.begin() as connection:
        await connection.execute(
            text("UPDATE users SET hashed_password = :h WHERE id = :id"),
            {"h": old_hash, "id": user.id},
        )
    changed_hash = await live.app.state.passwords.hash(NEW_PASSWORD)
    async with live.holding(
        "UPDATE users SET hashed_password = :h WHERE id = :id", h=changed_hash, id=user.id
    ) as change:
        logging_in = asyncio.create_task(
            live.client.post(LOGIN, data={"username": user.email, "password": USER_PASSWORD})
        )
        await live.wait_for_lock_waiters(1, "UPDATE users")
        await change.commit()
    assert (await logging_in).status_code == 200  # its password was right when it was checked

    stored = await live.scalar("SELECT hashed_password FROM users WHERE id = :id", id=user.id)
    assert stored == changed_hash
    await live.login(user.email, NEW_PASSWORD)
    old = await live.client.post(LOGIN, data={"username": user.email, "password": USER_PASSWORD})
    assert problem(old, 400)["detail"] == "Incorrect email or password"
