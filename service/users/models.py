"""The users table."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, DateTime, Index, func, text
from sqlmodel import Field, SQLModel

from service.core.tables import utcnow


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (
        # Emails are unique regardless of case; lookups use lower(email) and hit this index.
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


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A users row as read to authorize a request: what the API may show, no password hash,
    not tracked by the ORM (building a tracked User cost more than the query itself). Endpoints
    that change the user load a User for that."""

    id: uuid.UUID
    email: str
    full_name: str | None
    is_active: bool
    is_superuser: bool
    created_at: datetime
