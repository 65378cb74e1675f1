"""Bad input of every kind gets a clear 4xx problem+json, never a 500, and changes nothing stored.

Also the error model itself: 422 bodies list loc/msg/type and never echo what was sent, unknown
routes and methods are problems too, and every answer carries an X-Request-ID.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.items.models import Item
from service.users.models import User
from tests.conftest import problem

ITEMS = "/api/v1/items/"
SIGNUP = "/api/v1/users/signup"
SECRET_PASSWORD = "Hunter2-never-echo-me"
GENERATED_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


async def stored_counts(session: AsyncSession) -> tuple[int, int]:
    users = (await session.exec(select(func.count()).select_from(User))).one()
    items = (await session.exec(select(func.count()).select_from(Item))).one()
    return users, items


def client_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """A 4xx problem with a request id; 422s carry loc/msg/type and nothing else per error."""
    assert 400 <= status < 500
    body = problem(response, status)
    assert response.headers["x-request-id"]
    if status == 422:
        assert body["errors"], body
        for error in body["errors"]:
            assert set(error) == {"loc", "msg", "type"}, error
            assert isinstance(error["loc"], list)
            assert error["msg"]
            assert error["type"]
    return body


async def post_raw(
    client: httpx.AsyncClient,
    url: str,
    content: bytes | str,
    headers: dict[str, str],
    content_type: str = "application/json",
) -> httpx.Response:
    return await client.post(
        url, content=content, headers={**headers, "Content-Type": content_type}
    )


@pytest.fixture
async def item(client: httpx.AsyncClient, user_headers: dict[str, str]) -> dict[str, Any]:
    response = await client.post(
        ITEMS, headers=user_headers, json={"title": "original", "description": "kept"}
    )
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


# -- malformed and mis-shaped bodies ------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b'{"title": "x",',
        b"{'title': 'x'}",
        b'{"title": "x"} trailing',
        b"",
        b"not json at all",
        b"\x00\x01\x02",
    ],
    ids=["truncated", "single-quotes", "trailing-garbage", "empty", "plain-text", "binary"],
)
async def test_malformed_json_is_422_and_stores_nothing(
    client: httpx.AsyncClient,
    user_headers: dict[str, str],
    session: AsyncSession,
    content: bytes,
) -> None:
    before = await stored_counts(session)
    response = await post_raw(client, ITEMS, content, user_headers)
    client_error(response, 422)
    assert await stored_counts(session) == before


@pytest.mark.parametrize(
    "payload",
    [[{"title": "x"}], ["title", "x"], "title", 42, None, True],
    ids=["array-of-object", "array", "string", "number", "null", "bool"],
)
async def test_json_that_is_not_an_object_is_422(
    client: httpx.AsyncClient,
    user_headers: dict[str, str],
    session: AsyncSession,
    payload: Any,
) -> None:
    before = await stored_counts(session)
    response = await post_raw(client, ITEMS, json.dumps(payload), user_headers)
    body = client_error(response, 422)
    assert body["errors"][0]["loc"][0] == "body"
    assert await stored_counts(session) == before


async def test_invalid_utf8_body_is_400(
    client: httpx.AsyncClient, user_headers: dict[str, str], session: AsyncSession
) -> None:
    before = await stored_counts(session)
    response = await post_raw(client, ITEMS, b'{"title": "\xff\xfe bad"}', user_headers)
    assert client_error(response, 400)["detail"] == "There was an error parsing the body"
    assert await stored_counts(session) == before


async def test_nested_json_where_a_string_belongs_is_422(
    client: httpx.AsyncClient, user_headers: dict[str, str], session: AsyncSession
) -> None:
    before = await stored_counts(session)
    nested = '{"title": ' + '{"a": ' * 64 + "1" + "}" * 64 + "}"
    body = client_error(await post_raw(client, ITEMS, nested, user_headers), 422)
    assert body["errors"] == [
        {"loc": ["body", "title"], "msg": "Input should be a valid string", "type": "string_type"}
    ]
    assert await stored_counts(session) == before


async def test_json_nested_past_the_parser_limit_is_400(
    client: httpx.AsyncClient, user_headers: dict[str, str], session: AsyncSession
) -> None:
    """100,000 levels exhaust the JSON parser's recursion limit: a 400, not a crash."""
    before = await stored_counts(session)
    nested = '{"title": ' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "}"
    response = await post_raw(client, ITEMS, nested, user_headers)
    assert client_error(response, 400)["detail"] == "There was an error parsing the body"
    assert await stored_counts(session) == before


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", "multipart/form-data"],
)
async def test_json_endpoint_refuses_other_media_types_with_415(
    client: httpx.AsyncClient,
    user_headers: dict[str, str],
    session: AsyncSession,
    content_type: str,
) -> None:
    before = await stored_counts(session)
    response = await post_raw(client, ITEMS, '{"title": "x"}', user_headers, content_type)
    body = client_error(response, 415)
    assert "application/json" in body["detail"]
    assert await stored_counts(session) == before


