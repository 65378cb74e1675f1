"""The idempotency_keys table: one row per (user, Idempotency-Key), holding the first answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, ForeignKey, Index, Integer, String, Uuid, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

# A SHA-256 digest in hex.
FINGERPRINT_LENGTH = 64


class IdempotencyKey(SQLModel, table=True):
    """While `expires_at` is in the future, the key belongs to the request that stored this row.

    `response_status`/`response_body` are written in the same transaction as the work itself, so a
    committed row always carries the answer; other transactions never see it half done.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        # Purging expired keys is one index range scan.
        Index("ix_idempotency_keys_expires_at", "expires_at"),
    )

    user_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, nullable=False
        )
    )
    key: str = Field(sa_column=Column(String(255), primary_key=True, nullable=False))
    request_fingerprint: str = Field(sa_column=Column(String(FINGERPRINT_LENGTH), nullable=False))
    response_status: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    # none_as_null: a Python None is SQL NULL ("no answer yet"), never the JSON value null.
    response_body: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSONB(none_as_null=True), nullable=True)
    )
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
