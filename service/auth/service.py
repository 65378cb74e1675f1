"""Login (throttled), refresh-token rotation, logout, and password recovery rules.

Every login path that is not throttled costs one argon2 verification, whether or not the email
exists, so response time does not reveal which emails are registered. A throttled attempt costs
no argon2 at all: that work is what a password-guessing flood would otherwise buy.
"""

from __future__ import annotations

import math
import secrets
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import structlog
from sqlmodel.ext.asyncio.session import AsyncSession

from service.auth import emails, repository
from service.core import metrics
from service.core.config import Settings
from service.core.digests import sha256_hex as digest  # stored instead of a token
from service.core.errors import BadRequest, Unauthorized
from service.core.mailer import Mailer
from service.core.rate_limits import Quota, RateLimited
from service.core.security import PasswordHashing, TokenCodec
from service.core.tables import utcnow
from service.users import repository as users
from service.users.models import UserAccount, UserRecord, normalize_email
from service.users.schemas import UpdatePassword
from service.users.service import own_account

MAX_PASSWORD_LENGTH = 128
MAX_EMAIL_LENGTH = 255
OPAQUE_TOKEN_BYTES = 32  # 256 random bits: a stored digest needs no salt or slow hash
# Unspent reset links a user may have at once; more requests are answered but send nothing,
# so nobody can flood someone's mailbox through /password-recovery.
MAX_LIVE_RESET_TOKENS = 3
PURGE_BATCH = 100  # expired rows removed per request that purges: bounded work per request

log = structlog.get_logger(__name__)


class LoginOutcome(StrEnum):
    SUCCESS = "success"
    BAD_PASSWORD = "bad_password"  # noqa: S105 - an outcome label, not a password
    UNKNOWN_USER = "unknown_user"
    INACTIVE = "inactive"
    THROTTLED = "throttled"


class ThrottleScope(StrEnum):
    ACCOUNT = "account"
    IP = "ip"


class LoginFailed(BadRequest):
    def __init__(self, outcome: LoginOutcome, detail: str = "Incorrect email or password") -> None:
        super().__init__(detail)
        self.outcome = outcome


class LoginThrottled(RateLimited):
    keeps_writes = True  # the attempt stays counted: that is what throttles the next one

    def __init__(self, quotas: list[Quota]) -> None:
        super().__init__("Too many failed login attempts; try again later", quotas)


class PasswordCheckThrottled(RateLimited):
    keeps_writes = True

    def __init__(self, quotas: list[Quota]) -> None:
        super().__init__("Too many failed password attempts; try again later", quotas)


class IncorrectPassword(BadRequest):
    def __init__(self) -> None:
        super().__init__("Incorrect password")


class SamePassword(BadRequest):
    def __init__(self) -> None:
        super().__init__("New password cannot be the same as the current one")


class InvalidResetToken(BadRequest):
    def __init__(self) -> None:
        super().__init__("Invalid token")


class InvalidRefreshToken(Unauthorized):
    def __init__(self) -> None:
        super().__init__("Invalid refresh token")


class RefreshTokenReused(InvalidRefreshToken):
    """The same answer as any invalid token; the family's revocation is committed with it."""

    keeps_writes = True


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int  # seconds the access token lives


def new_opaque_token() -> str:
    return secrets.token_urlsafe(OPAQUE_TOKEN_BYTES)


async def find_user_by_email(
    session: AsyncSession, email: str, *, lock: bool = False
) -> UserAccount | None:
    """None for an email no account can have (too long, or a NUL that PostgreSQL would refuse),
    so the auth endpoints answer it exactly like an unknown email."""
    if len(email) > MAX_EMAIL_LENGTH or "\x00" in email:
        return None
    return await users.get_account_by_email(session, email, lock=lock)


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """A counted login attempt and the account its email names (None: no such account)."""

    email: str
    client: str
    user: UserAccount | None


@dataclass(frozen=True, slots=True)
class VerifiedLogin:
    user: UserAccount
    new_hash: str | None  # the password re-hashed under changed argon2 parameters


async def begin_login(
    session: AsyncSession, settings: Settings, *, email: str, client: str
) -> LoginAttempt:
    """Count the attempt (LoginThrottled once over a limit) and find the account. The caller
    commits this before the password is checked: see `verify_login`."""
    await count_login_attempt(session, settings, email, client)
    return LoginAttempt(email=email, client=client, user=await find_user_by_email(session, email))


