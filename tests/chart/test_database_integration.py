"""The chart behind a transaction-mode pooler, with CloudNativePG, split roles and TLS."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.chartlib import (
    KUBE_VERSIONS,
    NEWEST_KUBE,
    Chart,
    Rendered,
    containers,
    pod_spec,
    validate_object,
    workloads,
)

PGBOUNCER = {"database": {"pooler": {"mode": "pgbouncer"}}}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("valueFrom", e.get("value")) for e in container["env"]}


# -- issue 15: the pooler mode ------------------------------------------------------------------


def test_pooler_mode_tells_the_service(chart: Chart) -> None:
    assert chart.render().one("ConfigMap", "keelson")["data"]["DB_POOLER"] == "none"
    rendered = chart.render(PGBOUNCER)
    assert rendered.one("ConfigMap", "keelson")["data"]["DB_POOLER"] == "pgbouncer"
    assert rendered.one("ConfigMap", "keelson-migrate")["data"]["DB_POOLER"] == "pgbouncer"


def test_behind_a_pooler_postgres_sees_only_the_server_pools(chart: Chart) -> None:
    """10 replicas need (10 + 1 + 1) * 15 = 180 client connections, over 90 straight to
    PostgreSQL; through the pooler PostgreSQL holds 2 * 20 + 2 (migration, direct) = 42."""
    many = {"autoscaling": {"maxReplicas": 10}}
    assert "connection pool budget exceeded" in chart.render_error(many)
    rendered = chart.render({**many, **PGBOUNCER})
    assert rendered.one("HorizontalPodAutoscaler")["spec"]["maxReplicas"] == 10


def test_the_pooler_server_side_overflow_fails_with_the_arithmetic(chart: Chart) -> None:
    error = chart.render_error(
        {"database": {"pooler": {"mode": "pgbouncer", "serverPoolSize": 45}}}
    )
    assert (
        "connection pool budget exceeded: database.pooler.instances 2 *"
        " database.pooler.serverPoolSize 45 + migration job 2 = 92 > database.maxConnections 100 -"
        " database.reservedConnections 10 = 90"
    ) in error


def test_the_pooler_client_side_overflow_fails_with_the_arithmetic(chart: Chart) -> None:
    values = {
        "autoscaling": {"maxReplicas": 10},
        "database": {"pooler": {"mode": "pgbouncer", "maxClientConnections": 150}},
    }
    error = chart.render_error(values)
    assert (
        "pooler client budget exceeded: (maxReplicas 10 + maxSurge 1 + terminating 1) * (poolSize"
        " 10 + maxOverflow 5) + purge jobs 2 = 182 > database.pooler.maxClientConnections 150"
    ) in error


CNPG_POOLER = {
    "database": {
        "pooler": {"mode": "pgbouncer", "cloudnativepg": {"enabled": True, "cluster": "pg"}}
    }
}


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_a_cloudnativepg_pooler_renders_in_transaction_mode(chart: Chart, version: str) -> None:
    rendered = chart.render(CNPG_POOLER, kube_version=version)
    pooler = rendered.one("Pooler", "keelson-pooler")
    assert pooler["spec"] == {
        "cluster": {"name": "pg"},
        "instances": 2,
        "type": "rw",
        "pgbouncer": {
            "poolMode": "transaction",
            "parameters": {
                "default_pool_size": "20",
                "max_client_conn": "1000",
                "server_login_retry": "2",
            },
        },
    }
    for obj in rendered.objects:
        validate_object(obj, version)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"database": {"pooler": {"cloudnativepg": {"enabled": True, "cluster": "pg"}}}},
            "set database.pooler.mode=pgbouncer",
        ),
        (
            {"database": {"pooler": {"mode": "pgbouncer", "cloudnativepg": {"enabled": True}}}},
            "database.pooler.cloudnativepg.cluster is required",
        ),
    ],
)
def test_a_cloudnativepg_pooler_needs_pgbouncer_mode_and_a_cluster(
    chart: Chart, values: dict[str, Any], message: str
) -> None:
    assert message in chart.render_error(values)


# -- issue 16: database integration -----------------------------------------------------------

# The CloudNativePG recipe in docs/kubernetes.md: the operator's `<cluster>-app` Secret (key
# `uri`) as DATABASE_URL, its CA Secret for verify-full, Keelson's own keys in a Secret of ours.
CNPG_RECIPE: dict[str, Any] = {
    "secret": {"existingSecret": "keelson-credentials"},
    "database": {
        "urlSecret": {"name": "pg-app", "key": "uri"},
        "tls": {"sslmode": "verify-full", "caSecret": {"name": "pg-ca", "key": "ca.crt"}},
    },
    "networkPolicy": {
        "database": {"to": [{"podSelector": {"matchLabels": {"cnpg.io/cluster": "pg"}}}]}
    },
}


def cnpg_render(chart: Chart, version: str = NEWEST_KUBE) -> Rendered:
    return chart.render(CNPG_RECIPE, kube_version=version, with_required=False)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_the_cloudnativepg_recipe_renders_and_validates(chart: Chart, version: str) -> None:
    rendered = cnpg_render(chart, version)
    assert not rendered.all("Secret")
    for obj in rendered.objects:
        validate_object(obj, version)


def test_database_url_comes_from_the_cloudnativepg_app_secret(chart: Chart) -> None:
    rendered = cnpg_render(chart)
    for workload in workloads(rendered):
        for container in containers(workload):
            if container["name"] == "readiness":  # the helm test pod reads no secret
                continue
            env = env_of(container)
            assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "pg-app", "key": "uri"}}
            assert env["SECRET_KEY"] == {
                "secretKeyRef": {"name": "keelson-credentials", "key": "SECRET_KEY"}
            }


def test_tls_mounts_the_ca_and_points_libpq_variables_at_it(chart: Chart) -> None:
    rendered = cnpg_render(chart)
    for workload in workloads(rendered):
        if workload["kind"] == "Pod":
            continue
        spec = pod_spec(workload)
        assert {"name": "db-ca", "secret": {"secretName": "pg-ca", "items": [
            {"key": "ca.crt", "path": "ca.crt"}]}} in spec["volumes"]  # fmt: skip
        for container in containers(workload):
            env = env_of(container)
            assert env["PGSSLMODE"] == "verify-full"
            assert env["PGSSLROOTCERT"] == "/etc/keelson/db-ca/ca.crt"
            assert {"name": "db-ca", "mountPath": "/etc/keelson/db-ca", "readOnly": True} in (
                container["volumeMounts"]
            )


def test_secret_key_names_can_be_overridden(chart: Chart) -> None:
    keys = {"databaseUrl": "url", "secretKey": "jwt-key", "firstSuperuserPassword": "admin"}
    rendered = chart.render(
        {"secret": {"existingSecret": "vault-synced", "keys": keys}}, with_required=False
    )
    env = env_of(containers(rendered.deployment)[0])
    assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "vault-synced", "key": "url"}}
    assert env["SECRET_KEY"] == {"secretKeyRef": {"name": "vault-synced", "key": "jwt-key"}}
    assert env["FIRST_SUPERUSER_PASSWORD"] == {
        "secretKeyRef": {"name": "vault-synced", "key": "admin"}
    }
    managed = chart.render({"secret": {"keys": {"databaseUrl": "url"}}})
    assert "url" in managed.one("Secret", "keelson")["stringData"]
    assert env_of(containers(managed.deployment)[0])["DATABASE_URL"] == {
        "secretKeyRef": {"name": "keelson", "key": "url"}
    }


def test_without_tls_values_no_ca_is_mounted(default_render: Rendered) -> None:
    for workload in workloads(default_render):
        names = {v["name"] for v in pod_spec(workload).get("volumes", [])}
        assert "db-ca" not in names
        for container in containers(workload):
            names = {e["name"] for e in container.get("env", [])}
            assert not names & {"PGSSLMODE", "PGSSLROOTCERT"}