async def test_json_with_charset_or_problem_suffix_is_accepted(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = await post_raw(client, ITEMS, '{"title": "x"}', user_headers, content_type)
        assert response.status_code == 200, (content_type, response.text)


async def test_login_form_still_accepts_form_encoding(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/login/access-token", data={"username": "nobody@example.com", "password": "x" * 8}
    )
    assert response.status_code == 400  # reached the login logic, not a 415


# -- wrong types, lengths and fields ------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"title": 123},
        {"title": None},
        {"title": ["x"]},
        {"title": {"x": 1}},
        {"title": True},
        {"title": "x", "description": 5},
        {"title": "x", "description": ["a"]},
    ],
    ids=["int", "null", "list", "object", "bool", "description-int", "description-list"],
)
async def test_wrong_types_are_422(
    client: httpx.AsyncClient,
    user_headers: dict[str, str],
    session: AsyncSession,
    payload: dict[str, Any],
) -> None:
    before = await stored_counts(session)
    body = client_error(await client.post(ITEMS, headers=user_headers, json=payload), 422)
    assert body["errors"][0]["loc"][:1] == ["body"]
    assert await stored_counts(session) == before


@pytest.mark.parametrize(
    "payload",
    [
        {"title": "t" * 256},
        {"title": "x", "description": "d" * 256},
        {"title": ""},
        {"title": "t" * 100_000},
    ],
    ids=["title-256", "description-256", "title-empty", "title-100k"],
)
async def test_over_long_or_empty_item_strings_are_422(
    client: httpx.AsyncClient,
    user_headers: dict[str, str],
    session: AsyncSession,
    payload: dict[str, Any],
) -> None:
    before = await stored_counts(session)
    client_error(await client.post(ITEMS, headers=user_headers, json=payload), 422)
    assert await stored_counts(session) == before


async def test_strings_of_exactly_255_characters_are_stored(
    client: httpx.AsyncClient, user_headers: dict[str, str], session: AsyncSession
) -> None:
    payload = {"title": "t" * 255, "description": "d" * 255}
    response = await client.post(ITEMS, headers=user_headers, json=payload)
    assert response.status_code == 200
    stored = await session.get(Item, uuid.UUID(response.json()["id"]))
    assert stored is not None
    assert (stored.title, stored.description) == ("t" * 255, "d" * 255)


