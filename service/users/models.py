"""The users table, and the one normalisation of an email into the identity it stands for."""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, DateTime, Index, Integer, func, text
from sqlmodel import Field, SQLModel

from service.core.tables import utcnow


def normalize_email(email: str) -> str:
    """The identity an address stands for, and the form `users.email` stores: NFC, then Unicode
    casefold, then NFC again (casefolding can undo composition). Done here and nowhere else:
    PostgreSQL's lower() depends on the database's collation (under C it lowers ASCII only), so
    it cannot be what decides that `Élodie@` and `élodie@` are one account."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", email.strip()).casefold())


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (
        # Stored emails are normalize_email() forms, so this index makes identities unique. It
        # stays on lower(email) rather than email: code of revision 0004 (a rollback) upserts
        # with ON CONFLICT (lower(email)), and lower() of a normalised address is itself.
        Index("uq_users_email_lower", func.lower(text("email")), unique=True),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    email: str = Field(max_length=255)
    hashed_password: str = Field(max_length=255)
    full_name: str | None = Field(default=None, max_length=255)
    is_active: bool = Field(default=True)
    is_superuser: bool = Field(default=False)
    created_at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    # Bumped by every event that must end the user's sessions (password change or reset, logout,
    # deactivation). Each refresh token carries the generation it was issued under, and only a
    # token of the current generation refreshes: a revocation cannot miss a token issued by a
    # refresh racing it, whatever the interleaving (docs/security.md, "Revocation").
    credentials_generation: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A users row as the API may show it, and as read to authorize a request: no password
    hash, no ORM object (building a tracked User cost more than the query itself)."""

    id: uuid.UUID
    email: str
    full_name: str | None
    is_active: bool
    is_superuser: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UserAccount(UserRecord):
    """A users row with its credentials, as the account's own rules read it (login, a password
    check, a refresh, a reset). The only row type that carries the password hash; answers are
    built from the UserRecord fields alone (`UserPublic` has no field for the rest)."""

    hashed_password: str
    credentials_generation: int

    def public(self) -> UserRecord:
        """The same row without its credentials."""
        return UserRecord(
            id=self.id,
            email=self.email,
            full_name=self.full_name,
            is_active=self.is_active,
            is_superuser=self.is_superuser,
            created_at=self.created_at,
        )
