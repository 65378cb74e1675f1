"""Typed configuration: every setting the service reads, validated once at start-up."""

from __future__ import annotations

import json
import secrets
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    EmailStr,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

# Values that appear in templates, docs and tutorials; never acceptable outside local development.
PLACEHOLDER_SECRETS = frozenset({"changethis", "changeme", "secret", "password", "dev", "test"})
MIN_SECRET_KEY_LENGTH = 32
MIN_SECRET_KEY_DISTINCT_CHARS = 12  # rejects "aaaa…" and other keys a human typed
_POSTGRES_DRIVERS = frozenset(
    {"postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg"}
)


class Environment(StrEnum):
    LOCAL = "local"
    STAGING = "staging"
    PRODUCTION = "production"


class ConfigError(RuntimeError):
    """Raised with one human-readable message naming every bad variable."""


def normalize_database_url(raw: str) -> str:
    """Accept the URL forms operators paste (postgres://, postgresql://); pin asyncpg."""
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise ValueError("is not a valid database URL") from exc
    if url.drivername not in _POSTGRES_DRIVERS:
        raise ValueError(f"must be a PostgreSQL URL (got scheme {url.drivername!r})")
    if not url.host and not (url.query.get("host")):
        raise ValueError("must name a host")
    if not url.database:
        raise ValueError("must name a database")
    return url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


class Settings(BaseSettings):
    """All configuration. Field names map to upper-case environment variables of the same name."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )

    # -- identity and environment
    project_name: str = Field(default="Keelson", min_length=1, max_length=100)
    environment: Environment = Environment.LOCAL
    docs_enabled: bool = True
    git_commit: str = Field(default="unknown", max_length=64)  # set by the image build

    # -- database
    database_url: str | None = None
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=5, ge=0, le=200)
    db_pool_timeout_s: float = Field(default=2.0, gt=0, le=60)
    db_pool_recycle_s: int = Field(default=1800, ge=-1, le=86_400)
    db_pool_pre_ping: bool = True
    db_statement_timeout_ms: int = Field(default=5000, ge=0, le=600_000)
    db_connect_timeout_s: float = Field(default=2.0, gt=0, le=60)

    # -- idempotency: how long an Idempotency-Key (POST /items/) keeps its first answer
    idempotency_key_ttl_s: int = Field(default=86_400, ge=60, le=30 * 86_400)

    # -- tokens
    secret_key: SecretStr = Field(default=None, validate_default=True)
    access_token_expire_minutes: int = Field(default=30, ge=1, le=60 * 24 * 8)
    email_reset_token_expire_hours: int = Field(default=1, ge=1, le=48)
    jwt_issuer: str = Field(default="keelson", min_length=1)
    jwt_audience: str = Field(default="keelson-api", min_length=1)

    # -- passwords (argon2id); defaults match OWASP guidance and the template's cost
    argon2_memory_kib: int = Field(default=65_536, ge=8, le=4_194_304)
    argon2_time_cost: int = Field(default=3, ge=1, le=20)
    argon2_parallelism: int = Field(default=4, ge=1, le=64)
    argon2_max_concurrency: int = Field(default=2, ge=1, le=64)

    # -- first superuser (created by `keelson seed`)
    first_superuser: EmailStr = "admin@example.com"
    first_superuser_password: SecretStr = Field(
        default=SecretStr("changethis"), validate_default=True
    )

    # -- browser clients
    frontend_host: AnyHttpUrl = AnyHttpUrl("http://localhost:5173")
    backend_cors_origins: Annotated[list[AnyHttpUrl], NoDecode] = []

    # -- email (password recovery); sending is off until SMTP_HOST is set
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65_535)
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: bool = True
    smtp_ssl: bool = False
    smtp_timeout_s: float = Field(default=10.0, gt=0, le=120)
    emails_from_email: EmailStr = "noreply@example.com"
    emails_from_name: str | None = None

    # -- HTTP server
    server_host: str = "0.0.0.0"  # noqa: S104  # nosec B104 - a container listens on all interfaces
    server_port: int = Field(default=8000, ge=1, le=65_535)
    forwarded_allow_ips: str = "127.0.0.1"
    shutdown_timeout_s: float = Field(default=20.0, ge=0, le=600)
    max_request_body_bytes: int = Field(default=1_048_576, ge=1024, le=104_857_600)
    readiness_timeout_s: float = Field(default=1.0, gt=0, le=30)

    # -- tracing (OpenTelemetry); the exporter reads the standard OTEL_EXPORTER_OTLP_* variables
    otel_traces_exporter: Literal["none", "otlp", "console"] = "none"
    otel_service_name: str = Field(default="keelson", min_length=1, max_length=100)

    # -- logs
    access_log_enabled: bool = True
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        return None if value is None else normalize_database_url(value)

    @field_validator("backend_cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        """Accept a comma-separated list as well as JSON, as the template does."""
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                # NoDecode hands over the raw string, and a str is not a list: parse it here.
                try:
                    return json.loads(value)
                except json.JSONDecodeError as exc:
                    raise ValueError("is not a valid JSON list") from exc
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("secret_key", mode="before")
    @classmethod
    def _require_strong_secret_key(cls, value: Any, info: ValidationInfo) -> Any:
        """Local runs get a random per-process key; everywhere else a real key is mandatory."""
        environment = info.data.get("environment", Environment.LOCAL)
        if value is None:
            if environment is Environment.LOCAL:
                return secrets.token_urlsafe(48)
            raise ValueError(f"is required when ENVIRONMENT={environment.value}")
        key = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        if environment is not Environment.LOCAL and (
            key.lower() in PLACEHOLDER_SECRETS
            or len(key) < MIN_SECRET_KEY_LENGTH
            or len(set(key)) < MIN_SECRET_KEY_DISTINCT_CHARS
        ):
            raise ValueError(
                f"must be a random value of at least {MIN_SECRET_KEY_LENGTH} characters when"
                f" ENVIRONMENT={environment.value} (generate one with:"
                " python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        return value

    @field_validator("first_superuser_password")
    @classmethod
    def _refuse_placeholder_password(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        environment = info.data.get("environment", Environment.LOCAL)
        password = value.get_secret_value()
        if not 8 <= len(password) <= 128:
            raise ValueError("must be 8 to 128 characters long")
        if environment is not Environment.LOCAL and password.lower() in PLACEHOLDER_SECRETS:
            raise ValueError(
                f"a placeholder password is refused when ENVIRONMENT={environment.value}"
            )
        return value

    @cached_property
    def sqlalchemy_url(self) -> URL:
        """The database URL; callers that need one go through here so the error is uniform."""
        if self.database_url is None:
            raise ConfigError(
                "DATABASE_URL: is required (e.g. postgresql://user:pass@host:5432/db)"
            )
        return make_url(self.database_url)

    @property
    def cors_origins(self) -> list[str]:
        """Origins allowed by CORS: the configured list plus the frontend itself."""
        origins = [str(origin).rstrip("/") for origin in self.backend_cors_origins]
        return [*origins, str(self.frontend_host).rstrip("/")]

    @property
    def emails_enabled(self) -> bool:
        return self.smtp_host is not None


def format_validation_error(error: ValidationError) -> str:
    """One message naming every bad variable, so an operator fixes them all in one go."""
    lines = ["Invalid configuration:"]
    for item in error.errors():
        # loc is (field, *position inside it): name the real variable, e.g. BACKEND_CORS_ORIGINS[1]
        field, *position = item["loc"] or ("settings",)
        name = str(field).upper() + "".join(f"[{part}]" for part in position)
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  - {name}: {message}")
    return "\n".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment or raise ConfigError with a readable message."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None
