"""HTTP routes for /utils (template-compatible)."""

from __future__ import annotations

from typing import Annotated

import aiosmtplib
from fastapi import Query
from pydantic import EmailStr

from service.auth.deps import SuperUser
from service.auth.emails import test_email as build_test_email
from service.core.deps import MailerDep, SettingsDep
from service.core.errors import ServiceUnavailable
from service.core.routing import api_router
from service.core.schemas import Message

router = api_router(prefix="/utils", tags=["utils"])


@router.post("/test-email/", status_code=201, response_model=Message)
async def test_email(
    _: SuperUser,
    settings: SettingsDep,
    mailer: MailerDep,
    email_to: Annotated[EmailStr, Query(max_length=255)],
) -> Message:
    if not mailer.enabled:
        raise ServiceUnavailable("Email is not configured (set SMTP_HOST)")
    try:
        await mailer.send(build_test_email(settings, email_to))
    except (aiosmtplib.SMTPException, OSError):
        raise ServiceUnavailable("The SMTP server did not accept the message") from None
    return Message(message="Test email sent")


@router.get("/health-check/")
async def health_check() -> bool:
    return True