async def verify_login(
    passwords: PasswordHashing, attempt: LoginAttempt, password: str
) -> VerifiedLogin:
    """The argon2 step, on no database connection: the caller runs it between two transactions,
    so a login flood cannot drain the pool (measured: 25 of 32 logins 503 before)."""
    user = attempt.user
    if len(password) > MAX_PASSWORD_LENGTH:
        # No stored password can be this long; skip the hash but keep the same answer.
        raise LoginFailed(LoginOutcome.UNKNOWN_USER if user is None else LoginOutcome.BAD_PASSWORD)
    if user is None:
        await passwords.verify_dummy(password)
        raise LoginFailed(LoginOutcome.UNKNOWN_USER)
    check = await passwords.verify(user.hashed_password, password)
    if not check.valid:
        raise LoginFailed(LoginOutcome.BAD_PASSWORD)
    if not user.is_active:
        raise LoginFailed(LoginOutcome.INACTIVE, "Inactive user")
    return VerifiedLogin(user=user, new_hash=check.new_hash)


async def finish_login(
    session: AsyncSession,
    tokens: TokenCodec,
    settings: Settings,
    attempt: LoginAttempt,
    verified: VerifiedLogin,
) -> IssuedTokens:
    user = verified.user
    if verified.new_hash is not None:  # argon2 parameters changed since this hash was made
        # Only over the hash just verified: a password change that committed while argon2 ran
        # must not be overwritten by a re-hash of the old password.
        await users.replace_password(session, user.id, user.hashed_password, verified.new_hash)
    await forget_login_attempt(session, attempt.email, attempt.client)
    await repository.purge_expired_refresh_tokens(session, utcnow(), PURGE_BATCH)
    # The generation read before argon2: a password change committed meanwhile makes this
    # session one that started under the old password, and it dies with the others.
    return await issue_tokens(session, tokens, settings, user)


# -- login throttling


def account_key(email: str) -> str:
    """Counters are per normalised email (the same normalisation as the stored address),
    existing or not, so they reveal no accounts."""
    return digest(normalize_email(email))


def _limits(settings: Settings) -> dict[str, int]:
    return {
        ThrottleScope.ACCOUNT: settings.login_max_failures_per_account,
        ThrottleScope.IP: settings.login_max_failures_per_ip,
    }


def _quotas(counts: list[repository.ThrottleCount], settings: Settings) -> list[Quota]:
    window_s = settings.login_throttle_window_s
    limits = _limits(settings)
    quotas = []
    for count in sorted(counts, key=lambda c: c.scope):
        ends = count.window_started_at + timedelta(seconds=window_s)
        reset_s = max(1, math.ceil((ends - count.now).total_seconds()))
        limit = limits[count.scope]
        quotas.append(
            Quota(
                name=f"login-{count.scope}",
                limit=limit,
                window_s=window_s,
                remaining=max(0, limit - count.failures),
                reset_s=reset_s,
            )
        )
    return quotas


async def count_login_attempt(
    session: AsyncSession, settings: Settings, email: str, client: str
) -> None:
    """Count this attempt for the account and the client network; the caller commits it before
    any password is checked, so a failure stays counted and every replica sees it at once.
    Raises LoginThrottled (which keeps the count), with no argon2 work done, once either count
    passes its limit."""
    window = timedelta(seconds=settings.login_throttle_window_s)
    await repository.purge_ended_windows(session, window, PURGE_BATCH)
    counts = await repository.count_attempt(
        session, [(ThrottleScope.ACCOUNT, account_key(email)), (ThrottleScope.IP, client)], window
    )
    limits = _limits(settings)
    over = [c.scope for c in counts if c.failures > limits[c.scope]]
    if over:
        log.warning("login_throttled", scopes=sorted(over), client=client)
        raise LoginThrottled(_quotas(counts, settings))


async def count_password_check(session: AsyncSession, settings: Settings, email: str) -> None:
    """A current-password check (PATCH /users/me/password) is a guess like a login: it counts on
    the account's login counter (the caller commits it before argon2 runs), and raises
    PasswordCheckThrottled (which keeps the count),
    with no argon2 work done, once the account is over its limit. The caller is authenticated,
    so the client network is not counted: only that account's own budget is spent."""
    window = timedelta(seconds=settings.login_throttle_window_s)
    counts = await repository.count_attempt(
        session, [(ThrottleScope.ACCOUNT, account_key(email))], window
    )
    if counts[0].failures > settings.login_max_failures_per_account:
        log.warning("password_check_throttled", scopes=[ThrottleScope.ACCOUNT.value])
        raise PasswordCheckThrottled(_quotas(counts, settings))


