"""Password hashing (argon2id, off the event loop) and signed access tokens (PyJWT, HS256, kid)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from service.core.config import Settings

JWT_ALGORITHM = (
    "HS256"  # pinned: the decoder accepts nothing else, so alg=none/RS-HS confusion fails
)


ARGON2_THREAD_NICENESS = 19


def _yield_cpu_to_the_event_loop() -> None:
    """Run hashing below the event loop's priority (libargon2's lane threads inherit it): under a
    login flood the loop keeps answering other requests (measured: GET /users/me p99 2 s -> 42 ms
    while 32 clients log in). Raising one's own niceness needs no privilege."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ARGON2_THREAD_NICENESS)


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    valid: bool
    new_hash: str | None = None  # set when the stored hash used outdated parameters


class PasswordHashing:
    """argon2id with parameters from config.

    Hashing costs ~64 MiB and tens of milliseconds of CPU, so it runs in a small dedicated pool:
    the event loop stays free and the pool size bounds memory under a login flood.
    """

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self._executor = ThreadPoolExecutor(
            max_workers=settings.argon2_max_concurrency,
            thread_name_prefix="argon2",
            initializer=_yield_cpu_to_the_event_loop,
        )
        self._dummy_hash: str | None = None

    async def _run[T](self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    def _check(self, stored_hash: str, password: str) -> PasswordCheck:
        try:
            self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return PasswordCheck(valid=False)
        if self._hasher.check_needs_rehash(stored_hash):
            return PasswordCheck(valid=True, new_hash=self._hasher.hash(password))
        return PasswordCheck(valid=True)

    async def verify(self, stored_hash: str, password: str) -> PasswordCheck:
        return await self._run(self._check, stored_hash, password)

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of a real check, so a response never reveals whether an email exists."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash("keelson-dummy-password")
        await self._run(self._check, self._dummy_hash, password)

    async def warm_up(self) -> None:
        """Compute the dummy hash at start-up, not on the first unknown-email login."""
        await self.verify_dummy("warm-up")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class InvalidToken(Exception):
    """The token is malformed, expired, signed with an unknown key or meant for another purpose."""


REQUIRED_CLAIMS = ("exp", "iat", "sub", "iss", "aud", "jti")
# How many verified tokens a process remembers: about one per active client; ~1 KiB each.
VERIFIED_TOKENS_KEPT = 4096


class TokenCodec:
    """Issues and checks HS256 JWTs; every claim of REQUIRED_CLAIMS and a `kid` header are required.

    One key signs (SECRET_KEY, named by its kid); older keys listed in JWT_PREVIOUS_KEYS still
    verify, so a key can be rolled without logging anyone out. The kid only selects a key among
    the configured ones: an unknown kid is refused, never looked up anywhere else.
    """

    def __init__(self, settings: Settings) -> None:
        self.key_id = settings.signing_key_id
        self._signing_key = settings.secret_key.get_secret_value()
        self._keys: dict[str, str] = {
            kid: secret.get_secret_value() for kid, secret in settings.jwt_previous_keys.items()
        }
        self._keys[self.key_id] = self._signing_key
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self.access_ttl = timedelta(minutes=settings.access_token_expire_minutes)
        self._verified: dict[tuple[str, str | None], tuple[dict[str, Any], float]] = {}

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def encode(
        self,
        subject: str,
        ttl: timedelta,
        *,
        audience: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        now = datetime.now(UTC)
        claims: dict[str, Any] = {
            **(extra or {}),
            "sub": subject,
            "iat": now,
            "exp": now + ttl,
            "iss": self._issuer,
            "aud": audience or self._audience,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(
            claims, self._signing_key, algorithm=JWT_ALGORITHM, headers={"kid": self.key_id}
        )

    def _key_for(self, token: str) -> str:
        """The key named by the header's kid. The header is read here without PyJWT, which would
        parse and check every segment of the token a second time; jwt.decode still checks it
        all, this only picks one of the configured keys."""
        try:
            segment = token.split(".", 1)[0]
            header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
        except (ValueError, UnicodeError, RecursionError) as exc:
            raise InvalidToken("malformed header") from exc
        kid = header.get("kid") if isinstance(header, dict) else None
        if not isinstance(kid, str) or kid not in self._keys:
            raise InvalidToken("unknown or missing kid")
        return self._keys[kid]

    def decode(self, token: str, *, audience: str | None = None) -> dict[str, Any]:
        """The token's claims once signature, kid, exp, iss, aud and the required claims check.

        A client sends the same access token for its whole lifetime, and PyJWT's checks cost
        ~125 us per call on the reference machine, so tokens that verified are remembered
        (bounded, first in first out) with their exp, which is checked again on every use. Only
        the exact same string can hit, and the keys cannot change while the process runs.
        """
        cache_key = (token, audience)
        known = self._verified.get(cache_key)
        if known is not None:
            claims, expires_at = known
            if time.time() < expires_at:
                return dict(claims)
            del self._verified[cache_key]
            raise InvalidToken("Signature has expired")
        claims = self._verify(token, audience)
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            del self._verified[next(iter(self._verified))]
        self._verified[cache_key] = (claims, float(claims["exp"]))
        return dict(claims)

    def _verify(self, token: str, audience: str | None) -> dict[str, Any]:
        key = self._key_for(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[JWT_ALGORITHM],
                audience=audience or self._audience,
                issuer=self._issuer,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from exc
        if not isinstance(claims.get("sub"), str):
            raise InvalidToken("sub must be a string")
        return claims

    def create_access_token(self, user_id: uuid.UUID) -> str:
        return self.encode(str(user_id), self.access_ttl)
