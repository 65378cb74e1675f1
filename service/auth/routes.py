"""HTTP routes for login and password recovery (template-compatible)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Request
from fastapi.responses import HTMLResponse
from fastapi.security import OAuth2PasswordRequestForm

from service.api.deps import (
    CurrentUser,
    MailerDep,
    PasswordsDep,
    SessionDep,
    SettingsDep,
    SuperUser,
    TokensDep,
)
from service.auth import emails, service
from service.auth.schemas import NewPassword, Token
from service.core import metrics
from service.core.errors import NotFound
from service.core.routing import StrictJSONRoute
from service.core.schemas import Message
from service.users.schemas import UserPublic

router = APIRouter(tags=["login"], route_class=StrictJSONRoute)

EmailPath = Annotated[str, Path(min_length=3, max_length=255)]


@router.post("/login/access-token", response_model=Token)
async def login_access_token(
    request: Request,
    session: SessionDep,
    passwords: PasswordsDep,
    tokens: TokensDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Token:
    try:
        user = await service.authenticate(session, passwords, form.username, form.password)
    except service.LoginFailed as failure:
        metrics.LOGIN_ATTEMPTS.labels(failure.outcome.value).inc()
        raise
    metrics.LOGIN_ATTEMPTS.labels(service.LoginOutcome.SUCCESS.value).inc()
    return Token(access_token=tokens.create_access_token(user.id))


@router.post("/login/test-token", response_model=UserPublic)
async def test_token(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)


@router.post("/password-recovery/{email}", response_model=Message)
async def recover_password(
    email: EmailPath,
    session: SessionDep,
    tokens: TokensDep,
    settings: SettingsDep,
    mailer: MailerDep,
    background: BackgroundTasks,
) -> Message:
    """The same answer, sent as fast, whether or not the email exists; the mail goes out after."""
    user = await service.find_user_by_email(session, email)
    if user is not None and user.is_active:
        token = service.create_reset_token(tokens, user)
        background.add_task(
            mailer.send_in_background, emails.reset_password_email(settings, user.email, token)
        )
    return Message(message="If that email is registered, we sent a password recovery link")


@router.post("/reset-password/", response_model=Message)
async def reset_password(
    session: SessionDep, passwords: PasswordsDep, tokens: TokensDep, body: NewPassword
) -> Message:
    await service.reset_password(session, passwords, tokens, body.token, body.new_password)
    return Message(message="Password updated successfully")


@router.post("/password-recovery-html-content/{email}", response_class=HTMLResponse)
async def recover_password_html_content(
    email: EmailPath, session: SessionDep, tokens: TokensDep, settings: SettingsDep, _: SuperUser
) -> HTMLResponse:
    user = await service.find_user_by_email(session, email)
    if user is None:
        raise NotFound("The user with this email does not exist in the system")
    message = emails.reset_password_email(
        settings, user.email, service.create_reset_token(tokens, user)
    )
    return HTMLResponse(content=message.html, headers={"subject": message.subject})
