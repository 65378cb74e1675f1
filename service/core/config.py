"""Typed configuration: every setting the service reads, validated once at start-up."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
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
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
type IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Environment(StrEnum):
    LOCAL = "local"
    STAGING = "staging"
    PRODUCTION = "production"


class ConfigError(RuntimeError):
    """Raised with one human-readable message naming every bad variable."""


def weak_secret_reason(key: str, environment: Environment) -> str | None:
    """Why a signing key is unacceptable in this environment, or None when it is fine."""
    if environment is Environment.LOCAL:
        return None
    if (
        key.lower() in PLACEHOLDER_SECRETS
        or len(key) < MIN_SECRET_KEY_LENGTH
        or len(set(key)) < MIN_SECRET_KEY_DISTINCT_CHARS
    ):
        return (
            f"must be a random value of at least {MIN_SECRET_KEY_LENGTH} characters when"
            f" ENVIRONMENT={environment.value} (generate one with:"
            " python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
    return None


def derive_key_id(secret: str) -> str:
    """A stable, non-secret name for a key: operators roll keys without inventing names."""
    return hashlib.sha256(b"keelson-jwt-kid:" + secret.encode()).hexdigest()[:16]


def _split_list(value: Any) -> Any:
    """A comma-separated string or a JSON list (NoDecode hands over the raw string)."""
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("["):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError("is not a valid JSON list") from exc
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


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


def _secret_text(value: Any) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value).strip()


def _split_key_entry(entry: str) -> tuple[str, str]:
    """An entry `kid:secret` names its key; a bare secret (no colon) gets the derived kid."""
    kid, separator, secret = entry.partition(":")
    if not separator:
        return derive_key_id(entry), entry
    return kid.strip(), secret.strip()


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
    docs_enabled: bool = Field(default=None, validate_default=True)  # unset: on only in local
    git_commit: str = Field(default="unknown", max_length=64)  # set by the image build

    # -- database
    database_url: str | None = None
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=5, ge=0, le=200)
    # How long the pool keeps the overflow connections it no longer needs: closed once more than
    # db_pool_size connections have been idle for this long; 0 closes one as soon as it is
    # returned with nobody waiting (SQLAlchemy's QueuePool). core/pool.py.
    db_pool_overflow_idle_s: float = Field(default=30.0, ge=0, le=3600)
    db_pool_timeout_s: float = Field(default=2.0, gt=0, le=60)
    db_pool_recycle_s: int = Field(default=1800, ge=-1, le=86_400)
    # Not SQLAlchemy's pre-ping: true pings only a connection idle for >= 1 s (the fixed
    # PING_IF_IDLE_FOR_S in core/db.py) before lending it; false never pings.
    db_pool_pre_ping: bool = True
    db_statement_timeout_ms: int = Field(default=5000, ge=0, le=600_000)
    db_connect_timeout_s: float = Field(default=2.0, gt=0, le=60)
    # "pgbouncer": the server sits behind a transaction-mode pooler (no startup parameters, no
    # prepared statements that outlive a transaction); see docs/kubernetes.md.
    db_pooler: Literal["none", "pgbouncer"] = "none"

    # -- migrations (`keelson migrate`): the URL of a role that may run DDL, straight to
    # PostgreSQL (never through a transaction pooler); unset: DATABASE_URL.
    migration_database_url: str | None = None
    # How long one migration statement waits for a table lock before it fails (and the hook
    # Job retries), instead of queueing every later query on that table behind it.
    migration_lock_timeout_ms: int = Field(default=5000, ge=0, le=600_000)

    # -- idempotency: how long an Idempotency-Key (POST /items/) keeps its first answer
    idempotency_key_ttl_s: int = Field(default=86_400, ge=60, le=30 * 86_400)

    # -- tokens
    secret_key: SecretStr = Field(default=None, validate_default=True)
    jwt_key_id: str | None = Field(default=None, pattern=_KEY_ID.pattern)
    # Keys that still verify (never sign): "kid:secret" or a bare old SECRET_KEY (kid derived).
    jwt_previous_keys: Annotated[dict[str, SecretStr], NoDecode] = {}
    access_token_expire_minutes: int = Field(default=15, ge=1, le=60 * 24)
    refresh_token_expire_days: int = Field(default=14, ge=1, le=365)
    email_reset_token_expire_hours: int = Field(default=1, ge=1, le=48)
    jwt_issuer: str = Field(default="keelson", min_length=1)
    jwt_audience: str = Field(default="keelson-api", min_length=1)

    # -- login throttling (shared by every replica through PostgreSQL)
    login_throttle_window_s: int = Field(default=900, ge=1, le=86_400)
    login_max_failures_per_account: int = Field(default=10, ge=1, le=10_000)
    login_max_failures_per_ip: int = Field(default=100, ge=1, le=1_000_000)
    # Peers whose X-Forwarded-For names the client (comma-separated or JSON list of CIDRs).
    trusted_proxy_cidrs: Annotated[list[IPNetwork], NoDecode] = []

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
    # Prometheus metrics are served on their own port, never on the API port the ingress routes.
    metrics_port: int = Field(default=9090, ge=1, le=65_535)
    forwarded_allow_ips: str = "127.0.0.1"
    shutdown_timeout_s: float = Field(default=20.0, ge=0, le=600)
    max_request_body_bytes: int = Field(default=1_048_576, ge=1024, le=104_857_600)
    readiness_timeout_s: float = Field(default=1.0, gt=0, le=30)
    hsts_enabled: bool = False  # true only when clients reach us over TLS (at the ingress)
    hsts_max_age_s: int = Field(default=31_536_000, ge=0, le=63_072_000)

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

    @field_validator("database_url", "migration_database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        return None if value is None else normalize_database_url(value)

    @field_validator("backend_cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        """Accept a comma-separated list as well as JSON, as the template does."""
        origins = _split_list(value)
        if isinstance(origins, list) and any(str(o).strip() == "*" for o in origins):
            raise ValueError(
                '"*" is refused: browsers send credentials (Authorization) to the API, so every'
                " allowed origin must be listed explicitly"
            )
        return origins

    @field_validator("metrics_port")
    @classmethod
    def _metrics_port_apart(cls, value: int, info: ValidationInfo) -> int:
        if value == info.data.get("server_port"):
            raise ValueError("must differ from SERVER_PORT: metrics never share the API port")
        return value

    @field_validator("trusted_proxy_cidrs", mode="before")
    @classmethod
    def _parse_networks(cls, value: Any) -> Any:
        networks = _split_list(value)
        if not isinstance(networks, list):
            return networks
        parsed: list[IPNetwork] = []
        for index, raw in enumerate(networks):
            try:
                parsed.append(ipaddress.ip_network(str(raw).strip()))
            except ValueError as exc:
                raise ValueError(
                    f"entry {index} is not an IP network in CIDR form (e.g. 10.0.0.0/8): {exc}"
                ) from None
        return parsed

    @field_validator("docs_enabled", mode="before")
    @classmethod
    def _docs_default_by_environment(cls, value: Any, info: ValidationInfo) -> Any:
        """Unset: interactive docs locally, none in staging and production (less to probe)."""
        if value is None:
            return info.data.get("environment", Environment.LOCAL) is Environment.LOCAL
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
        reason = weak_secret_reason(key, environment)
        if reason is not None:
            raise ValueError(reason)
        return value

    @field_validator("jwt_previous_keys", mode="before")
    @classmethod
    def _parse_previous_keys(cls, value: Any, info: ValidationInfo) -> Any:
        """Entries "kid:secret" or "secret" (kid derived as for SECRET_KEY), comma-separated or
        a JSON list; a JSON object {kid: secret} is accepted too. Same strength rules as
        SECRET_KEY, and no kid may name two keys."""
        if isinstance(value, str) and value.strip().startswith("{"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError("is not a valid JSON object") from exc
        if isinstance(value, dict):
            entries = [(str(kid), _secret_text(secret)) for kid, secret in value.items()]
        else:
            items = _split_list(value)
            if not isinstance(items, list):
                return value
            entries = [_split_key_entry(_secret_text(item)) for item in items]
        environment = info.data.get("environment", Environment.LOCAL)
        keys: dict[str, SecretStr] = {}
        for index, (kid, secret) in enumerate(entries):
            if not _KEY_ID.match(kid):
                raise ValueError(f"entry {index}: a kid is 1-64 of A-Z a-z 0-9 . _ -")
            reason = weak_secret_reason(secret, environment)
            if not secret or reason is not None:
                raise ValueError(f"entry {index} (kid {kid}): {reason or 'the secret is empty'}")
            if kid in keys:
                raise ValueError(f"entry {index}: kid {kid} is listed twice")
            keys[kid] = SecretStr(secret)
        signing = info.data.get("secret_key")
        if isinstance(signing, SecretStr):
            signing_kid = info.data.get("jwt_key_id") or derive_key_id(signing.get_secret_value())
            if signing_kid in keys:
                raise ValueError(
                    f"kid {signing_kid} is the kid of SECRET_KEY: a verification key needs its"
                    " own kid (remove the current key from this list)"
                )
        return keys

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

    @property
    def signing_key_id(self) -> str:
        """The kid of SECRET_KEY: JWT_KEY_ID, or derived from the key itself."""
        return self.jwt_key_id or derive_key_id(self.secret_key.get_secret_value())


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