async def test_over_long_full_name_is_422_and_changes_nothing(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    response = await client.patch(
        "/api/v1/users/me", headers=user_headers, json={"full_name": "n" * 256}
    )
    client_error(response, 422)
    signup = await client.post(
        SIGNUP,
        json={"email": "new@example.com", "password": SECRET_PASSWORD, "full_name": "n" * 256},
    )
    client_error(signup, 422)
    name = await session.exec(select(User.full_name).where(User.id == user.id))
    assert name.one() == "Alice"
    assert await stored_counts(session) == (1, 0)


@pytest.mark.parametrize(
    "payload",
    [
        {"title": "x", "owner_id": str(uuid.uuid4())},
        {"title": "x", "id": str(uuid.uuid4())},
        {"title": "x", "created_at": "2000-01-01T00:00:00Z"},
    ],
    ids=["owner_id", "id", "created_at"],
)
async def test_fields_the_caller_may_not_set_are_422_naming_the_field(
    client: httpx.AsyncClient,
    user_headers: dict[str, str],
    session: AsyncSession,
    payload: dict[str, Any],
) -> None:
    before = await stored_counts(session)
    body = client_error(await client.post(ITEMS, headers=user_headers, json=payload), 422)
    extra = next(iter(payload.keys() - {"title"}))
    assert {
        "loc": ["body", extra],
        "msg": "May not be set through this operation",
        "type": "field_not_settable",
    } in body["errors"]
    assert await stored_counts(session) == before


async def test_unknown_fields_are_ignored_not_read_case_insensitively(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    response = await client.post(ITEMS, headers=user_headers, json={"title": "x", "Title": "y"})
    assert response.status_code == 200, response.text
    assert response.json()["title"] == "x"


async def test_rejected_update_leaves_the_item_as_it_was(
    client: httpx.AsyncClient,
    user_headers: dict[str, str],
    session: AsyncSession,
    item: dict[str, Any],
) -> None:
    url = f"{ITEMS}{item['id']}"
    for payload in ({"title": "t" * 256}, {"title": 5}):
        client_error(await client.put(url, headers=user_headers, json=payload), 422)
    # owner_id is ignored on update (the template's edit form sends the item back): not obeyed
    moved = await client.put(url, headers=user_headers, json={"owner_id": str(uuid.uuid4())})
    assert moved.status_code == 200, moved.text
    stored = await session.exec(
        select(Item.title, Item.description, Item.owner_id).where(Item.id == uuid.UUID(item["id"]))
    )
    assert tuple(stored.one()) == ("original", "kept", uuid.UUID(item["owner_id"]))


# -- NUL bytes: valid JSON, but PostgreSQL text cannot hold them --------------------------------

UNSTORABLE = "The request contains a value that cannot be stored (for example a NUL character)"


@pytest.mark.parametrize(
    "payload",
    [{"title": "a\x00b"}, {"title": "ok", "description": "\x00"}],
    ids=["title", "description"],
)
async def test_nul_byte_in_item_strings_is_400(
    client: httpx.AsyncClient,
    user_headers: dict[str, str],
    session: AsyncSession,
    payload: dict[str, Any],
) -> None:
    before = await stored_counts(session)
    response = await client.post(ITEMS, headers=user_headers, json=payload)
    assert client_error(response, 400)["detail"] == UNSTORABLE
    assert "\\u0000" not in response.text  # the value is not echoed
    assert await stored_counts(session) == before


async def test_nul_byte_in_user_fields_is_400(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    patch = await client.patch(
        "/api/v1/users/me", headers=user_headers, json={"full_name": "A\x00"}
    )
    assert client_error(patch, 400)["detail"] == UNSTORABLE
    signup = await client.post(
        SIGNUP, json={"email": "nul@example.com", "password": SECRET_PASSWORD, "full_name": "\x00"}
    )
    assert client_error(signup, 400)["detail"] == UNSTORABLE
    assert SECRET_PASSWORD not in signup.text
    name = await session.exec(select(User.full_name).where(User.id == user.id))
    assert name.one() == "Alice"
    assert await stored_counts(session) == (1, 0)


async def test_nul_byte_in_login_email_is_an_ordinary_failed_login(
    client: httpx.AsyncClient, user: User
) -> None:
    login = await client.post(
        "/api/v1/login/access-token",
        data={"username": "alice@example.com\x00", "password": "user-password-1"},
    )
    assert client_error(login, 400)["detail"] == "Incorrect email or password"


async def test_nul_byte_in_recovery_email_gets_the_usual_answer(
    client: httpx.AsyncClient, user: User
) -> None:
    recovery = await client.post("/api/v1/password-recovery/alice%00@example.com")
    assert recovery.status_code == 200
    assert recovery.json()["message"].startswith("If that email is registered")


# -- paths and query strings --------------------------------------------------------------------


@pytest.mark.parametrize(
    "item_id",
    ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g", "%27%20OR%201%3D1", "%00"],
    ids=["word", "number", "bad-hex", "sql", "nul"],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_bad_uuid_in_path_is_422(
    client: httpx.AsyncClient,
    user_headers: dict[str, str],
    session: AsyncSession,
    item: dict[str, Any],
    item_id: str,
    method: str,
) -> None:
    response = await client.request(
        method, f"{ITEMS}{item_id}", headers=user_headers, json={"title": "changed"}
    )
    body = client_error(response, 422)
    assert body["errors"][0]["loc"] == ["path", "id"]
    assert await stored_counts(session) == (1, 1)


@pytest.mark.parametrize(
    "query",
    [
        "skip=100000000000000000000000000000",
        "limit=100000000000000000000000000000",
        "skip=-1",
        "limit=0",
        "limit=1001",
        "skip=1e3",
        "skip=NaN",
        "limit=abc",
        "skip=%00",
    ],
)
@pytest.mark.parametrize("url", [ITEMS, "/api/v1/users/"])
async def test_bad_paging_is_422(
    client: httpx.AsyncClient, superuser_headers: dict[str, str], url: str, query: str
) -> None:
    body = client_error(await client.get(f"{url}?{query}", headers=superuser_headers), 422)
    assert body["errors"][0]["loc"][0] == "query"


async def test_paging_past_the_end_is_an_empty_page(
    client: httpx.AsyncClient, user_headers: dict[str, str], item: dict[str, Any]
) -> None:
    response = await client.get(f"{ITEMS}?skip=1000000&limit=1000", headers=user_headers)
    assert response.status_code == 200
    assert response.json() == {"data": [], "count": 1, "next_cursor": None}


# -- SQL-looking input is data ------------------------------------------------------------------

SQL_LOOKING = [
    "Robert'); DROP TABLE items;--",
    "1' OR '1'='1",
    "'; DELETE FROM users; --",
    '" OR ""="',
    "x' UNION SELECT hashed_password FROM users --",
    "%' OR title LIKE '%",
    "$1; SELECT pg_sleep(10)",
]


@pytest.mark.parametrize("value", SQL_LOOKING)
async def test_sql_looking_strings_are_stored_verbatim_and_never_run(
    client: httpx.AsyncClient,
    user: User,
    user_headers: dict[str, str],
    session: AsyncSession,
    value: str,
) -> None:
    response = await client.post(
        ITEMS, headers=user_headers, json={"title": value, "description": value}
    )
    assert response.status_code == 200
    assert (response.json()["title"], response.json()["description"]) == (value, value)
    row = await session.exec(
        select(Item.title, Item.description).where(Item.id == uuid.UUID(response.json()["id"]))
    )
    assert tuple(row.one()) == (value, value)
    listed = await client.get(ITEMS, headers=user_headers)
    assert [entry["title"] for entry in listed.json()["data"]] == [value]
    # The tables are intact and nobody was deleted.
    assert await stored_counts(session) == (1, 1)
    connection = await session.connection()
    tables = await connection.scalar(
        text("SELECT count(*) FROM pg_tables WHERE tablename IN ('users', 'items')")
    )
    assert tables == 2


async def test_sql_looking_full_name_and_email_path_are_data(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str], session: AsyncSession
) -> None:
    value = "'; UPDATE users SET is_superuser = true; --"
    response = await client.patch(
        "/api/v1/users/me", headers=user_headers, json={"full_name": value}
    )
    assert response.status_code == 200
    assert response.json()["full_name"] == value
    row = await session.exec(select(User.full_name, User.is_superuser).where(User.id == user.id))
    assert tuple(row.one()) == (value, False)
    recovery = await client.post("/api/v1/password-recovery/' OR '1'='1")
    assert recovery.status_code == 200


# -- the 422 body never echoes input ------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"email": "x@example.com", "password": SECRET_PASSWORD * 10},
        {"email": "x@example.com", "password": [SECRET_PASSWORD]},
        {"email": "x@example.com", "password": {"value": SECRET_PASSWORD}},
        {"email": SECRET_PASSWORD, "password": SECRET_PASSWORD},
        {"email": "x@example.com", "password": "short", "note": SECRET_PASSWORD},
    ],
    ids=["too-long", "list", "object", "bad-email", "extra-field"],
)
async def test_validation_errors_never_echo_the_submitted_password(
    client: httpx.AsyncClient, session: AsyncSession, payload: dict[str, Any]
) -> None:
    response = await client.post(SIGNUP, json=payload)
    client_error(response, 422)
    assert SECRET_PASSWORD not in response.text
    assert SECRET_PASSWORD.lower() not in response.text.lower()
    assert await stored_counts(session) == (0, 0)


async def test_malformed_json_error_does_not_echo_the_body(client: httpx.AsyncClient) -> None:
    raw = f'{{"email": "x@example.com", "password": "{SECRET_PASSWORD}",'
    response = await post_raw(client, SIGNUP, raw, {})
    body = client_error(response, 422)
    assert SECRET_PASSWORD not in response.text
    assert body["errors"][0]["type"] == "json_invalid"


async def test_422_detail_summarises_the_first_error(client: httpx.AsyncClient) -> None:
    response = await client.post(SIGNUP, json={"email": "not-an-email"})
    body = client_error(response, 422)
    assert len(body["errors"]) == 2
    assert body["detail"].startswith("body.")
    assert body["detail"].endswith("(and 1 more)")
    assert body["title"] == "Unprocessable Content"
    assert body["instance"] == SIGNUP


# -- routing errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/nope", "/nope", "/api/v2/items/", "/api/v1/items/x/y"])
async def test_unknown_route_is_404_problem(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    body = client_error(response, 404)
    assert body["detail"] == "Not Found"
    assert body["instance"] == path


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/v1/utils/health-check/", "GET"),
        ("GET", "/api/v1/login/access-token", "POST"),
        ("PUT", "/api/v1/users/signup", "POST"),
    ],
)
async def test_wrong_method_is_405_problem(
    client: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    response = await client.request(method, path)
    body = client_error(response, 405)
    assert body["detail"] == "Method Not Allowed"
    assert allowed in response.headers["allow"]


# -- request ids --------------------------------------------------------------------------------


@pytest.mark.parametrize("request_id", ["abc123", "req-1.2:3_4", "0" * 128, str(uuid.uuid4())])
async def test_valid_request_id_is_echoed(client: httpx.AsyncClient, request_id: str) -> None:
    response = await client.get("/api/v1/utils/health-check/", headers={"X-Request-ID": request_id})
    assert response.headers["x-request-id"] == request_id


@pytest.mark.parametrize(
    "request_id",
    ["has spaces", "x" * 129, "-leading-dash", "semi;colon", "new\tline", "", "<script>"],
)
async def test_invalid_request_id_is_replaced(client: httpx.AsyncClient, request_id: str) -> None:
    response = await client.get("/api/v1/utils/health-check/", headers={"X-Request-ID": request_id})
    assert GENERATED_REQUEST_ID.match(response.headers["x-request-id"])


async def test_non_ascii_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/api/v1/utils/health-check/", headers=[(b"X-Request-ID", "réq-é".encode("latin-1"))]
    )
    assert GENERATED_REQUEST_ID.match(response.headers["x-request-id"])


