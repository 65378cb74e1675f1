"""Prometheus metrics: names follow <namespace>_<what>_<unit> with base units."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

NAMESPACE = "keelson"
UNMATCHED_ROUTE = "<unmatched>"
# From 5 ms to 5 s: an API answers in milliseconds; anything past seconds is an incident anyway.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HTTP_REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
    namespace=NAMESPACE,
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from request start to the last response byte, by method and route template.",
    ["method", "route"],
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS_S,
)
HTTP_IN_FLIGHT = Gauge(
    "http_requests_in_flight", "HTTP requests being processed now.", namespace=NAMESPACE
)
LOGIN_ATTEMPTS = Counter(
    "login_attempts",
    "Password logins by outcome: success, bad_password, unknown_user, inactive, throttled.",
    ["outcome"],
    namespace=NAMESPACE,
)
REFRESH_TOKEN_REUSE = Counter(
    "refresh_token_reuse",
    "Rotated refresh tokens presented again; each one revoked its whole token family.",
    namespace=NAMESPACE,
)
EMAILS = Counter(
    "emails",
    "Emails by kind (reset_password, new_account, test) and outcome (sent, failed, skipped).",
    ["kind", "outcome"],
    namespace=NAMESPACE,
)
DB_POOL_SIZE = Gauge("db_pool_size", "Configured connection pool size.", namespace=NAMESPACE)
DB_POOL_CHECKED_OUT = Gauge(
    "db_pool_checked_out", "Connections lent to requests right now.", namespace=NAMESPACE
)
DB_POOL_OVERFLOW = Gauge(
    "db_pool_overflow", "Connections open beyond pool_size right now.", namespace=NAMESPACE
)
DB_POOL_TIMEOUTS = Counter(
    "db_pool_timeouts",
    "Requests that waited pool_timeout for a connection and gave up.",
    namespace=NAMESPACE,
)
READY = Gauge("ready", "1 when the last readiness check passed, else 0.", namespace=NAMESPACE)
BUILD_INFO = Gauge(
    "build_info",
    "Always 1; the labels say which build runs.",
    ["version", "commit"],
    namespace=NAMESPACE,
)
