"""Settings: read from the environment, fail fast naming every bad variable, refuse weak secrets."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from service.core.config import ConfigError, Settings, load_settings

STRONG_KEY = "k7Qx-2vN_p9LmZ4rT8wYbC3dF6gH1jK5sU0eA"  # 37 chars, 36 distinct
STRONG_PASSWORD = "a-real-admin-password-7"


type Load = Callable[..., Settings]
type LoadError = Callable[..., str]


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Load:
    """load(NAME=value, ...): Settings from exactly these variables (nothing from the machine).

    Every setting's variable is removed first and the working directory is an empty temp dir,
    so neither the machine's environment nor a stray .env file leaks in.
    """
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)

    def load_with(**env: str) -> Settings:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return load_settings()

    return load_with


@pytest.fixture
def config_error(load: Load) -> LoadError:
    """config_error(NAME=value, ...): the ConfigError message these variables produce."""

    def error_of(**env: str) -> str:
        with pytest.raises(ConfigError) as raised:
            load(**env)
        return str(raised.value)

    return error_of


def bad_variables(message: str) -> list[str]:
    """The variables a ConfigError names, one per '  - NAME: why' or '  - NAME[i]: why' line."""
    lines = message.splitlines()
    assert lines[0] == "Invalid configuration:"
    return [line.removeprefix("  - ").split(":", 1)[0].split("[", 1)[0] for line in lines[1:]]


def test_every_bad_variable_is_named_in_one_error(config_error: LoadError) -> None:
    message = config_error(
        ENVIRONMENT="production",
        DATABASE_URL="mysql://app:pw@db:3306/app",
        DB_POOL_SIZE="0",
        FIRST_SUPERUSER_PASSWORD=STRONG_PASSWORD,
    )
    assert bad_variables(message) == ["DATABASE_URL", "DB_POOL_SIZE", "SECRET_KEY"]
    assert "must be a PostgreSQL URL (got scheme 'mysql')" in message
    assert "SECRET_KEY: is required when ENVIRONMENT=production" in message


def test_config_error_never_echoes_secret_values(config_error: LoadError) -> None:
    message = config_error(
        ENVIRONMENT="production",
        DATABASE_URL="mysql://app:hunter2-db-password@db:3306/app",
        SECRET_KEY="short-secret-value",
        SMTP_PORT="not-a-port",
        FIRST_SUPERUSER_PASSWORD="changethis",
    )
    assert set(bad_variables(message)) == {
        "DATABASE_URL",
        "SECRET_KEY",
        "SMTP_PORT",
        "FIRST_SUPERUSER_PASSWORD",
    }
    for secret in ("hunter2-db-password", "short-secret-value", "changethis"):
        assert secret not in message


@pytest.mark.parametrize("environment", ["staging", "production"])
@pytest.mark.parametrize(
    "key",
    [
        "changethis",
        "CHANGEME",
        "secret",
        "Xy7#kP2m-q",  # random but short
        "ab" * 20,  # long, two distinct characters
        "0123456789" * 4,  # long, ten distinct characters
        "x" * 31 + "y",
    ],
    ids=["placeholder", "placeholder-upper", "secret", "short", "two-chars", "digits", "typed"],
)
def test_weak_secret_key_is_refused_outside_local(
    environment: str, key: str, config_error: LoadError
) -> None:
    message = config_error(
        ENVIRONMENT=environment, SECRET_KEY=key, FIRST_SUPERUSER_PASSWORD=STRONG_PASSWORD
    )
    assert bad_variables(message) == ["SECRET_KEY"]
    assert f"at least 32 characters when ENVIRONMENT={environment}" in message


@pytest.mark.parametrize("key", ["changethis", "ab" * 20, "short"])
def test_weak_secret_key_is_accepted_locally(key: str, load: Load) -> None:
    settings = load(ENVIRONMENT="local", SECRET_KEY=key)
    assert settings.secret_key.get_secret_value() == key


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_strong_secret_key_is_accepted_outside_local(environment: str, load: Load) -> None:
    key = secrets.token_urlsafe(48)
    settings = load(
        ENVIRONMENT=environment, SECRET_KEY=key, FIRST_SUPERUSER_PASSWORD=STRONG_PASSWORD
    )
    assert settings.secret_key.get_secret_value() == key
    assert settings.environment == environment


def test_missing_secret_key_locally_gets_a_random_one_per_process(load: Load) -> None:
    first, second = load(), load()
    key = first.secret_key.get_secret_value()
    assert len(key) >= 32
    assert key != second.secret_key.get_secret_value()


def test_secret_key_is_hidden_in_repr_and_dumps(load: Load) -> None:
    settings = load(SECRET_KEY=STRONG_KEY)
    assert STRONG_KEY not in repr(settings)
    assert STRONG_KEY not in str(settings.model_dump())


def test_placeholder_superuser_password_is_refused_outside_local(config_error: LoadError) -> None:
    message = config_error(ENVIRONMENT="production", SECRET_KEY=STRONG_KEY)
    assert bad_variables(message) == ["FIRST_SUPERUSER_PASSWORD"]


def test_placeholder_superuser_password_is_fine_locally(load: Load) -> None:
    assert load().first_superuser_password.get_secret_value() == "changethis"


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("postgres://u:p@db:5432/app", "postgresql+asyncpg://u:p@db:5432/app"),
        ("postgresql://u:p@db/app", "postgresql+asyncpg://u:p@db/app"),
        ("postgresql+psycopg://u:p@db/app", "postgresql+asyncpg://u:p@db/app"),
        ("postgresql+asyncpg://u:p@db/app", "postgresql+asyncpg://u:p@db/app"),
        (
            "postgres://u:p%40ss@db/app?ssl=require",
            "postgresql+asyncpg://u:p%40ss@db/app?ssl=require",
        ),
    ],
)
def test_postgres_urls_are_normalised_to_asyncpg(raw: str, normalised: str, load: Load) -> None:
    settings = load(DATABASE_URL=raw)
    assert settings.database_url == normalised
    assert settings.sqlalchemy_url.drivername == "postgresql+asyncpg"


def test_url_password_survives_normalisation(load: Load) -> None:
    settings = load(DATABASE_URL="postgres://u:p%40ss@db/app")
    assert settings.sqlalchemy_url.password == "p@ss"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("mysql://u:p@db/app", "must be a PostgreSQL URL"),
        ("sqlite:///app.db", "must be a PostgreSQL URL"),
        ("postgresql://u:p@/app", "must name a host"),
        ("postgresql://u:p@db", "must name a database"),
        ("not a url", "is not a valid database URL"),
    ],
)
def test_bad_database_url_is_refused(raw: str, why: str, config_error: LoadError) -> None:
    message = config_error(DATABASE_URL=raw)
    assert bad_variables(message) == ["DATABASE_URL"]
    assert why in message


def test_missing_database_url_fails_when_the_database_is_needed(load: Load) -> None:
    settings = load()
    with pytest.raises(ConfigError, match="DATABASE_URL: is required"):
        _ = settings.sqlalchemy_url


@pytest.mark.parametrize(
    "raw",
    [
        "http://a.example, https://b.example",
        "http://a.example,https://b.example,",
        '["http://a.example", "https://b.example"]',
        '  ["http://a.example","https://b.example"]  ',
    ],
    ids=["comma", "comma-trailing", "json", "json-padded"],
)
def test_cors_origins_accept_comma_and_json_lists(raw: str, load: Load) -> None:
    settings = load(BACKEND_CORS_ORIGINS=raw, FRONTEND_HOST="https://app.example/")
    assert settings.cors_origins == [
        "http://a.example",
        "https://b.example",
        "https://app.example",
    ]


def test_cors_origins_default_to_the_frontend_only(load: Load) -> None:
    assert load().cors_origins == ["http://localhost:5173"]


@pytest.mark.parametrize(
    "raw",
    ["not-a-url", '["http://a.example", 42, "nope"]', '["http://a.example"'],
    ids=["not-a-url", "json-bad-entry", "json-broken"],
)
def test_bad_cors_origins_are_refused(raw: str, config_error: LoadError) -> None:
    assert set(bad_variables(config_error(BACKEND_CORS_ORIGINS=raw))) == {"BACKEND_CORS_ORIGINS"}


def test_bad_list_entry_is_named_by_variable_and_position(config_error: LoadError) -> None:
    message = config_error(BACKEND_CORS_ORIGINS="http://a.example,nope")
    assert "  - BACKEND_CORS_ORIGINS[1]: Input should be a valid URL" in message


@pytest.mark.parametrize(
    ("raw", "level"), [("debug", "DEBUG"), ("Warning", "WARNING"), ("INFO", "INFO")]
)
def test_log_level_is_case_insensitive(raw: str, level: str, load: Load) -> None:
    assert load(LOG_LEVEL=raw).log_level == level


def test_unknown_log_level_is_refused(config_error: LoadError) -> None:
    assert bad_variables(config_error(LOG_LEVEL="verbose")) == ["LOG_LEVEL"]


def test_defaults_match_the_documented_contract(load: Load) -> None:
    s = load()
    assert (s.environment, s.project_name, s.docs_enabled) == ("local", "Keelson", True)
    assert (s.db_pool_size, s.db_max_overflow, s.db_pool_timeout_s) == (10, 5, 2.0)
    assert (s.db_pool_recycle_s, s.db_pool_pre_ping) == (1800, True)
    assert (s.db_statement_timeout_ms, s.db_connect_timeout_s) == (5000, 2.0)
    assert (s.argon2_memory_kib, s.argon2_time_cost, s.argon2_parallelism) == (65_536, 3, 4)
    assert (s.log_level, s.log_format) == ("INFO", "json")
    assert (s.server_host, s.server_port, s.forwarded_allow_ips) == (
        "0.0.0.0",  # noqa: S104 - the documented default for a container
        8000,
        "127.0.0.1",
    )
    assert (s.shutdown_timeout_s, s.readiness_timeout_s) == (20.0, 1.0)
    assert s.database_url is None
    assert not s.emails_enabled


def test_settings_are_read_from_upper_case_variables(load: Load) -> None:
    s = load(
        DB_POOL_SIZE="3",
        DB_POOL_PRE_PING="false",
        DB_POOL_TIMEOUT_S="0.5",
        ACCESS_TOKEN_EXPIRE_MINUTES="15",
        DOCS_ENABLED="0",
        SMTP_HOST="mail.example",
    )
    assert (s.db_pool_size, s.db_pool_pre_ping, s.db_pool_timeout_s) == (3, False, 0.5)
    assert (s.access_token_expire_minutes, s.docs_enabled) == (15, False)
    assert s.emails_enabled


def test_empty_variables_count_as_unset(load: Load) -> None:
    assert load(DB_POOL_SIZE="", LOG_LEVEL="").db_pool_size == 10


def test_dot_env_file_is_read_and_the_environment_wins(tmp_path: Path, load: Load) -> None:
    (tmp_path / ".env").write_text("LOG_LEVEL=debug\nDB_POOL_SIZE=7\n")
    settings = load(DB_POOL_SIZE="4")
    assert (settings.log_level, settings.db_pool_size) == ("DEBUG", 4)


def run_keelson(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("keelson")
    assert script.exists(), f"the console script is not installed next to {sys.executable}"
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd)}
    return subprocess.run(
        [str(script), *args],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_exits_2_naming_every_bad_variable(tmp_path: Path) -> None:
    result = run_keelson(
        "check-config",
        env={
            "ENVIRONMENT": "production",
            "DATABASE_URL": "mysql://app:hunter2-db-password@db/app",
            "DB_POOL_SIZE": "0",
        },
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("keelson: Invalid configuration:")
    for name in ("DATABASE_URL", "DB_POOL_SIZE", "SECRET_KEY", "FIRST_SUPERUSER_PASSWORD"):
        assert f"  - {name}: " in result.stderr
    assert "hunter2-db-password" not in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_passes_a_good_production_env(tmp_path: Path) -> None:
    result = run_keelson(
        "check-config",
        env={
            "ENVIRONMENT": "production",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "FIRST_SUPERUSER_PASSWORD": STRONG_PASSWORD,
            "DATABASE_URL": "postgres://app:pw@db:5432/app",
        },
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout
