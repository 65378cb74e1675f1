"""What the server pods get: hardening, probes on real endpoints, settings, graceful shutdown."""

from __future__ import annotations

import re
from typing import Any

import pytest

from service.core.config import Settings
from tests.chart.chartlib import (
    Chart,
    Rendered,
    containers,
    pod_spec,
    schema_error_mentions,
    workloads,
)

# Settings the shared contract says the chart must deliver to the pods (notes/CONTRACT.md), and
# those the service gained since: tokens and key roll-over, login throttling, client addresses,
# HSTS, idempotency, request limits, tracing.
CONTRACT_SETTINGS = {
    "ENVIRONMENT", "PROJECT_NAME", "DATABASE_URL", "SECRET_KEY", "ACCESS_TOKEN_EXPIRE_MINUTES",
    "FIRST_SUPERUSER", "FIRST_SUPERUSER_PASSWORD", "BACKEND_CORS_ORIGINS", "FRONTEND_HOST",
    "DB_POOL_SIZE", "DB_MAX_OVERFLOW", "DB_POOL_TIMEOUT_S", "DB_POOL_RECYCLE_S", "DB_POOL_PRE_PING",
    "DB_STATEMENT_TIMEOUT_MS", "DB_CONNECT_TIMEOUT_S", "ARGON2_MEMORY_KIB", "ARGON2_TIME_COST",
    "ARGON2_PARALLELISM", "LOG_LEVEL", "LOG_FORMAT", "SERVER_HOST", "SERVER_PORT",
    "FORWARDED_ALLOW_IPS", "SHUTDOWN_TIMEOUT_S", "READINESS_TIMEOUT_S", "DOCS_ENABLED",
    "REFRESH_TOKEN_EXPIRE_DAYS", "JWT_KEY_ID", "JWT_PREVIOUS_KEYS", "LOGIN_THROTTLE_WINDOW_S",
    "LOGIN_MAX_FAILURES_PER_ACCOUNT", "LOGIN_MAX_FAILURES_PER_IP", "TRUSTED_PROXY_CIDRS",
    "HSTS_ENABLED", "HSTS_MAX_AGE_S", "IDEMPOTENCY_KEY_TTL_S", "MAX_REQUEST_BODY_BYTES",
    "OTEL_SERVICE_NAME", "OTEL_TRACES_EXPORTER",
}  # fmt: skip

# Settings fields the chart deliberately does not set, and why. Everything else must reach the pods.
NOT_DELIVERED = {
    "GIT_COMMIT": "baked into the image by its build (Dockerfile ARG GIT_COMMIT); a chart value"
    " could only make keelson_build_info lie about the running code",
    "MIGRATION_DATABASE_URL": "only the migration hook Job gets it (a DDL-capable role); the"
    " servers run as the application role",
}


def env_names(rendered: Rendered, container: dict[str, Any]) -> set[str]:
    """Variables a container receives: its env entries plus the keys of ConfigMaps it imports."""
    names = {env["name"] for env in container.get("env", [])}
    for source in container.get("envFrom", []):
        names |= set(rendered.one("ConfigMap", source["configMapRef"]["name"])["data"])
    return names


def server(rendered: Rendered) -> dict[str, Any]:
    return containers(rendered.deployment)[0]


def settings_env_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


async def service_status(path: str) -> int:
    """Status the real app answers a GET with (no lifespan, so no database): 404 means no route."""
    from service.main import create_app
    from tests.support.clients import asgi_client

    async with asgi_client(
        create_app(), raise_app_exceptions=False, base_url="http://keelson"
    ) as client:
        return (await client.get(path)).status_code


# libpq variables the chart sets for database TLS (database.tls): asyncpg reads them itself when
# DATABASE_URL has no ssl= parameter, so they are no Settings fields.
LIBPQ_VARIABLES = {"PGSSLMODE", "PGSSLROOTCERT"}

