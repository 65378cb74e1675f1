"""The items table."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Column, DateTime, ForeignKey, Index, Uuid, func
from sqlmodel import Field, SQLModel

from service.core.tables import utcnow


class Item(SQLModel, table=True):
    __tablename__ = "items"
    __table_args__ = (
        # "My items, newest first" (and keyset pages through them) is one index range scan.
        Index("ix_items_owner_id_created_at_id", "owner_id", "created_at", "id"),
        # A superuser's "all items, newest first".
        Index("ix_items_created_at_id", "created_at", "id"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    title: str = Field(max_length=255)
    description: str | None = Field(default=None, max_length=255)
    owner_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    )
    created_at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
