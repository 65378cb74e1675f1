"""What the items API accepts and returns."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service.core.request_bodies import RequestBody

Title = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Description = Annotated[str, StringConstraints(max_length=255)]


class ItemCreate(RequestBody):
    """The owner is the caller: an item cannot be created for someone else or with chosen ids."""

    refused_fields = frozenset({"id", "owner_id", "created_at"})

    title: Title
    description: Description | None = None


class ItemUpdate(RequestBody):
    """Only title and description change; id, owner_id and created_at are ignored, as the
    template's "Edit item" sends the whole item back."""

    title: Title | None = None
    description: Description | None = None


class ItemPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str
    description: str | None = None
    owner_id: uuid.UUID
    created_at: datetime | None = None


class ItemsPublic(BaseModel):
    data: list[ItemPublic]
    count: int
    next_cursor: str | None = Field(
        default=None,
        description="Pass as `cursor` for the page after this one; null on the last page",
    )