ALL_ON = {
    "smtp": {"host": "smtp.example.org"},
    "database": {"tls": {"sslmode": "verify-full", "caSecret": {"name": "pg-ca"}}},
    "config": {"otel": {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4318"}},
}


def test_every_env_name_is_a_settings_field(chart: Chart) -> None:
    rendered = chart.render(ALL_ON)
    names = env_names(rendered, server(rendered))
    unknown = {
        n for n in names - settings_env_names() - LIBPQ_VARIABLES if not n.startswith("OTEL_")
    }
    assert not unknown, f"the service has no setting named {sorted(unknown)}"


def test_every_contract_setting_reaches_the_pods(default_render: Rendered) -> None:
    names = env_names(default_render, server(default_render))
    assert names >= CONTRACT_SETTINGS, sorted(CONTRACT_SETTINGS - names)
    assert settings_env_names() >= CONTRACT_SETTINGS


def test_every_settings_field_reaches_the_pods_unless_listed(chart: Chart) -> None:
    """A setting added to the service fails here until the chart delivers it (or says why not)."""
    rendered = chart.render(ALL_ON)
    missing = settings_env_names() - env_names(rendered, server(rendered))
    assert missing == set(NOT_DELIVERED), sorted(missing - set(NOT_DELIVERED))


def test_pool_settings_come_from_values(chart: Chart) -> None:
    rendered = chart.render({"database": {"poolSize": 7, "maxOverflow": 3}})
    data = rendered.one("ConfigMap", "keelson")["data"]
    assert (data["DB_POOL_SIZE"], data["DB_MAX_OVERFLOW"]) == ("7", "3")


def test_the_rendered_config_is_accepted_by_the_service_settings(
    default_render: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap plus Secret, as environment variables, load without a validation error."""
    env = dict(default_render.one("ConfigMap", "keelson")["data"])
    env.update(default_render.one("Secret", "keelson")["stringData"])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.environment.value == "production"
    assert settings.db_pool_size == 10
    assert settings.shutdown_timeout_s == 20


SECRET_SETTINGS = {
    "DATABASE_URL", "SECRET_KEY", "FIRST_SUPERUSER_PASSWORD", "SMTP_PASSWORD", "JWT_PREVIOUS_KEYS",
}  # fmt: skip


def test_secrets_never_sit_in_the_configmap(default_render: Rendered) -> None:
    data = default_render.one("ConfigMap", "keelson")["data"]
    assert not SECRET_SETTINGS & set(data)


def test_every_secret_setting_comes_from_the_secret(default_render: Rendered) -> None:
    from_secret = {
        env["name"]
        for env in server(default_render)["env"]
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    assert from_secret == SECRET_SETTINGS


def test_secret_env_comes_from_the_release_secret_or_existing_secret(chart: Chart) -> None:
    for values, required, secret in [
        ({}, True, "keelson"),
        ({"secret": {"existingSecret": "vault-synced"}}, False, "vault-synced"),
    ]:
        rendered = chart.render(values, with_required=required)
        refs = {
            env["valueFrom"]["secretKeyRef"]["name"]
            for env in server(rendered)["env"]
            if "secretKeyRef" in env.get("valueFrom", {})
        }
        assert refs == {secret}


async def test_probes_use_the_service_endpoints(default_render: Rendered) -> None:
    container = server(default_render)
    paths = {
        kind: container[kind]["httpGet"]["path"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert paths == {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    assert {c["httpGet"]["port"] for c in (container[k] for k in paths)} == {"http"}
    assert await service_status("/healthz") == 200
    assert await service_status("/readyz") not in {404, 405}


def test_container_port_is_named_http_and_matches_server_port(default_render: Rendered) -> None:
    assert server(default_render)["ports"][0] == {
        "name": "http",
        "containerPort": 8000,
        "protocol": "TCP",
    }
    assert default_render.one("ConfigMap", "keelson")["data"]["SERVER_PORT"] == "8000"
    assert default_render.one("Service", "keelson")["spec"]["ports"][0]["targetPort"] == "http"


def test_readiness_probe_outlasts_the_readiness_check(chart: Chart) -> None:
    error = chart.render_error({"config": {"readinessTimeoutSeconds": 2}})
    assert "probes.readiness.timeoutSeconds (2) must be greater than" in error


def test_grace_period_covers_prestop_and_shutdown(chart: Chart) -> None:
    """preStop sleep + SHUTDOWN_TIMEOUT_S + margin; the grace clock includes the preStop hook."""
    rendered = chart.render(
        {
            "lifecycle": {
                "preStopSleepSeconds": 7,
                "shutdownTimeoutSeconds": 25,
                "terminationMarginSeconds": 3,
            },
            "minReadySeconds": 35,  # still one terminating pod at a time in the budget
        }
    )
    spec = pod_spec(rendered.deployment)
    assert spec["terminationGracePeriodSeconds"] == 7 + 25 + 3
    assert server(rendered)["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "7"]}}
    assert rendered.one("ConfigMap", "keelson")["data"]["SHUTDOWN_TIMEOUT_S"] == "25"


def test_default_grace_period_is_thirty_seconds(default_render: Rendered) -> None:
    assert pod_spec(default_render.deployment)["terminationGracePeriodSeconds"] == 5 + 20 + 5


def test_rollout_keeps_capacity(default_render: Rendered) -> None:
    strategy = default_render.deployment["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


@pytest.mark.parametrize(
    "values",
    [{}, {"secret": {"existingSecret": "creds"}}],
    ids=["chart-secret", "existing-secret"],
)
def test_every_keelson_container_is_hardened(chart: Chart, values: dict[str, Any]) -> None:
    rendered = chart.render(values, with_required=not values)
    for workload in workloads(rendered):
        spec = pod_spec(workload)
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        assert spec["automountServiceAccountToken"] is False, where
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["runAsUser"] == 10001, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in containers(workload):
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["privileged"] is False, where
            assert ctx["capabilities"] == {"drop": ["ALL"]}, where
            assert ctx["runAsNonRoot"] is True, where
            assert {"requests", "limits"} <= set(container["resources"]), where
            assert container["resources"]["limits"]["memory"], where
            if workload["kind"] != "Pod":
                mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
                assert mounts == {"/tmp": "tmp"}, where


def test_tmp_is_the_only_writable_path(default_render: Rendered) -> None:
    volumes = pod_spec(default_render.deployment)["volumes"]
    assert volumes == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]


def test_service_accounts_never_mount_tokens(default_render: Rendered) -> None:
    for account in default_render.all("ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


def test_root_is_refused_by_the_schema(chart: Chart) -> None:
    error = chart.render_error({"securityContext": {"runAsUser": 0}})
    assert schema_error_mentions(error, "/securityContext/runAsUser"), error


def test_pods_spread_across_nodes_and_zones(chart: Chart) -> None:
    for version, rollout_aware in [("1.25.0", False), ("1.37.0", True)]:
        spec = pod_spec(chart.render(kube_version=version).deployment)
        constraints = spec["topologySpreadConstraints"]
        assert [c["topologyKey"] for c in constraints] == [
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
        ]
        for constraint in constraints:
            assert (
                constraint["labelSelector"]["matchLabels"]["app.kubernetes.io/component"]
                == "server"
            )
            assert ("matchLabelKeys" in constraint) is rollout_aware


def test_config_and_secret_changes_roll_the_pods(chart: Chart) -> None:
    def checksums(values: dict[str, Any]) -> tuple[str, str]:
        annotations = chart.render(values).deployment["spec"]["template"]["metadata"]["annotations"]
        return annotations["checksum/config"], annotations["checksum/secret"]

    config, secret = checksums({})
    assert all(re.fullmatch(r"[0-9a-f]{64}", value) for value in (config, secret))
    changed_config, same_secret = checksums({"config": {"logLevel": "DEBUG"}})
    assert changed_config != config
    assert same_secret == secret
    same_config, changed_secret = checksums(
        {"secret": {"secretKey": "x" * 16 + "Yz0123456789abcdefgh"}}
    )
    assert same_config == config
    assert changed_secret != secret


def test_image_defaults_to_app_version_and_digest_pins_it(chart: Chart) -> None:
    assert server(chart.render())["image"] == "ghcr.io/keelson/keelson:0.1.0"
    digest = "sha256:" + "a" * 64
    assert server(chart.render({"image": {"digest": digest}}))["image"] == (
        f"ghcr.io/keelson/keelson@{digest}"
    )


def test_server_runs_the_image_command_unless_overridden(chart: Chart) -> None:
    assert "command" not in server(chart.render())
    dev = chart.render(
        values_files=["charts/keelson/values-dev.yaml", "charts/keelson/values-dev-sync.yaml"],
        with_required=False,
    )
    assert server(dev)["command"][:2] == ["uvicorn", "service.main:create_app"]
    assert "--reload" in server(dev)["command"]
