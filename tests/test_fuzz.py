"""Schemathesis against the service's own OpenAPI document, over HTTP to a real server.

Every operation, as a superuser, as a normal user and anonymously, with generated valid and
invalid inputs, one call at a time and in stateful sequences that follow the links schemathesis
infers (an item created, then read, updated, deleted): never a 5xx, every answer documented
(status, media type, body schema), no answer that breaks authorization or ownership, every
response through the secrets scan, and the database consistent after each role's run.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import schemathesis
from aiosmtpd.controller import Controller
from argon2 import PasswordHasher
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Flaky
from schemathesis import checks as st_checks
from schemathesis.specs.openapi import checks as openapi_checks

from service.items.models import ALL_ITEMS_SCOPE
from tests.support.clients import sync_http_client
from tests.support.postgres import asyncpg_dsn, create_database, drop_database
from tests.support.processes import base_env, free_port, keelson, run_keelson, wait_ready
from tests.support.secrets import SCANNED, assert_no_secrets_in

pytestmark = pytest.mark.slow

SUPERUSER = ("fuzz-admin@example.com", "fuzz-admin-pass-1")
ROLES = ("superuser", "user", "anonymous")
CHECKS = [
    st_checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
]
API = "/api/v1"
# Operations that answer without a token (everything else must refuse an anonymous caller).
PUBLIC = {
    f"POST {API}/users/signup",
    f"POST {API}/login/access-token",
    f"POST {API}/login/refresh",
    f"POST {API}/password-recovery/{{email}}",
    f"POST {API}/reset-password/",
    f"GET {API}/utils/health-check/",
    # The template's dev-only route: served (and fuzzed) because the fuzzed app runs in local.
    f"POST {API}/private/users/",
}
# Operations only a superuser may complete (a normal user reads only their own user_id).
SUPERUSER_ONLY = {
    f"GET {API}/users/",
    f"POST {API}/users/",
    f"GET {API}/users/{{user_id}}",
    f"PATCH {API}/users/{{user_id}}",
    f"DELETE {API}/users/{{user_id}}",
    f"POST {API}/password-recovery-html-content/{{email}}",
    f"POST {API}/utils/test-email/",
}
# A normal user deleting their own account ends the run's identity after one call (and
# tests/users covers it); the other roles fuzz it (superusers are refused, anonymous gets 401).
NOT_FUZZED_AS_USER = {f"DELETE {API}/users/me"}


class Sink:
    """Accepts every message; the fuzz run only needs a working SMTP peer."""

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802 - aiosmtpd's hook name
        return "250 OK"


@dataclass(frozen=True)
class Caller:
    """Who the fuzzer is: the role's account (none when anonymous) and its headers."""

    role: str
    user_id: uuid.UUID | None
    headers: dict[str, str]


@pytest.fixture(scope="module")
def live_api(pg_server_url: str) -> Iterator[dict[str, Any]]:
    url = asyncio.run(create_database(pg_server_url, "keelson_fuzz"))
    port = free_port()
    # A real SMTP server, so the email endpoints answer as in production instead of 503.
    smtp = Controller(Sink(), hostname="127.0.0.1", port=free_port())
    smtp.start()
    env = base_env(
        DATABASE_URL=url,
        FIRST_SUPERUSER=SUPERUSER[0],
        FIRST_SUPERUSER_PASSWORD=SUPERUSER[1],
        ACCESS_LOG_ENABLED="false",
        ARGON2_MEMORY_KIB="1024",
        ARGON2_TIME_COST="1",
        ARGON2_PARALLELISM="1",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp.port),
        SMTP_TLS="false",
    )
    try:
        for command in ("migrate", "seed"):
            run_keelson(command, env)
        with keelson("serve", "--host", "127.0.0.1", "--port", str(port), env=env) as process:
            wait_ready(port, process)
            yield {"base": f"http://127.0.0.1:{port}", "db": url}
    finally:
        smtp.stop()
        asyncio.run(drop_database(pg_server_url, url))


