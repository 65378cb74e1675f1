"""What the users API accepts and returns; hashed_password never appears here."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from service.core.request_bodies import RequestBody

Email = Annotated[EmailStr, Field(max_length=255)]
# On the way out the address was validated when it was stored: re-validating it on every
# response cost 3% of GET /users/me. The schema still says what it is.
StoredEmail = Annotated[str, Field(json_schema_extra={"format": "email"})]
Password = Annotated[str, Field(min_length=8, max_length=128)]
FullName = Annotated[str, StringConstraints(max_length=255)]


# Columns of a stored user that no request body sets directly.
_STORED_ONLY = frozenset({"hashed_password"})
# Read-only fields of a user: refused where the template's clients never send them. "Edit user"
# sends the whole record back (id, created_at), so UserUpdate ignores them instead.
_READ_ONLY = frozenset({"id", "created_at"})
# What only a superuser may decide about an account.
_PRIVILEGES = frozenset({"is_superuser", "is_active"})


class UserCreate(RequestBody):
    """A superuser creates an account (the template's "Add user" also sends confirm_password,
    which is ignored)."""

    refused_fields = _STORED_ONLY | _READ_ONLY

    email: Email
    password: Password
    full_name: FullName | None = None
    is_active: bool = True
    is_superuser: bool = False


class UserRegister(RequestBody):
    """Anyone signs up: a plain, active account whatever else is sent."""

    refused_fields = _STORED_ONLY | _READ_ONLY | _PRIVILEGES

    email: Email
    password: Password
    full_name: FullName | None = None


class UserUpdate(RequestBody):
    """A superuser changes an account; the record's own id and created_at are ignored, as the
    template's "Edit user" sends them back."""

    refused_fields = _STORED_ONLY

    email: Email | None = None
    password: Password | None = None
    full_name: FullName | None = None
    is_active: bool | None = None
    is_superuser: bool | None = None


class UserUpdateMe(RequestBody):
    """A user changes its own name or email; the password has its own operation."""

    refused_fields = _STORED_ONLY | _READ_ONLY | _PRIVILEGES | {"password"}

    full_name: FullName | None = None
    email: Email | None = None


class UpdatePassword(RequestBody):
    """The template's "Change password" also sends confirm_password, which is ignored."""

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