async def test_error_answers_echo_the_request_id_too(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    headers = {**user_headers, "X-Request-ID": "trace-me-42"}
    responses = [
        await client.get("/nope", headers=headers),
        await client.get(f"{ITEMS}bad", headers=headers),
        await client.get(f"{ITEMS}{uuid.uuid4()}", headers=headers),
        await client.get("/api/v1/users/me", headers={"X-Request-ID": "trace-me-42"}),
    ]
    assert [r.status_code for r in responses] == [404, 422, 404, 401]
    assert {r.headers["x-request-id"] for r in responses} == {"trace-me-42"}


async def test_each_request_without_an_id_gets_a_fresh_one(client: httpx.AsyncClient) -> None:
    first = await client.get("/api/v1/utils/health-check/")
    second = await client.get("/api/v1/utils/health-check/")
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2
    assert all(GENERATED_REQUEST_ID.match(request_id) for request_id in ids)


async def test_unhandled_error_is_a_500_problem_with_request_id(
    client: httpx.AsyncClient,
    app: FastAPI,
    user_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control for "never 500": when something does break, the answer is still a problem."""
    from service.items import service as items_service

    async def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("boom: internal detail that must not leak")

    monkeypatch.setattr(items_service, "list_items", broken)
    response = await client.get(ITEMS, headers={**user_headers, "X-Request-ID": "crash-1"})
    body = problem(response, 500)
    assert body["detail"] == "The server failed to handle this request"
    assert "boom" not in response.text
    assert response.headers["x-request-id"] == "crash-1"


class _DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"driver error {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "status"),
    [("22021", 400), ("22003", 400), ("22P02", 400), ("42P01", 500), ("XX000", 500)],
    ids=["bad-byte", "out-of-range", "bad-text", "undefined-table", "internal"],
)
async def test_only_database_data_exceptions_become_400(
    client: httpx.AsyncClient,
    user_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    sqlstate: str,
    status: int,
) -> None:
    """SQLSTATE class 22 is the client's value; any other database failure stays an opaque 500."""
    from service.items import service as items_service

    async def failing(*_: Any, **__: Any) -> None:
        raise DBAPIError("SELECT secret_column", {"p": "param-value"}, _DriverError(sqlstate))

    monkeypatch.setattr(items_service, "list_items", failing)
    response = await client.get(ITEMS, headers=user_headers)
    problem(response, status)
    assert "secret_column" not in response.text
    assert "param-value" not in response.text
