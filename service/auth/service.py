"""Login and password recovery rules.

Every login path costs one argon2 verification, whether or not the email exists, so response time
does not reveal which emails are registered.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from enum import StrEnum

from sqlmodel.ext.asyncio.session import AsyncSession

from service.core.errors import BadRequest
from service.core.security import InvalidToken, PasswordHashing, TokenCodec
from service.users import repository
from service.users.models import User

RESET_AUDIENCE = "keelson-password-reset"
MAX_PASSWORD_LENGTH = 128
MAX_EMAIL_LENGTH = 255


class LoginOutcome(StrEnum):
    SUCCESS = "success"
    BAD_PASSWORD = "bad_password"  # noqa: S105 - an outcome label, not a password
    UNKNOWN_USER = "unknown_user"
    INACTIVE = "inactive"


class LoginFailed(BadRequest):
    def __init__(self, outcome: LoginOutcome, detail: str = "Incorrect email or password") -> None:
        super().__init__(detail)
        self.outcome = outcome


class InvalidResetToken(BadRequest):
    def __init__(self) -> None:
        super().__init__("Invalid token")


async def find_user_by_email(session: AsyncSession, email: str) -> User | None:
    """None for an email no account can have (too long, or a NUL that PostgreSQL would refuse),
    so the auth endpoints answer it exactly like an unknown email."""
    if len(email) > MAX_EMAIL_LENGTH or "\x00" in email:
        return None
    return await repository.get_user_by_email(session, email)


async def authenticate(
    session: AsyncSession, passwords: PasswordHashing, email: str, password: str
) -> User:
    user = await find_user_by_email(session, email)
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
    if check.new_hash is not None:  # argon2 parameters changed since this hash was made
        await repository.save_user(session, user, {"hashed_password": check.new_hash})
    return user


def _password_fingerprint(hashed_password: str) -> str:
    """Bound into reset tokens: once the password changes, every earlier token stops working."""
    return hashlib.sha256(hashed_password.encode()).hexdigest()[:32]


def create_reset_token(tokens: TokenCodec, user: User) -> str:
    return tokens.encode(
        str(user.id),
        tokens.reset_ttl,
        audience=RESET_AUDIENCE,
        extra={"pwh": _password_fingerprint(user.hashed_password)},
    )


async def reset_password(
    session: AsyncSession,
    passwords: PasswordHashing,
    tokens: TokenCodec,
    token: str,
    new_password: str,
) -> None:
    try:
        claims = tokens.decode(token, audience=RESET_AUDIENCE)
        user_id = uuid.UUID(claims["sub"])
    except (InvalidToken, ValueError):
        raise InvalidResetToken from None
    user = await repository.get_user(session, user_id)
    if user is None or not hmac.compare_digest(
        str(claims.get("pwh", "")), _password_fingerprint(user.hashed_password)
    ):
        raise InvalidResetToken
    if not user.is_active:
        raise BadRequest("Inactive user")
    await repository.save_user(
        session, user, {"hashed_password": await passwords.hash(new_password)}
    )
