"""What the users API accepts and returns; hashed_password never appears here."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

Email = Annotated[EmailStr, Field(max_length=255)]
# On the way out the address was validated when it was stored: re-validating it on every
# response cost 3% of GET /users/me. The schema still says what it is.
StoredEmail = Annotated[str, Field(json_schema_extra={"format": "email"})]
Password = Annotated[str, Field(min_length=8, max_length=128)]
FullName = Annotated[str, StringConstraints(max_length=255)]


class _Input(BaseModel):
    """Request bodies reject unknown fields (a typo or a smuggled `is_superuser` is a 422) and
    coerce nothing (`"is_superuser": 0` is a 422, not False)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class UserCreate(_Input):
    email: Email
    password: Password
    full_name: FullName | None = None
    is_active: bool = True
    is_superuser: bool = False


class UserRegister(_Input):
    email: Email
    password: Password
    full_name: FullName | None = None


class UserUpdate(_Input):
    email: Email | None = None
    password: Password | None = None
    full_name: FullName | None = None
    is_active: bool | None = None
    is_superuser: bool | None = None


class UserUpdateMe(_Input):
    full_name: FullName | None = None
    email: Email | None = None


class UpdatePassword(_Input):
    current_password: Password
    new_password: Password


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: StoredEmail
    is_active: bool = True
    is_superuser: bool = False
    full_name: str | None = None
    created_at: datetime | None = None


class UsersPublic(BaseModel):
    data: list[UserPublic]
    count: int
