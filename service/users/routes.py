"""HTTP routes for /users (template-compatible)."""

from __future__ import annotations

import uuid

from fastapi import BackgroundTasks, Response

from service.auth import service as auth
from service.auth.deps import CurrentUser, SuperUser
from service.auth.emails import new_account_email
from service.core.deps import (
    Limit,
    MailerDep,
    PasswordsDep,
    ReadSession,
    SettingsDep,
    Skip,
    Transactions,
    WriteSession,
)
from service.core.responses import model_response
from service.core.routing import api_router
from service.core.schemas import Message, problem_responses
from service.users import service
from service.users.schemas import (
    UpdatePassword,
    UserCreate,
    UserPublic,
    UserRegister,
    UsersPublic,
    UserUpdate,
    UserUpdateMe,
)

router = api_router(prefix="/users", tags=["users"])

# Answers that carry account data: never stored by a browser or a proxy (paths under /api/v1).
NO_STORE_PATHS = frozenset({"/users/me", "/users/me/password", "/users/signup"})


@router.get("/", response_model=UsersPublic)
async def read_users(
    session: ReadSession, _: SuperUser, skip: Skip = 0, limit: Limit = 100
) -> UsersPublic:
    users, count = await service.list_users(session, skip=skip, limit=limit)
    return UsersPublic(data=[UserPublic.model_validate(u) for u in users], count=count)


@router.post("/", response_model=UserPublic)
async def create_user(
    session: WriteSession,
    passwords: PasswordsDep,
    _: SuperUser,
    body: UserCreate,
    settings: SettingsDep,
    mailer: MailerDep,
    background: BackgroundTasks,
) -> UserPublic:
    user = await service.create_user(session, passwords, body)
    if mailer.enabled:  # after the response, and only once the new row is committed
        background.add_task(mailer.send_in_background, new_account_email(settings, user.email))
    return UserPublic.model_validate(user)


@router.get("/me", response_model=UserPublic)
async def read_user_me(user: CurrentUser) -> Response:
    return model_response(UserPublic.model_validate(user))


@router.delete("/me", response_model=Message)
async def delete_user_me(session: WriteSession, user: CurrentUser) -> Message:
    await service.delete_me(session, user)
    return Message(message="User deleted successfully")


@router.patch("/me", response_model=UserPublic)
async def update_user_me(
    session: WriteSession, user: CurrentUser, body: UserUpdateMe
) -> UserPublic:
    return UserPublic.model_validate(await service.update_me(session, user, body))


@router.patch("/me/password", response_model=Message, responses=problem_responses(429))
async def update_password_me(
    transactions: Transactions,
    passwords: PasswordsDep,
    settings: SettingsDep,
    user: CurrentUser,
    body: UpdatePassword,
) -> Message:
    """Two transactions around argon2, as a login: the check is counted and committed first."""
    async with transactions.write() as session:
        check = await auth.begin_password_change(session, settings, user)
    new_hash = await auth.new_password_hash(passwords, check, body)
    async with transactions.write() as session:
        await auth.finish_password_change(session, check, new_hash)
    return Message(message="Password updated successfully")


@router.post("/signup", response_model=UserPublic)
async def register_user(
    session: WriteSession, passwords: PasswordsDep, body: UserRegister
) -> UserPublic:
    """No mail, as in the template: the person signing up just chose the password. The new-account
    mail is for an account a superuser made for someone (POST /users/)."""
    return UserPublic.model_validate(await service.create_user(session, passwords, body))


@router.get("/{user_id}", response_model=UserPublic)
async def read_user_by_id(
    session: ReadSession, user: CurrentUser, user_id: uuid.UUID
) -> UserPublic:
    return UserPublic.model_validate(await service.get_visible_user(session, user, user_id))


@router.patch("/{user_id}", response_model=UserPublic)
async def update_user(
    session: WriteSession,
    passwords: PasswordsDep,
    actor: SuperUser,
    user_id: uuid.UUID,
    body: UserUpdate,
) -> UserPublic:
    updated = await service.update_user(session, passwords, actor, user_id, body)
    if updated.ends_sessions:
        await auth.revoke_credentials(session, user_id)
    return UserPublic.model_validate(updated.user)


@router.delete("/{user_id}", response_model=Message)
async def delete_user(session: WriteSession, actor: SuperUser, user_id: uuid.UUID) -> Message:
    await service.delete_user(session, actor, user_id)
    return Message(message="User deleted successfully")