async def forget_account_failures(session: AsyncSession, email: str) -> None:
    """The owner proved the password (or the mailbox): the account's counter starts afresh."""
    await repository.reset_counter(session, ThrottleScope.ACCOUNT, account_key(email))


async def forget_login_attempt(session: AsyncSession, email: str, client: str) -> None:
    """After a successful login: the account starts afresh, the client's attempt is taken back."""
    await repository.reset_counter(session, ThrottleScope.ACCOUNT, account_key(email))
    await repository.forget_attempt(session, ThrottleScope.IP, client)


# -- refresh tokens


async def _add_refresh_token(
    session: AsyncSession,
    settings: Settings,
    user_id: uuid.UUID,
    family_id: uuid.UUID,
    generation: int,
    now: datetime,
) -> tuple[uuid.UUID, str]:
    """The new token's id, and the token (only its digest is stored)."""
    token = new_opaque_token()
    token_id = await repository.add_refresh_token(
        session,
        user_id=user_id,
        family_id=family_id,
        credentials_generation=generation,
        token_hash=digest(token),
        created_at=now,
        expires_at=now + timedelta(days=settings.refresh_token_expire_days),
    )
    return token_id, token


def _pair(tokens: TokenCodec, user_id: uuid.UUID, refresh_token: str) -> IssuedTokens:
    return IssuedTokens(
        access_token=tokens.create_access_token(user_id),
        refresh_token=refresh_token,
        expires_in=int(tokens.access_ttl.total_seconds()),
    )


async def issue_tokens(
    session: AsyncSession, tokens: TokenCodec, settings: Settings, user: UserAccount
) -> IssuedTokens:
    """A new access token and the first refresh token of a new family (a new sign-in), under the
    user's credentials generation as `user` was read."""
    _, refresh_token = await _add_refresh_token(
        session, settings, user.id, uuid.uuid4(), user.credentials_generation, utcnow()
    )
    return _pair(tokens, user.id, refresh_token)


async def refresh(
    session: AsyncSession, tokens: TokenCodec, settings: Settings, presented: str
) -> IssuedTokens:
    """Trade a refresh token for a new pair; the presented token is spent.

    Presenting a token that was already rotated means it was copied: the legitimate client and
    someone else both hold the family. Neither can be told apart, so the whole family is revoked
    (RefreshTokenReused keeps its writes: the revocation is committed before the 401).

    A token of an older credentials generation than the user's is refused. The user row is read
    without a lock: a revocation committing after this read leaves the successor with the old
    generation, so it is refused on its first use (a user-row lock in both paths would instead
    order them, at the cost of a lock on every refresh and a lock order to keep everywhere).
    """
    now = utcnow()
    current = await repository.lock_refresh_token(session, digest(presented))
    if current is None:
        raise InvalidRefreshToken
    if current.rotated_at is not None:
        revoked = await repository.revoke_family(session, current.family_id, now)
        metrics.REFRESH_TOKEN_REUSE.inc()
        log.warning(
            "refresh_token_reuse",
            user_id=str(current.user_id),
            family_id=str(current.family_id),
            revoked=revoked,
        )
        raise RefreshTokenReused
    if current.revoked_at is not None or current.expires_at <= now:
        raise InvalidRefreshToken
    user = await users.get_account(session, current.user_id)
    if user is None or not user.is_active:
        raise InvalidRefreshToken
    if current.credentials_generation != user.credentials_generation:
        raise InvalidRefreshToken
    successor, refresh_token = await _add_refresh_token(
        session, settings, user.id, current.family_id, current.credentials_generation, now
    )
    await repository.mark_rotated(session, current.id, successor, now)
    return _pair(tokens, user.id, refresh_token)


