"""The items table, and the per-owner item counters PostgreSQL triggers keep exact."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TypedDict

from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, Index, SmallInteger, Uuid, func
from sqlmodel import Field, SQLModel

from service.core.tables import utcnow

# The counter scope of "all items" (a superuser's view); every other scope is an owner's id.
ALL_ITEMS_SCOPE = uuid.UUID(int=0)


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


class ItemCounter(SQLModel, table=True):
    """How many items a scope holds: the sum of `n` over its shards.

    A writer adds to shard pg_backend_pid() % 16, so concurrent transactions creating items for
    one owner rarely wait on each other's row lock. Written only by the triggers of migration
    0004, in the transaction of each write to items, so every path (the API, plain SQL, ON
    DELETE CASCADE from users) keeps it exact. No foreign key on `scope`: the all-items scope
    (ALL_ITEMS_SCOPE) is no user.
    """

    __tablename__ = "item_counters"

    scope: uuid.UUID = Field(sa_column=Column(Uuid, primary_key=True))
    shard: int = Field(sa_column=Column(SmallInteger, primary_key=True))
    n: int = Field(sa_column=Column(BigInteger, nullable=False))


class ItemRow(TypedDict):
    """The one shape of an item outside the table class: as every query returns it and the API
    shows it (schemas.ItemPublic), ids in their text form (what the JSON carries)."""

    id: str
    title: str
    description: str | None
    owner_id: str
    created_at: datetime
