"""Rules about accounts: who may see, change and delete which user."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlmodel.ext.asyncio.session import AsyncSession

from service.auth.service import count_password_check, forget_account_failures, revoke_credentials
from service.core.config import Settings
from service.core.errors import BadRequest, Conflict, Forbidden, NotFound
from service.core.security import PasswordHashing
from service.users import repository
from service.users.models import User, UserRecord
from service.users.schemas import (
    UpdatePassword,
    UserCreate,
    UserRegister,
    UserUpdate,
    UserUpdateMe,
)


class EmailAlreadyRegistered(Conflict):
    def __init__(self) -> None:
        super().__init__("The user with this email already exists in the system")


class UserNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("The user with this id does not exist in the system")


class NotEnoughPrivileges(Forbidden):
    def __init__(self) -> None:
        super().__init__("The user doesn't have enough privileges")


class SuperuserSelfDelete(Forbidden):
    def __init__(self) -> None:
        super().__init__("Super users are not allowed to delete themselves")


class SuperuserSelfDemotion(Forbidden):
    def __init__(self) -> None:
        super().__init__("Super users are not allowed to demote or deactivate themselves")


class LastSuperuser(Conflict):
    def __init__(self) -> None:
        super().__init__("This would leave no active superuser; promote another one first")


class IncorrectPassword(BadRequest):
    def __init__(self) -> None:
        super().__init__("Incorrect password")


class SamePassword(BadRequest):
    def __init__(self) -> None:
        super().__init__("New password cannot be the same as the current one")


async def _insert(session: AsyncSession, user: User) -> User:
    try:
        return await repository.add_user(session, user)
    except repository.EmailTaken:
        raise EmailAlreadyRegistered from None


async def create_user(
    session: AsyncSession, passwords: PasswordHashing, data: UserCreate | UserRegister
) -> User:
    fields = data.model_dump(exclude={"password"})
    user = User(**fields, hashed_password=await passwords.hash(data.password))
    return await _insert(session, user)


async def list_users(session: AsyncSession, *, skip: int, limit: int) -> tuple[Sequence[User], int]:
    return await repository.list_users(session, skip=skip, limit=limit)


async def get_visible_user(
    session: AsyncSession, viewer: UserRecord, user_id: uuid.UUID
) -> User | UserRecord:
    """A user sees itself; only a superuser sees others (and learns whether they exist)."""
    if user_id == viewer.id:
        return viewer
    if not viewer.is_superuser:
        raise NotEnoughPrivileges
    user = await repository.get_user(session, user_id)
    if user is None:
        raise UserNotFound
    return user


async def _save(session: AsyncSession, user: User, changes: dict[str, object]) -> User:
    try:
        return await repository.save_user(session, user, changes)
    except repository.EmailTaken:
        raise EmailAlreadyRegistered from None


def _changes(data: UserUpdate | UserUpdateMe) -> dict[str, object]:
    """Fields the client sent. A null for a required column means "leave it" (as in the template);
    full_name is optional, so a null clears it."""
    sent = data.model_dump(exclude_unset=True, exclude={"password"})
    return {k: v for k, v in sent.items() if v is not None or k == "full_name"}


async def _own_account(session: AsyncSession, me: UserRecord) -> User:
    """The caller's row as a tracked User, to change it (the request authenticated with a
    read-only UserRecord). Gone since then: 404, as for any user that does not exist."""
    user = await repository.get_user(session, me.id)
    if user is None:
        raise UserNotFound
    return user


async def update_me(session: AsyncSession, me: UserRecord, data: UserUpdateMe) -> User:
    return await _save(session, await _own_account(session, me), _changes(data))


async def change_my_password(
    session: AsyncSession,
    passwords: PasswordHashing,
    settings: Settings,
    me: UserRecord,
    data: UpdatePassword,
) -> None:
    """Checking the current password is a guess like a login, so it is counted on the account's
    login throttle first (429 once over the limit, with no argon2 work), and no database
    connection is held while argon2 runs (measured before: 40 concurrent wrong attempts made
    another user's GET /items/ answer 503). The new hash is stored only if the old one is still
    the stored one."""
    user = await _own_account(session, me)
    current_hash, email = user.hashed_password, user.email
    await count_password_check(session, settings, email)  # commits: the connection goes back
    check = await passwords.verify(current_hash, data.current_password)
    if not check.valid:
        raise IncorrectPassword
    if data.current_password == data.new_password:
        raise SamePassword
    new_hash = await passwords.hash(data.new_password)
    if not await repository.replace_password(session, user.id, current_hash, new_hash):
        raise IncorrectPassword  # changed (or deleted) while argon2 ran: the check is void
    await revoke_credentials(session, user.id)
    await forget_account_failures(session, email)


def _removes_a_superuser(user: User, changes: dict[str, object]) -> bool:
    return (
        user.is_superuser
        and user.is_active
        and (changes.get("is_superuser") is False or changes.get("is_active") is False)
    )


async def _keep_a_superuser(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Called under repository.lock_superusers: refuse to remove the last active superuser."""
    if await repository.count_other_active_superusers(session, user_id) == 0:
        raise LastSuperuser


async def update_user(
    session: AsyncSession,
    passwords: PasswordHashing,
    actor: UserRecord,
    user_id: uuid.UUID,
    data: UserUpdate,
) -> User:
    changes = _changes(data)
    if user_id == actor.id and (
        changes.get("is_superuser") is False or changes.get("is_active") is False
    ):
        raise SuperuserSelfDemotion
    demoting = changes.get("is_superuser") is False or changes.get("is_active") is False
    if demoting:  # the lock before the read: the row and the count are both read under it
        await repository.lock_superusers(session)
    user = await repository.get_user(session, user_id)
    if user is None:
        raise UserNotFound
    if _removes_a_superuser(user, changes):
        await _keep_a_superuser(session, user.id)
    deactivating = user.is_active and changes.get("is_active") is False
    if data.password is not None:
        changes["hashed_password"] = await passwords.hash(data.password)
    saved = await _save(session, user, changes)
    # A new password ends every session the old one opened; deactivation ends them all, so
    # reactivating the account brings none of them (nor a reset link) back.
    if data.password is not None or deactivating:
        await revoke_credentials(session, user.id)
    return saved


async def delete_me(session: AsyncSession, user: UserRecord) -> None:
    if user.is_superuser:
        raise SuperuserSelfDelete
    await repository.delete_user(session, user.id)


async def delete_user(session: AsyncSession, actor: UserRecord, user_id: uuid.UUID) -> None:
    if user_id == actor.id:
        raise SuperuserSelfDelete
    await repository.lock_superusers(session)
    user = await repository.get_user(session, user_id)
    if user is None:
        raise UserNotFound
    if user.is_superuser and user.is_active:
        await _keep_a_superuser(session, user.id)
    await repository.delete_user(session, user_id)
