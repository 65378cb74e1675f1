"""Rules about accounts: who may see, change and delete which user."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlmodel.ext.asyncio.session import AsyncSession

from service.core.errors import Conflict, Forbidden, NotEnoughPrivileges, NotFound
from service.core.security import PasswordHashing
from service.users import repository
from service.users.models import UserAccount, UserRecord
from service.users.schemas import (
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


class SuperuserSelfDelete(Forbidden):
    def __init__(self) -> None:
        super().__init__("Super users are not allowed to delete themselves")


class SuperuserSelfDemotion(Forbidden):
    def __init__(self) -> None:
        super().__init__("Super users are not allowed to demote or deactivate themselves")


class LastSuperuser(Conflict):
    def __init__(self) -> None:
        super().__init__("This would leave no active superuser; promote another one first")


@dataclass(frozen=True, slots=True)
class UserUpdated:
    user: UserRecord
    # A new password ends every session the old one opened; deactivation ends them all, so
    # reactivating the account brings none of them (nor a reset link) back. Credentials are
    # auth's (auth may use users, never the reverse), so the route ends them, in the same
    # transaction, right after this change.
    ends_sessions: bool


async def create_user(
    session: AsyncSession, passwords: PasswordHashing, data: UserCreate | UserRegister
) -> UserRecord:
    """A signup (UserRegister) is a plain, active account; a superuser decides both flags."""
    flags = (
        {"is_active": data.is_active, "is_superuser": data.is_superuser}
        if isinstance(data, UserCreate)
        else {}
    )
    account = repository.new_account(
        email=data.email,
        hashed_password=await passwords.hash(data.password),
        full_name=data.full_name,
        **flags,
    )
    if not await repository.add_user(session, account):
        raise EmailAlreadyRegistered
    return account.public()


async def list_users(
    session: AsyncSession, *, skip: int, limit: int
) -> tuple[list[UserRecord], int]:
    return await repository.list_users(session, skip=skip, limit=limit)


async def get_visible_user(
    session: AsyncSession, viewer: UserRecord, user_id: uuid.UUID
) -> UserRecord:
    """A user sees itself; only a superuser sees others (and learns whether they exist)."""
    if user_id == viewer.id:
        return viewer
    if not viewer.is_superuser:
        raise NotEnoughPrivileges
    user = await repository.get_user_record(session, user_id)
    if user is None:
        raise UserNotFound
    return user


async def _save(
    session: AsyncSession, user_id: uuid.UUID, changes: dict[str, object]
) -> UserRecord:
    try:
        saved = await repository.save_user(session, user_id, changes)
    except repository.EmailTaken:
        raise EmailAlreadyRegistered from None
    if saved is None:  # deleted since it was read
        raise UserNotFound
    return saved


def _changes(data: UserUpdate | UserUpdateMe) -> dict[str, object]:
    """Fields the client sent. A null for a required column means "leave it" (as in the template);
    full_name is optional, so a null clears it."""
    sent = data.model_dump(exclude_unset=True, exclude={"password"})
    return {k: v for k, v in sent.items() if v is not None or k == "full_name"}


async def own_account(session: AsyncSession, me: UserRecord) -> UserAccount:
    """The caller's row with its credentials (the request authenticated with a UserRecord,
    which has none). Gone since then: 404, as for any user that does not exist."""
    user = await repository.get_account(session, me.id)
    if user is None:
        raise UserNotFound
    return user


async def update_me(session: AsyncSession, me: UserRecord, data: UserUpdateMe) -> UserRecord:
    """Gone since the request authenticated: 404, as for any user that does not exist."""
    return await _save(session, me.id, _changes(data))


def _removes_a_superuser(user: UserRecord, changes: dict[str, object]) -> bool:
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
) -> UserUpdated:
    changes = _changes(data)
    if user_id == actor.id and (
        changes.get("is_superuser") is False or changes.get("is_active") is False
    ):
        raise SuperuserSelfDemotion
    demoting = changes.get("is_superuser") is False or changes.get("is_active") is False
    if demoting:  # the lock before the read: the row and the count are both read under it
        await repository.lock_superusers(session)
    user = await repository.get_user_record(session, user_id)
    if user is None:
        raise UserNotFound
    if _removes_a_superuser(user, changes):
        await _keep_a_superuser(session, user.id)
    deactivating = user.is_active and changes.get("is_active") is False
    if data.password is not None:
        changes["hashed_password"] = await passwords.hash(data.password)
    saved = await _save(session, user.id, changes)
    return UserUpdated(saved, ends_sessions=data.password is not None or deactivating)


async def delete_me(session: AsyncSession, user: UserRecord) -> None:
    if user.is_superuser:
        raise SuperuserSelfDelete
    await repository.delete_user(session, user.id)


async def delete_user(session: AsyncSession, actor: UserRecord, user_id: uuid.UUID) -> None:
    if user_id == actor.id:
        raise SuperuserSelfDelete
    await repository.lock_superusers(session)
    user = await repository.get_user_record(session, user_id)
    if user is None:
        raise UserNotFound
    if user.is_superuser and user.is_active:
        await _keep_a_superuser(session, user.id)
    await repository.delete_user(session, user_id)
