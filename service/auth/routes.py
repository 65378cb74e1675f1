"""HTTP routes for login, token refresh, logout and password recovery (template-compatible)."""

from __future__ import annotations

from typing import Annotated

from fastapi import BackgroundTasks, Depends, Path
from fastapi.responses import HTMLResponse
from fastapi.security import OAuth2PasswordRequestForm

from service.auth import emails, service
from service.auth.deps import CurrentUser, SuperUser
from service.auth.schemas import NewPassword, RefreshRequest, Token
from service.core import metrics
from service.core.deps import (
    ClientDep,
    DatabaseDep,
    MailerDep,
    PasswordsDep,
    SettingsDep,
    TokensDep,
    Transactions,
    WriteSession,
)
from service.core.errors import NotFound
from service.core.routing import api_router
from service.core.schemas import Message, problem_responses
from service.users.schemas import UserPublic

router = api_router(tags=["login"])

EmailPath = Annotated[str, Path(min_length=3, max_length=255)]

# Answers that carry credentials: never stored by a browser or a proxy (paths under /api/v1).
NO_STORE_PATHS = frozenset(
    {
        "/login/access-token",
        "/login/refresh",
        "/login/test-token",
        "/logout",
        "/password-recovery/{email}",
        "/reset-password/",
        "/password-recovery-html-content/{email}",
    }
)


def _token(issued: service.IssuedTokens) -> Token:
    return Token(
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_in=issued.expires_in,
    )


@router.post("/login/access-token", response_model=Token, responses=problem_responses(429))
async def login_access_token(
    transactions: Transactions,
    passwords: PasswordsDep,
    tokens: TokensDep,
    settings: SettingsDep,
    client: ClientDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Token:
    """Two transactions around argon2: the attempt is counted and committed before the password
    is checked, and no connection is held while it is."""
    try:
        async with transactions.write() as session:
            attempt = await service.begin_login(
                session, settings, email=form.username, client=client
            )
        verified = await service.verify_login(passwords, attempt, form.password)
        async with transactions.write() as session:
            issued = await service.finish_login(session, tokens, settings, attempt, verified)
    except service.LoginThrottled:
        metrics.LOGIN_ATTEMPTS.labels(service.LoginOutcome.THROTTLED.value).inc()
        raise
    except service.LoginFailed as failure:
        metrics.LOGIN_ATTEMPTS.labels(failure.outcome.value).inc()
        raise
    metrics.LOGIN_ATTEMPTS.labels(service.LoginOutcome.SUCCESS.value).inc()
    return _token(issued)


@router.post("/login/refresh", response_model=Token)
async def refresh_access_token(
    session: WriteSession, tokens: TokensDep, settings: SettingsDep, body: RefreshRequest
) -> Token:
    """Rotate: the presented refresh token is spent and a new pair comes back."""
    return _token(await service.refresh(session, tokens, settings, body.refresh_token))


@router.post("/logout", response_model=Message)
async def logout(session: WriteSession, user: CurrentUser) -> Message:
    """Sign out everywhere: every refresh token of the user is revoked. Access tokens already
    issued stay valid until they expire (ACCESS_TOKEN_EXPIRE_MINUTES)."""
    await service.logout(session, user)
    return Message(message="Logged out")


@router.post("/login/test-token", response_model=UserPublic)
async def test_token(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)


@router.post("/password-recovery/{email}", response_model=Message)
async def recover_password(
    email: EmailPath,
    database: DatabaseDep,
    settings: SettingsDep,
    mailer: MailerDep,
    background: BackgroundTasks,
) -> Message:
    """The same answer after the same work (none) for every email: the lookup, the token and the
    mail all happen after the response."""
    background.add_task(service.send_reset_link, database.write, mailer, settings, email)
    return Message(message="If that email is registered, we sent a password recovery link")


@router.post("/reset-password/", response_model=Message)
async def reset_password(
    session: WriteSession, passwords: PasswordsDep, body: NewPassword
) -> Message:
    await service.reset_password(session, passwords, body.token, body.new_password)
    return Message(message="Password updated successfully")


@router.post("/password-recovery-html-content/{email}", response_class=HTMLResponse)
async def recover_password_html_content(
    email: EmailPath, session: WriteSession, settings: SettingsDep, _: SuperUser
) -> HTMLResponse:
    user = await service.find_user_by_email(session, email)
    if user is None:
        raise NotFound("The user with this email does not exist in the system")
    token = await service.issue_reset_token(session, settings, user.id)
    message = emails.reset_password_email(settings, user.email, token)
    return HTMLResponse(content=message.html, headers={"subject": message.subject})
