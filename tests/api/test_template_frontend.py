"""The template frontend's own request bodies, sent to every operation it calls, get its answers.

The bodies are the ones `fastapi/full-stack-fastapi-template`'s React frontend builds
(frontend/src/components/**, frontend/src/routes/**, hooks/useAuth.ts), in both of its form
generations: the react-hook-form/Chakra forms, which send the form's extra fields
(`confirm_password`) and, when editing, the whole record they were opened with; and the later
forms, which strip `confirm_password` and send only what changed. Its backend ignores fields it
does not declare, so each of these is a 200 there, and must be here too.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.items.models import Item
from service.users.models import User
from tests.conftest import SUPERUSER_EMAIL, SUPERUSER_PASSWORD, USER_PASSWORD, bearer
from tests.support.smtp import SmtpServer, reset_token_in

API = "/api/v1"
USER_PUBLIC = {"id", "email", "is_active", "is_superuser", "full_name", "created_at"}
ITEM_PUBLIC = {"id", "title", "description", "owner_id", "created_at"}
NEW_PASSWORD = "changed-password-1"


async def stored_user(session: AsyncSession, email: str) -> User | None:
    result = await session.exec(
        select(User).where(User.email == email).execution_options(populate_existing=True)
    )
    return result.first()


async def stored_item(session: AsyncSession, item_id: str) -> Item | None:
    result = await session.exec(
        select(Item)
        .where(col(Item.id) == uuid.UUID(item_id))
        .execution_options(populate_existing=True)
    )
    return result.first()


async def logs_in(client: httpx.AsyncClient, email: str, password: str) -> bool:
    # routes/login.tsx -> LoginService.loginAccessToken({formData: {username, password}})
    response = await client.post(
        f"{API}/login/access-token", data={"username": email, "password": password}
    )
    return response.status_code == 200


def user_answer(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == USER_PUBLIC
    return body


# -- login, signup, own account -----------------------------------------------------------------


async def test_login_form_then_read_me(client: httpx.AsyncClient, superuser: User) -> None:
    # hooks/useAuth.ts: login form, then UsersService.readUserMe with the token
    login = await client.post(
        f"{API}/login/access-token",
        data={"username": SUPERUSER_EMAIL, "password": SUPERUSER_PASSWORD},
    )
    assert login.status_code == 200, login.text
    token = login.json()
    assert token["token_type"] == "bearer"
    me = await client.get(
        f"{API}/users/me", headers={"Authorization": f"Bearer {token['access_token']}"}
    )
    assert user_answer(me)["email"] == SUPERUSER_EMAIL


async def test_signup_form_with_confirm_password(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    # routes/signup.tsx (react-hook-form): the whole form, confirm_password included
    body = {
        "email": "signup@example.com",
        "full_name": "Sign Up",
        "password": "signup-password-1",
        "confirm_password": "signup-password-1",
    }
    answer = user_answer(await client.post(f"{API}/users/signup", json=body))
    assert (answer["email"], answer["full_name"]) == ("signup@example.com", "Sign Up")
    assert (answer["is_active"], answer["is_superuser"]) == (True, False)
    stored = await stored_user(session, "signup@example.com")
    assert stored is not None
    assert (stored.is_active, stored.is_superuser, stored.full_name) == (True, False, "Sign Up")
    assert await logs_in(client, "signup@example.com", "signup-password-1")


async def test_signup_form_without_confirm_password(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    # routes/signup.tsx (later forms): confirm_password stripped before the call
    body = {"email": "later@example.com", "full_name": "", "password": "signup-password-1"}
    answer = user_answer(await client.post(f"{API}/users/signup", json=body))
    assert answer["full_name"] == ""
    assert await stored_user(session, "later@example.com") is not None


async def test_user_information_form(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    # UserSettings/UserInformation.tsx: {full_name, email} from the form's two fields
    body = {"full_name": "Alice Renamed", "email": "alice.new@example.com"}
    answer = user_answer(await client.patch(f"{API}/users/me", headers=user_headers, json=body))
    assert (answer["full_name"], answer["email"]) == ("Alice Renamed", "alice.new@example.com")
    stored = await stored_user(session, "alice.new@example.com")
    assert stored is not None
    assert stored.id == user.id


async def test_user_information_sends_only_the_changed_field(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    # UserSettings/UserInformation.tsx (later form): only the dirty fields
    answer = user_answer(
        await client.patch(f"{API}/users/me", headers=user_headers, json={"full_name": "A."})
    )
    assert (answer["full_name"], answer["email"]) == ("A.", "alice@example.com")
    stored = await stored_user(session, "alice@example.com")
    assert stored is not None
    assert stored.full_name == "A."


async def test_change_password_form_with_confirm_password(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    # UserSettings/ChangePassword.tsx: the whole form goes to UsersService.updatePasswordMe
    old_hash = user.hashed_password
    body = {
        "current_password": USER_PASSWORD,
        "new_password": NEW_PASSWORD,
        "confirm_password": NEW_PASSWORD,
    }
    response = await client.patch(f"{API}/users/me/password", headers=user_headers, json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "Password updated successfully"}
    stored = await stored_user(session, "alice@example.com")
    assert stored is not None
    assert stored.hashed_password != old_hash
    assert await logs_in(client, "alice@example.com", NEW_PASSWORD)
    assert not await logs_in(client, "alice@example.com", USER_PASSWORD)


async def test_delete_account_confirmation(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    # UserSettings/DeleteConfirmation.tsx: UsersService.deleteUserMe, no body
    response = await client.delete(f"{API}/users/me", headers=user_headers)
    assert response.status_code == 200
    assert response.json() == {"message": "User deleted successfully"}
    assert await stored_user(session, "alice@example.com") is None


# -- password recovery --------------------------------------------------------------------------


async def test_signup_then_recover_then_reset_with_the_mailed_link(
    mail_client: tuple[FastAPI, httpx.AsyncClient], smtp_server: SmtpServer
) -> None:
    # The template's reset-password.spec.ts flow: sign up, ask for recovery, open the last mail
    # to the address, follow its link. Signup mails nothing, so the first mail is the reset one.
    _, client = mail_client
    signup = {
        "email": "flow@example.com",
        "full_name": "Test User",
        "password": "signup-password-1",
        "confirm_password": "signup-password-1",
    }
    user_answer(await client.post(f"{API}/users/signup", json=signup))
    # routes/recover-password.tsx: LoginService.recoverPassword({email}), no body
    recovery = await client.post(f"{API}/password-recovery/flow@example.com")
    assert recovery.status_code == 200
    assert "message" in recovery.json()

    [mail] = await smtp_server.wait_for(1)
    assert mail.message["Subject"] == "Keelson - Password recovery"
    assert mail.rcpt_tos == ["flow@example.com"]
    # routes/reset-password.tsx: {new_password, token}, the token from the link's query
    reset = await client.post(
        f"{API}/reset-password/",
        json={"new_password": NEW_PASSWORD, "token": reset_token_in(mail.text)},
    )
    assert reset.status_code == 200, reset.text
    assert reset.json() == {"message": "Password updated successfully"}
    assert await logs_in(client, "flow@example.com", NEW_PASSWORD)
    assert len(smtp_server.received) == 1


async def test_reset_with_an_invalid_link_says_invalid_token(client: httpx.AsyncClient) -> None:
    # reset-password.spec.ts "Expired or invalid reset link": the page shows "Invalid token"
    response = await client.post(
        f"{API}/reset-password/", json={"new_password": NEW_PASSWORD, "token": "invalidtoken"}
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "Invalid token"


# -- admin: users -------------------------------------------------------------------------------


async def test_admin_user_list_page(
    client: httpx.AsyncClient, superuser_headers: dict[str, str], user: User
) -> None:
    # routes/_layout/admin.tsx: UsersService.readUsers({skip, limit}) one page at a time
    response = await client.get(f"{API}/users/?skip=0&limit=5", headers=superuser_headers)
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert {u["email"] for u in body["data"]} == {SUPERUSER_EMAIL, "alice@example.com"}
    assert all(set(u) == USER_PUBLIC for u in body["data"])


async def test_add_user_form_with_confirm_password(
    client: httpx.AsyncClient, superuser_headers: dict[str, str], session: AsyncSession
) -> None:
    # Admin/AddUser.tsx: the whole form (its checkboxes default to false), confirm_password too
    body = {
        "email": "added@example.com",
        "full_name": "Added",
        "password": "added-password-1",
        "confirm_password": "added-password-1",
        "is_superuser": False,
        "is_active": False,
    }
    answer = user_answer(await client.post(f"{API}/users/", headers=superuser_headers, json=body))
    assert (answer["is_active"], answer["is_superuser"]) == (False, False)
    stored = await stored_user(session, "added@example.com")
    assert stored is not None
    assert (stored.full_name, stored.is_active, stored.is_superuser) == ("Added", False, False)


async def test_add_user_form_making_an_active_superuser(
    client: httpx.AsyncClient, superuser_headers: dict[str, str], session: AsyncSession
) -> None:
    body = {
        "email": "second-admin@example.com",
        "full_name": "",
        "password": "added-password-1",
        "confirm_password": "added-password-1",
        "is_superuser": True,
        "is_active": True,
    }
    answer = user_answer(await client.post(f"{API}/users/", headers=superuser_headers, json=body))
    assert (answer["is_active"], answer["is_superuser"]) == (True, True)
    assert await logs_in(client, "second-admin@example.com", "added-password-1")


async def _listed(client: httpx.AsyncClient, headers: dict[str, str], email: str) -> dict[str, Any]:
    """The user as the admin page holds it: a row of readUsers' answer."""
    listing = await client.get(f"{API}/users/?skip=0&limit=100", headers=headers)
    row: dict[str, Any] = next(u for u in listing.json()["data"] if u["email"] == email)
    return row


