"""The auth tables: refresh tokens, password-reset tokens and login-throttle counters.

Tokens are stored only as SHA-256 digests: a copy of these tables lets nobody sign in.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, DateTime, ForeignKey, Index, Integer, String, Uuid, func, text
from sqlmodel import Field, SQLModel

from service.core.tables import utcnow

# A SHA-256 digest in hex.
DIGEST_LENGTH = 64


def _user_fk() -> Column[uuid.UUID]:
    return Column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)


def _created_at() -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=False, server_default=func.now())


class RefreshToken(SQLModel, table=True):
    """One opaque refresh token. Every use rotates it: the row gets `rotated_at` and
    `replaced_by`, and a new row of the same family is the only usable token. A rotated token
    presented again means two parties hold the family, so the whole family is revoked."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (
        # "Revoke this user's tokens" (logout, password change).
        Index("ix_refresh_tokens_user_id", "user_id"),
        # "Revoke this family" (reuse detected).
        Index("ix_refresh_tokens_family_id", "family_id"),
        # Purging expired tokens.
        Index("ix_refresh_tokens_expires_at", "expires_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(sa_column=_user_fk())
    family_id: uuid.UUID = Field(sa_column=Column(Uuid, nullable=False))
    token_hash: str = Field(sa_column=Column(String(DIGEST_LENGTH), nullable=False, unique=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_created_at())
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    rotated_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    replaced_by: uuid.UUID | None = Field(default=None, sa_column=Column(Uuid, nullable=True))
    revoked_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    # users.credentials_generation when the family was signed into; a successor copies it. A
    # token whose generation is not the user's current one is refused.
    credentials_generation: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )


@dataclass(frozen=True, slots=True)
class RefreshTokenRow:
    """A refresh_tokens row as a refresh reads it (locked): never its digest."""

    id: uuid.UUID
    user_id: uuid.UUID
    family_id: uuid.UUID
    credentials_generation: int
    expires_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None


class PasswordResetToken(SQLModel, table=True):
    """A single-use password-reset token; `used_at` is set when it is spent or cancelled."""

    __tablename__ = "password_reset_tokens"
    __table_args__ = (
        Index("ix_password_reset_tokens_user_id", "user_id"),
        Index("ix_password_reset_tokens_expires_at", "expires_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(sa_column=_user_fk())
    token_hash: str = Field(sa_column=Column(String(DIGEST_LENGTH), nullable=False, unique=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_created_at())
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    used_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


@dataclass(frozen=True, slots=True)
class ResetTokenRow:
    """A password_reset_tokens row as a reset reads it (locked): never its digest."""

    id: uuid.UUID
    user_id: uuid.UUID
    expires_at: datetime
    used_at: datetime | None


class LoginThrottle(SQLModel, table=True):
    """Failed-login counter of one fixed window, per account (`scope` "account", `key` the
    SHA-256 of the normalised email) or per client network (`scope` "ip", `key` the address, or
    the /64 of an IPv6 client). Every replica updates the same row with one atomic upsert."""

    __tablename__ = "login_throttle"
    __table_args__ = (
        # Purging windows that ended.
        Index("ix_login_throttle_window_started_at", "window_started_at"),
    )

    scope: str = Field(sa_column=Column(String(16), primary_key=True, nullable=False))
    key: str = Field(sa_column=Column(String(DIGEST_LENGTH), primary_key=True, nullable=False))
    failures: int = Field(sa_column=Column(Integer, nullable=False))
    window_started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
