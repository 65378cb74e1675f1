"""What the items API accepts and returns."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Title = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Description = Annotated[str, StringConstraints(max_length=255)]


class ItemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    title: Title
    description: Description | None = None


class ItemUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

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
