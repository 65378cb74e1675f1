"""The unknown-email login pays for one real argon2 verify, at the configured parameters.

tests/auth/test_login.py shows the dummy verify is *called*; these show it *costs* what a real
check costs, which is what hides whether an email has an account (a dummy that skipped argon2
would answer an unknown email in microseconds instead of tens of milliseconds).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import VerifyMismatchError
from fastapi import FastAPI

from service.core.security import PasswordHashing
from tests.conftest import FAST_TEST_SETTINGS, make_settings, problem

LOGIN = "/api/v1/login/access-token"


@dataclass
class Argon2Call:
    hash: str
    mismatch: bool
    cpu_s: float


def record_argon2_verifies(monkeypatch: pytest.MonkeyPatch, app: FastAPI) -> list[Argon2Call]:
    """Every argon2 verify the app's hasher runs, observed around the real call (still made)."""
    hasher: PasswordHasher = app.state.passwords._hasher
    real_verify = PasswordHasher.verify
    calls: list[Argon2Call] = []

    def verify(self: PasswordHasher, hash: str | bytes, password: str | bytes) -> Any:
        if self is not hasher:
            return real_verify(self, hash, password)
        started = time.thread_time()  # this worker thread's CPU: the hashing itself, not waiting
        try:
            result = real_verify(self, hash, password)
        except VerifyMismatchError:
            calls.append(Argon2Call(str(hash), True, time.thread_time() - started))
            raise
        calls.append(Argon2Call(str(hash), False, time.thread_time() - started))
        return result

    # PasswordHasher has __slots__: the method is replaced on the class, for this instance only.
    monkeypatch.setattr(PasswordHasher, "verify", verify)
    return calls


def assert_configured_argon2id(encoded: str) -> None:
    parameters = extract_parameters(encoded)
    assert parameters.type is Type.ID
    assert parameters.memory_cost == FAST_TEST_SETTINGS["argon2_memory_kib"]
    assert parameters.time_cost == FAST_TEST_SETTINGS["argon2_time_cost"]
    assert parameters.parallelism == FAST_TEST_SETTINGS["argon2_parallelism"]


async def test_unknown_email_runs_one_real_argon2_verify_at_the_configured_cost(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    await app.state.passwords.warm_up()  # the dummy hash exists before we start counting
    calls = record_argon2_verifies(monkeypatch, app)
    response = await client.post(
        LOGIN, data={"username": "nobody@example.com", "password": "some-password-1"}
    )
    assert problem(response, 400)["detail"] == "Incorrect email or password"
    [call] = calls
    assert_configured_argon2id(call.hash)
    assert call.mismatch  # argon2 really derived the key and compared it
    assert call.cpu_s > 0


async def test_unknown_and_known_email_each_run_one_argon2_verify_of_the_same_parameters(
    client: httpx.AsyncClient, app: FastAPI, user: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    await app.state.passwords.warm_up()
    calls = record_argon2_verifies(monkeypatch, app)
    for username in ("nobody@example.com", "alice@example.com"):
        response = await client.post(
            LOGIN, data={"username": username, "password": "wrong-password-1"}
        )
        problem(response, 400)
    unknown, known = calls
    assert extract_parameters(unknown.hash) == extract_parameters(known.hash)
    assert unknown.mismatch
    assert known.mismatch


async def test_dummy_verify_takes_as_long_as_a_real_verify(database_url: str) -> None:
    """Timed at OWASP's argon2id minimum (19 MiB, t=2): the dummy costs what a real check does.

    Interleaved and compared by median so that load from other processes hits both alike.
    """
    settings = make_settings(
        database_url, argon2_memory_kib=19456, argon2_time_cost=2, argon2_parallelism=1
    )
    passwords = PasswordHashing(settings)
    try:
        await passwords.warm_up()
        real_hash = await passwords.hash("a-real-password-1")
        dummy_s, real_s = [], []
        for _ in range(5):
            started = time.perf_counter()
            await passwords.verify_dummy("wrong-password-1")
            dummy_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            check = await passwords.verify(real_hash, "wrong-password-1")
            real_s.append(time.perf_counter() - started)
            assert not check.valid
    finally:
        passwords.close()
    dummy, real = statistics.median(dummy_s), statistics.median(real_s)
    assert real > 0.005, f"a real verify took {real * 1000:.1f} ms: the parameters did not apply"
    assert 0.5 < dummy / real < 2.0, f"dummy {dummy * 1000:.1f} ms vs real {real * 1000:.1f} ms"
