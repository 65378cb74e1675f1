"""Security settings: key roll-over, trusted proxies, CORS without "*", docs by environment."""

from __future__ import annotations

import ipaddress
import json
import secrets

import pytest

from service.core.config import derive_key_id
from tests.core.test_config import (
    STRONG_KEY,
    STRONG_PASSWORD,
    Load,
    LoadError,
    bad_variables,
    config_error,
    load,
)

__all__ = ["config_error", "load"]  # fixtures, imported for this module

OLD_KEY = secrets.token_urlsafe(48)
PRODUCTION = {
    "ENVIRONMENT": "production",
    "SECRET_KEY": STRONG_KEY,
    "FIRST_SUPERUSER_PASSWORD": STRONG_PASSWORD,
}


def test_security_defaults(load: Load) -> None:
    s = load()
    assert (s.access_token_expire_minutes, s.refresh_token_expire_days) == (15, 14)
    assert (s.login_max_failures_per_account, s.login_max_failures_per_ip) == (10, 100)
    assert s.login_throttle_window_s == 900
    assert s.trusted_proxy_cidrs == []
    assert (s.hsts_enabled, s.hsts_max_age_s) == (False, 31_536_000)
    assert (s.jwt_key_id, s.jwt_previous_keys) == (None, {})
    assert s.signing_key_id == derive_key_id(s.secret_key.get_secret_value())


@pytest.mark.parametrize(
    ("environment", "docs"), [("local", True), ("staging", False), ("production", False)]
)
def test_docs_are_on_only_locally_unless_set(environment: str, docs: bool, load: Load) -> None:
    env = {**PRODUCTION, "ENVIRONMENT": environment}
    assert load(**env).docs_enabled is docs
    assert load(**env, DOCS_ENABLED=str(not docs).lower()).docs_enabled is (not docs)


@pytest.mark.parametrize("raw", ["*", "http://a.example,*", '["http://a.example", "*"]', " * "])
def test_cors_wildcard_is_refused_with_a_clear_reason(raw: str, config_error: LoadError) -> None:
    message = config_error(BACKEND_CORS_ORIGINS=raw)
    assert bad_variables(message) == ["BACKEND_CORS_ORIGINS"]
    assert '"*" is refused' in message
    assert "listed explicitly" in message


@pytest.mark.parametrize(
    "raw",
    ["10.0.0.0/8, fd00::/8", '["10.0.0.0/8", "fd00::/8"]'],
    ids=["comma", "json"],
)
def test_trusted_proxies_are_parsed_as_networks(raw: str, load: Load) -> None:
    assert load(TRUSTED_PROXY_CIDRS=raw).trusted_proxy_cidrs == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
    ]


def test_a_single_proxy_address_is_a_host_network(load: Load) -> None:
    assert load(TRUSTED_PROXY_CIDRS="192.0.2.10").trusted_proxy_cidrs == [
        ipaddress.ip_network("192.0.2.10/32")
    ]


@pytest.mark.parametrize("raw", ["nope", "10.0.0.1/8", "10.0.0.0/33", "10.0.0.0/8,*"])
def test_bad_trusted_proxies_are_refused(raw: str, config_error: LoadError) -> None:
    message = config_error(TRUSTED_PROXY_CIDRS=raw)
    assert bad_variables(message) == ["TRUSTED_PROXY_CIDRS"]
    assert "CIDR" in message


def test_previous_key_without_a_kid_gets_the_derived_one(load: Load) -> None:
    s = load(**PRODUCTION, JWT_PREVIOUS_KEYS=OLD_KEY)
    assert list(s.jwt_previous_keys) == [derive_key_id(OLD_KEY)]
    assert s.jwt_previous_keys[derive_key_id(OLD_KEY)].get_secret_value() == OLD_KEY


@pytest.mark.parametrize(
    "raw",
    [
        f"2026-01:{OLD_KEY},2025-07:{OLD_KEY[::-1]}",
        json.dumps([f"2026-01:{OLD_KEY}", f"2025-07:{OLD_KEY[::-1]}"]),
        json.dumps({"2026-01": OLD_KEY, "2025-07": OLD_KEY[::-1]}),
    ],
    ids=["comma", "json-list", "json-object"],
)
def test_named_previous_keys(raw: str, load: Load) -> None:
    s = load(**PRODUCTION, JWT_KEY_ID="2026-07", JWT_PREVIOUS_KEYS=raw)
    assert s.signing_key_id == "2026-07"
    keys = {kid: secret.get_secret_value() for kid, secret in s.jwt_previous_keys.items()}
    assert keys == {"2026-01": OLD_KEY, "2025-07": OLD_KEY[::-1]}


def test_weak_previous_key_is_refused_outside_local_without_echoing_it(
    config_error: LoadError,
) -> None:
    message = config_error(**PRODUCTION, JWT_PREVIOUS_KEYS=f"ok:{OLD_KEY},old:changethis")
    assert bad_variables(message) == ["JWT_PREVIOUS_KEYS"]
    assert "entry 1 (kid old)" in message
    assert "at least 32 characters" in message
    assert "changethis" not in message
    assert OLD_KEY not in message


def test_weak_previous_key_is_accepted_locally(load: Load) -> None:
    assert list(load(JWT_PREVIOUS_KEYS="old:changethis").jwt_previous_keys) == ["old"]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (f"bad kid:{OLD_KEY}", "a kid is 1-64 of"),
        (f":{OLD_KEY}", "a kid is 1-64 of"),
        ("a:", "the secret is empty"),
        (f"a:{OLD_KEY},a:{OLD_KEY[::-1]}", "kid a is listed twice"),
        ("{not json", "is not a valid JSON object"),
    ],
)
def test_bad_previous_keys_are_refused(raw: str, why: str, config_error: LoadError) -> None:
    message = config_error(JWT_PREVIOUS_KEYS=raw)
    assert bad_variables(message) == ["JWT_PREVIOUS_KEYS"]
    assert why in message


def test_the_signing_key_cannot_also_be_a_previous_key(config_error: LoadError) -> None:
    message = config_error(**PRODUCTION, JWT_PREVIOUS_KEYS=STRONG_KEY)
    assert bad_variables(message) == ["JWT_PREVIOUS_KEYS"]
    assert "is the kid of SECRET_KEY" in message
    assert STRONG_KEY not in message


def test_bad_key_id_is_refused(config_error: LoadError) -> None:
    assert bad_variables(config_error(JWT_KEY_ID="not ok/..")) == ["JWT_KEY_ID"]


def test_previous_keys_are_hidden_in_repr_and_dumps(load: Load) -> None:
    s = load(JWT_PREVIOUS_KEYS=f"old:{OLD_KEY}")
    assert OLD_KEY not in repr(s)
    assert OLD_KEY not in str(s.model_dump())