async def test_edit_user_form_sends_the_whole_record_back(
    client: httpx.AsyncClient,
    superuser_headers: dict[str, str],
    user: User,
    session: AsyncSession,
) -> None:
    # Admin/EditUser.tsx (react-hook-form): defaultValues is the listed user, so id and
    # created_at go along; an empty password becomes undefined (not sent); confirm_password ""
    old_hash = user.hashed_password
    record = await _listed(client, superuser_headers, "alice@example.com")
    body = {**record, "full_name": "Alice Edited", "is_superuser": True, "confirm_password": ""}
    assert {"id", "created_at"} <= body.keys()
    answer = user_answer(
        await client.patch(f"{API}/users/{user.id}", headers=superuser_headers, json=body)
    )
    assert (answer["full_name"], answer["is_superuser"]) == ("Alice Edited", True)
    assert answer["id"] == record["id"]
    assert answer["created_at"] == record["created_at"]
    stored = await stored_user(session, "alice@example.com")
    assert stored is not None
    assert (stored.full_name, stored.is_superuser) == ("Alice Edited", True)
    assert stored.hashed_password == old_hash  # no password in the body: unchanged
    assert await logs_in(client, "alice@example.com", USER_PASSWORD)


async def test_edit_user_form_setting_a_password(
    client: httpx.AsyncClient, superuser_headers: dict[str, str], user: User
) -> None:
    record = await _listed(client, superuser_headers, "alice@example.com")
    body = {**record, "password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}
    user_answer(await client.patch(f"{API}/users/{user.id}", headers=superuser_headers, json=body))
    assert await logs_in(client, "alice@example.com", NEW_PASSWORD)


async def test_edit_user_later_form_strips_confirm_and_empty_password(
    client: httpx.AsyncClient, superuser_headers: dict[str, str], user: User, session: AsyncSession
) -> None:
    # Admin/EditUser.tsx (later form): {email, full_name, is_superuser, is_active}
    body = {
        "email": "alice@example.com",
        "full_name": "Alice",
        "is_superuser": False,
        "is_active": False,
    }
    answer = user_answer(
        await client.patch(f"{API}/users/{user.id}", headers=superuser_headers, json=body)
    )
    assert answer["is_active"] is False
    stored = await stored_user(session, "alice@example.com")
    assert stored is not None
    assert stored.is_active is False


async def test_delete_user_action(
    client: httpx.AsyncClient, superuser_headers: dict[str, str], user: User, session: AsyncSession
) -> None:
    # Admin/DeleteUser.tsx: UsersService.deleteUser({userId}), no body
    response = await client.delete(f"{API}/users/{user.id}", headers=superuser_headers)
    assert response.status_code == 200
    assert response.json() == {"message": "User deleted successfully"}
    assert await stored_user(session, "alice@example.com") is None


# -- items --------------------------------------------------------------------------------------


async def _add_item(
    client: httpx.AsyncClient, headers: dict[str, str], description: str
) -> dict[str, Any]:
    # Items/AddItem.tsx: {title, description}; the description input starts as ""
    response = await client.post(
        f"{API}/items/",
        headers=headers,
        json={"title": "From the form", "description": description},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == ITEM_PUBLIC
    return body


async def test_add_item_form(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    item = await _add_item(client, user_headers, "")
    assert (item["title"], item["description"], item["owner_id"]) == (
        "From the form",
        "",
        str(user.id),
    )
    stored = await stored_item(session, item["id"])
    assert stored is not None
    assert (stored.title, stored.description, stored.owner_id) == ("From the form", "", user.id)


async def test_items_page(client: httpx.AsyncClient, user_headers: dict[str, str]) -> None:
    # routes/_layout/items.tsx: ItemsService.readItems({skip, limit})
    item = await _add_item(client, user_headers, "listed")
    response = await client.get(f"{API}/items/?skip=0&limit=5", headers=user_headers)
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    assert body["data"] == [item]


async def test_edit_item_form_sends_the_whole_item_back(
    client: httpx.AsyncClient,
    app: FastAPI,
    user: User,
    user_headers: dict[str, str],
    other_user: User,
    session: AsyncSession,
) -> None:
    # Items/EditItem.tsx (react-hook-form): defaultValues {...item}, so id, owner_id and
    # created_at go along with the edited title and description
    item = await _add_item(client, user_headers, "before")
    body = {**item, "title": "Edited", "description": "after"}
    response = await client.put(f"{API}/items/{item['id']}", headers=user_headers, json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["title"], answer["description"]) == ("Edited", "after")
    assert (answer["id"], answer["owner_id"]) == (item["id"], str(user.id))
    stored = await stored_item(session, item["id"])
    assert stored is not None
    assert (stored.title, stored.description, stored.owner_id) == ("Edited", "after", user.id)
    # owner_id is ignored, not obeyed: echoing another owner moves nothing
    moved = {**body, "owner_id": str(other_user.id)}
    response = await client.put(f"{API}/items/{item['id']}", headers=user_headers, json=moved)
    assert response.status_code == 200
    assert response.json()["owner_id"] == str(user.id)
    listing = await client.get(f"{API}/items/", headers=bearer(app, other_user))
    assert listing.json()["count"] == 0


async def test_edit_item_later_form(
    client: httpx.AsyncClient, user_headers: dict[str, str], session: AsyncSession
) -> None:
    # Items/EditItem.tsx (later form): {title, description}
    item = await _add_item(client, user_headers, "before")
    response = await client.put(
        f"{API}/items/{item['id']}", headers=user_headers, json={"title": "T", "description": "D"}
    )
    assert response.status_code == 200
    stored = await stored_item(session, item["id"])
    assert stored is not None
    assert (stored.title, stored.description) == ("T", "D")


async def test_delete_item_action(
    client: httpx.AsyncClient, user_headers: dict[str, str], session: AsyncSession
) -> None:
    # Items/DeleteItem.tsx: ItemsService.deleteItem({id}), no body
    item = await _add_item(client, user_headers, "doomed")
    response = await client.delete(f"{API}/items/{item['id']}", headers=user_headers)
    assert response.status_code == 200
    assert response.json() == {"message": "Item deleted successfully"}
    assert await stored_item(session, item["id"]) is None