def _login(base: str, email: str, password: str) -> dict[str, str]:
    with sync_http_client(base) as http:
        response = http.post(
            f"{API}/login/access-token", data={"username": email, "password": password}
        )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def new_caller(live_api: dict[str, Any], role: str) -> Caller:
    """A fresh account per test for the role, so one role's fuzzing cannot spoil another's.

    Inserted straight into the database: the superuser's fuzzing may have changed the seeded
    admin's password or rights by the time another test needs an account.
    """
    if role == "anonymous":
        return Caller(role, None, {})
    user_id, password = uuid.uuid4(), "fuzz-pass-12345"
    email = f"fuzz-{role}-{user_id.hex[:8]}@example.com"
    hashed = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(password)

    async def insert() -> None:
        connection = await asyncpg.connect(asyncpg_dsn(live_api["db"]))
        try:
            await connection.execute(
                "INSERT INTO users (id, email, hashed_password, is_active, is_superuser)"
                " VALUES ($1, $2, $3, true, $4)",
                user_id,
                email,
                hashed,
                role == "superuser",
            )
            # Someone else's item, so that a listing or read leaking across owners has
            # something to leak whichever test ran before.
            bystander = uuid.uuid4()
            await connection.execute(
                "INSERT INTO users (id, email, hashed_password, is_active, is_superuser)"
                " VALUES ($1, $2, $3, true, false)",
                bystander,
                f"bystander-{bystander.hex[:8]}@example.com",
                hashed,
            )
            await connection.execute(
                "INSERT INTO items (id, title, owner_id) VALUES ($1, 'theirs', $2)",
                uuid.uuid4(),
                bystander,
            )
        finally:
            await connection.close()

    asyncio.run(insert())
    return Caller(role, user_id, _login(live_api["base"], email, password))


@pytest.fixture
def as_superuser(live_api: dict[str, Any]) -> Caller:
    return new_caller(live_api, "superuser")


@pytest.fixture
def as_user(live_api: dict[str, Any]) -> Caller:
    return new_caller(live_api, "user")


@pytest.fixture
def as_anonymous(live_api: dict[str, Any]) -> Caller:
    return new_caller(live_api, "anonymous")


@pytest.fixture(scope="module")
def api_schema(live_api: dict[str, Any]) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_api['base']}{API}/openapi.json")


def check_authorization(caller: Caller, label: str, response: Any) -> None:
    """No 2xx an anonymous or normal caller is not entitled to; a user sees only their items."""
    if not 200 <= response.status_code < 300:
        return
    body = _json(response)
    if caller.role == "anonymous":
        assert label in PUBLIC, f"anonymous {label} answered {response.status_code}"
    if caller.role != "user":
        return
    if label == f"GET {API}/users/{{user_id}}" and isinstance(body, dict):
        assert body.get("id") == str(caller.user_id), f"user read another user: {body}"
    elif label in SUPERUSER_ONLY:
        pytest.fail(f"a normal user's {label} answered {response.status_code}")
    if label.startswith(f"GET {API}/items/") or label.startswith(f"PUT {API}/items/"):
        items = body.get("data", [body]) if isinstance(body, dict) else []
        owners = {item.get("owner_id") for item in items if isinstance(item, dict)}
        assert owners <= {str(caller.user_id)}, f"user saw items of {owners}"
    if label.startswith(f"PATCH {API}/users/me") and isinstance(body, dict):
        assert body.get("is_superuser") is not True, "a user made themselves superuser"


def _json(response: Any) -> Any:
    if "json" not in _content_type(response) or not response.content:
        return None
    return response.json()


def _content_type(response: Any) -> str:
    values = response.headers.get("content-type") or response.headers.get("Content-Type") or [""]
    return values[0] if isinstance(values, list) else str(values)


def scan(response: Any) -> None:
    assert_no_secrets_in(str(response.request.url), _content_type(response), response.content)


schema = schemathesis.pytest.from_fixture("api_schema")
FUZZ_SETTINGS = settings(
    max_examples=25,
    deadline=None,  # a real server on a shared machine: latency is not what is tested here
    derandomize=True,  # the same cases every run: a failure here is reproducible
    phases=[Phase.explicit, Phase.generate],
    # Each example is one HTTP round trip to a real server (with argon2 on login/signup), so
    # generating 25 of them takes longer than Hypothesis's budget for data generation alone.
    suppress_health_check=[HealthCheck.too_slow],
)


