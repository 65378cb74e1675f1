"""What the login and recovery endpoints accept and return."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from service.core.request_bodies import RequestBody


class Token(BaseModel):
    """The template's `{access_token, token_type}`, plus the refresh token and the access
    token's lifetime in seconds (RFC 6749 section 5.1 names)."""

    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    refresh_token: str
    expires_in: int


class RefreshRequest(RequestBody):
    refresh_token: Annotated[str, Field(min_length=1, max_length=256)]


class NewPassword(RequestBody):
    """The template's reset form sends `{new_password, token}`; anything else is ignored."""

    token: Annotated[str, Field(min_length=1, max_length=2048)]
    new_password: Annotated[str, Field(min_length=8, max_length=128)]