async def end_sessions(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> int:
    """No refresh token issued before this (committed) point ever refreshes again: the new
    generation refuses them all, including a successor a racing refresh inserts after the
    UPDATE below took its snapshot; the UPDATE marks the rows it sees, for the record."""
    await users.bump_credentials_generation(session, user_id)
    return await repository.revoke_user_refresh_tokens(session, user_id, now)


async def logout(session: AsyncSession, user: UserRecord) -> int:
    """Sign the user out everywhere: every refresh token of the user is revoked."""
    return await end_sessions(session, user.id, utcnow())


async def revoke_credentials(session: AsyncSession, user_id: uuid.UUID) -> None:
    """After a password change, a reset or a deactivation: no refresh token and no reset link
    issued before it works, in the same transaction as the change itself."""
    now = utcnow()
    await end_sessions(session, user_id, now)
    await repository.spend_user_reset_tokens(session, user_id, now)


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    """A counted current-password check: the hash it is checked against, as read."""

    user_id: uuid.UUID
    email: str
    current_hash: str


async def begin_password_change(
    session: AsyncSession, settings: Settings, me: UserRecord
) -> PasswordCheck:
    """PATCH /users/me/password, first transaction: checking the current password is a guess
    like a login, so it is counted on the account's login throttle (429 once over the limit,
    with no argon2 work). The caller commits it and holds no connection while argon2 runs
    (measured before: 40 concurrent wrong attempts made another user's GET /items/ answer 503)."""
    user = await own_account(session, me)
    await count_password_check(session, settings, user.email)
    return PasswordCheck(user_id=user.id, email=user.email, current_hash=user.hashed_password)


async def new_password_hash(
    passwords: PasswordHashing, check: PasswordCheck, data: UpdatePassword
) -> str:
    """The argon2 step, on no database connection: verify the current password, hash the new."""
    verified = await passwords.verify(check.current_hash, data.current_password)
    if not verified.valid:
        raise IncorrectPassword
    if data.current_password == data.new_password:
        raise SamePassword
    return await passwords.hash(data.new_password)


async def finish_password_change(
    session: AsyncSession, check: PasswordCheck, new_hash: str
) -> None:
    """Second transaction: the new hash is stored only if the old one is still the stored one."""
    if not await users.replace_password(session, check.user_id, check.current_hash, new_hash):
        raise IncorrectPassword  # changed (or deleted) while argon2 ran: the check is void
    await revoke_credentials(session, check.user_id)
    await forget_account_failures(session, check.email)


# -- password recovery


async def issue_reset_token(session: AsyncSession, settings: Settings, user_id: uuid.UUID) -> str:
    now = utcnow()
    token = new_opaque_token()
    await repository.add_reset_token(
        session,
        user_id=user_id,
        token_hash=digest(token),
        created_at=now,
        expires_at=now + timedelta(hours=settings.email_reset_token_expire_hours),
    )
    return token


async def request_password_reset(
    session: AsyncSession, settings: Settings, email: str
) -> tuple[UserAccount, str] | None:
    """The user and a fresh reset token to mail, or None (unknown, inactive, or enough links
    already out); the caller answers the same in every case.

    The user row is locked first, so concurrent requests for one user count and insert one at a
    time and the cap holds (before: ten concurrent requests left ten live links and sent ten
    mails, tests/auth/test_reset_link_race.py)."""
    user = await find_user_by_email(session, email, lock=True)
    if user is None or not user.is_active:
        return None
    now = utcnow()
    await repository.purge_expired_reset_tokens(session, now, PURGE_BATCH)
    if await repository.count_live_reset_tokens(session, user.id, now) >= MAX_LIVE_RESET_TOKENS:
        log.info("password_reset_suppressed", user_id=str(user.id), reason="too_many_live_links")
        return None
    return user, await issue_reset_token(session, settings, user.id)


async def send_reset_link(
    transaction: Callable[[], AbstractAsyncContextManager[AsyncSession]],
    mailer: Mailer,
    settings: Settings,
    email: str,
) -> None:
    """The whole recovery request, run after the response (in `transaction()`, which commits
    when it ends): the request itself does the same (nothing) for every email, so neither its
    answer nor its timing says whether one exists."""
    try:
        async with transaction() as session:
            requested = await request_password_reset(session, settings, email)
    except Exception:
        log.exception("password_reset_failed")
        return
    if requested is not None:
        user, token = requested
        await mailer.send_in_background(emails.reset_password_email(settings, user.email, token))


async def reset_password(
    session: AsyncSession, passwords: PasswordHashing, token: str, new_password: str
) -> None:
    """Spend a reset token: it works once, before it expires, and only while the account is
    active. Every other reset link and every refresh token of the user dies with it, and the
    account's failed-login count starts afresh (the owner proved control of the mailbox)."""
    stored = await repository.lock_reset_token(session, digest(token))
    if stored is None or stored.used_at is not None or stored.expires_at <= utcnow():
        raise InvalidResetToken
    user = await users.get_user_record(session, stored.user_id)
    if user is None:
        raise InvalidResetToken
    if not user.is_active:
        raise BadRequest("Inactive user")
    # The account stays: deleting it would delete the reset token this transaction has locked.
    await users.save_user(session, user.id, {"hashed_password": await passwords.hash(new_password)})
    await revoke_credentials(session, user.id)
    await forget_account_failures(session, user.email)