def fuzz_one_call(case: schemathesis.Case, base_url: str, caller: Caller) -> None:
    label = case.operation.label
    if caller.role == "user" and label in NOT_FUZZED_AS_USER:
        return
    before = SCANNED["responses"]
    response = case.call(base_url=base_url, headers=caller.headers)
    scan(response)
    assert SCANNED["responses"] == before + 1
    check_authorization(caller, label, response)
    case.validate_response(response, checks=CHECKS, headers=caller.headers)


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_conforms_to_its_schema_as_superuser(
    case: schemathesis.Case, live_api: dict[str, Any], as_superuser: Caller
) -> None:
    fuzz_one_call(case, live_api["base"], as_superuser)


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_conforms_to_its_schema_as_normal_user(
    case: schemathesis.Case, live_api: dict[str, Any], as_user: Caller
) -> None:
    fuzz_one_call(case, live_api["base"], as_user)


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_conforms_to_its_schema_anonymously(
    case: schemathesis.Case, live_api: dict[str, Any], as_anonymous: Caller
) -> None:
    fuzz_one_call(case, live_api["base"], as_anonymous)


def run_stateful(api_schema: schemathesis.BaseSchema, base_url: str, caller: Caller) -> list[str]:
    """Sequences along the inferred links as `caller`; returns the label of every call made."""
    calls: list[str] = []
    failures: list[BaseException] = []

    class Machine(api_schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"base_url": base_url, "headers": caller.headers}

        def validate_response(
            self, response: Any, case: schemathesis.Case, *args: Any, **kwargs: Any
        ) -> None:
            calls.append(case.operation.label)
            try:
                before = SCANNED["responses"]
                scan(response)
                assert SCANNED["responses"] == before + 1
                check_authorization(caller, case.operation.label, response)
                case.validate_response(response, checks=CHECKS, headers=caller.headers)
            except BaseException as failure:
                failures.append(failure)
                raise

    try:
        Machine.run(
            settings=settings(
                max_examples=12,
                stateful_step_count=8,
                phases=[Phase.generate],  # no shrinking: replays meet a changed server state
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],  # see FUZZ_SETTINGS
            )
        )
    except Flaky:
        # Replaying a choice sequence against a server whose state moved on (the signup that
        # answered 200 answers 409 the second time) takes other branches; Hypothesis calls that
        # flaky. Schemathesis's own runner ends the run there as a success unless a check
        # failed, and so does this: a check failure is re-raised as itself.
        if failures:
            raise failures[0] from None
    return calls


async def assert_database_consistent(database_url: str, caller: Caller) -> None:
    """Invariants a request could break: trigger-kept item counters, hashes, the caller's role."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        miscounted = await connection.fetch(
            """
            WITH counted AS (SELECT owner_id AS scope, count(*) AS n FROM items GROUP BY owner_id
                             UNION ALL SELECT $1::uuid, count(*) FROM items),
                 kept AS (SELECT scope, sum(n) AS n FROM item_counters GROUP BY scope)
            SELECT coalesce(c.scope, k.scope) AS scope, c.n AS counted, k.n AS kept
            FROM counted c FULL JOIN kept k ON k.scope = c.scope
            WHERE coalesce(c.n, 0) <> coalesce(k.n, 0)
            """,
            ALL_ITEMS_SCOPE,
        )
        bad_hashes = await connection.fetchval(
            "SELECT count(*) FROM users WHERE hashed_password NOT LIKE '$argon2id$%'"
        )
        superusers = await connection.fetchval("SELECT count(*) FROM users WHERE is_superuser")
        role = await connection.fetchrow(
            "SELECT is_superuser, is_active FROM users WHERE id = $1", caller.user_id
        )
    finally:
        await connection.close()
    assert [dict(row) for row in miscounted] == []
    assert bad_hashes == 0
    assert superusers >= 1  # the seeded superuser cannot be deleted or demoted away
    if caller.role == "user":
        assert role is not None, "the normal user's account vanished"
        assert role["is_superuser"] is False, "the normal user became a superuser"


@pytest.mark.parametrize("role", ROLES)
def test_stateful_sequences_keep_the_database_consistent(
    api_schema: schemathesis.BaseSchema, live_api: dict[str, Any], role: str
) -> None:
    caller = new_caller(live_api, role)
    scanned_before = SCANNED["responses"]
    calls = run_stateful(api_schema, live_api["base"], caller)
    print(f"\n[fuzz] stateful as {role}: {len(calls)} calls over {len(set(calls))} operations")
    assert SCANNED["responses"] - scanned_before >= len(calls) > 40
    assert len(set(calls)) >= 8, f"the sequences reached only {sorted(set(calls))}"
    asyncio.run(assert_database_consistent(live_api["db"], caller))
