"""Every values combination we ship renders, lints and validates on old and new Kubernetes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate.utils as kv
import pytest
import yaml

from tests.chart.chartlib import (
    CHART,
    KUBE_VERSIONS,
    MONITORING_API,
    NEWEST_KUBE,
    OLDEST_KUBE,
    REQUIRED_VALUES,
    Chart,
    Rendered,
    deep_merge,
    run,
    validate_object,
)

DEV_VALUES = ["charts/keelson/values-dev.yaml", "charts/keelson/values-dev-sync.yaml"]

MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "autoscaling-off": {"values": {"autoscaling": {"enabled": False}}},
    "migrations-off": {"values": {"migrations": {"enabled": False}}},
    "purge-off": {"values": {"purge": {"enabled": False}}},
    "monitoring-crds": {"api_versions": [MONITORING_API]},
    "existing-secret": {
        "values": {"secret": {"existingSecret": "keelson-credentials"}},
        "with_required": False,
    },
    "ingress-tls": {"values": {"ingress": {"enabled": True}}},
    "skaffold-dev": {"values_files": DEV_VALUES, "with_required": False},
    # A platform install: pooler, CloudNativePG, split roles, TLS, identity, mesh, extensions.
    "platform": {
        "values": {
            "secret": {"existingSecret": "keelson-credentials"},
            "serviceAccount": {"create": False, "name": "keelson-identity"},
            "database": {
                "urlSecret": {"name": "pg-pooler-url", "key": "uri"},
                "migrationUrlSecret": {"name": "pg-app", "key": "uri"},
                "tls": {"sslmode": "verify-full", "caSecret": {"name": "pg-ca"}},
                "pooler": {
                    "mode": "pgbouncer",
                    "cloudnativepg": {"enabled": True, "cluster": "pg"},
                },
            },
            "podAnnotations": {"sidecar.istio.io/inject": "true"},
            "migrations": {"podAnnotations": {"sidecar.istio.io/inject": "false"}},
            "purge": {"podAnnotations": {"sidecar.istio.io/inject": "false"}},
            "extraEnvFrom": [{"secretRef": {"name": "external-settings"}}],
            "extraVolumes": [{"name": "certs", "secret": {"secretName": "internal-ca"}}],
            "extraVolumeMounts": [{"name": "certs", "mountPath": "/etc/ssl/internal"}],
            "httpRoute": {"enabled": True},
            "smtp": {"host": "smtp.example.org"},
            "config": {"otelTracesExporter": "otlp"},
            "networkPolicy": {
                "database": {"to": [{"podSelector": {"matchLabels": {"cnpg.io/cluster": "pg"}}}]}
            },
        },
        "with_required": False,
        "api_versions": [MONITORING_API],
    },
}

CELLS = [
    pytest.param(case, version, id=f"{case}-k8s{version}")
    for case in MATRIX
    for version in KUBE_VERSIONS
]


def render_cell(chart: Chart, case: str, version: str) -> Rendered:
    return chart.render(kube_version=version, **MATRIX[case])


def test_supported_versions_are_ones_kubernetes_validate_has_schemas_for() -> None:
    known = set(kv.all_versions())
    assert OLDEST_KUBE in known, f"Chart.yaml kubeVersion floor {OLDEST_KUBE} has no schemas"
    assert kv.latest_version() == NEWEST_KUBE
    assert OLDEST_KUBE != NEWEST_KUBE


@pytest.mark.parametrize(("case", "version"), CELLS)
def test_every_rendered_object_is_valid_for_kubernetes(
    chart: Chart, case: str, version: str
) -> None:
    rendered = render_cell(chart, case, version)
    assert rendered.objects
    for obj in rendered.objects:
        validate_object(obj, version)


@pytest.mark.parametrize(("case", "version"), CELLS)
def test_object_names_are_unique_per_kind(chart: Chart, case: str, version: str) -> None:
    rendered = render_cell(chart, case, version)
    keys = [(o["kind"], o["metadata"]["name"]) for o in rendered.objects]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("case", list(MATRIX))
def test_helm_lint_strict_passes(helm: str, case: str, tmp_path: Path) -> None:
    spec = MATRIX[case]
    values = spec.get("values", {})
    if spec.get("with_required", True):
        values = deep_merge(REQUIRED_VALUES, values)
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    args = [helm, "lint", "--strict", str(CHART)]
    for path in [*spec.get("values_files", []), str(values_file)]:
        args += ["-f", path]
    for version in KUBE_VERSIONS:
        proc = run([*args, "--kube-version", version])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "0 chart(s) failed" in proc.stdout


def test_defaults_render_the_full_production_set(chart: Chart) -> None:
    rendered = chart.render()
    assert [s["metadata"]["name"] for s in rendered.all("Service")] == [
        "keelson-metrics",
        "keelson",
    ]
    assert rendered.kinds() == {
        "ConfigMap",
        "CronJob",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Job",
        "NetworkPolicy",
        "Pod",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "ServiceAccount",
    }


def test_autoscaling_off_drops_the_hpa_and_sets_replicas(chart: Chart) -> None:
    rendered = chart.render({"autoscaling": {"enabled": False}, "replicaCount": 3})
    assert not rendered.all("HorizontalPodAutoscaler")
    assert rendered.deployment["spec"]["replicas"] == 3
    assert rendered.all("PodDisruptionBudget")


def test_autoscaling_on_leaves_replicas_to_the_hpa(chart: Chart) -> None:
    rendered = chart.render()
    assert "replicas" not in rendered.deployment["spec"]
    hpa = rendered.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == rendered.deployment["metadata"]["name"]


def test_a_single_replica_gets_no_pdb(chart: Chart) -> None:
    rendered = chart.render({"autoscaling": {"enabled": False}, "replicaCount": 1})
    assert not rendered.all("PodDisruptionBudget")


def test_ingress_has_class_and_tls_for_its_host(chart: Chart) -> None:
    rendered = chart.render({"ingress": {"enabled": True, "host": "api.example.org"}})
    spec = rendered.one("Ingress")["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["api.example.org"], "secretName": "keelson-tls"}]
    backend = spec["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "keelson", "port": {"name": "http"}}


def test_the_validator_rejects_unknown_kinds_and_removed_apis(default_render: Rendered) -> None:
    deployment = default_render.deployment
    misspelt = {**deployment, "kind": "Deploymnet"}
    with pytest.raises(pytest.fail.Exception, match="nor a known CRD"):
        validate_object(misspelt, NEWEST_KUBE)
    pdb = default_render.one("PodDisruptionBudget")
    removed = {**pdb, "apiVersion": "policy/v1beta1"}  # removed in Kubernetes 1.25
    with pytest.raises(pytest.fail.Exception, match="nor a known CRD"):
        validate_object(removed, OLDEST_KUBE)


def test_the_validator_rejects_unknown_fields(default_render: Rendered) -> None:
    service = default_render.one("Service", "keelson")
    typo = {**service, "spec": {**service["spec"], "selecter": {}}}
    with pytest.raises(pytest.fail.Exception, match="selecter"):
        validate_object(typo, NEWEST_KUBE)


def test_crd_shapes_reject_fields_the_operator_does_not_know(chart: Chart) -> None:
    monitor = chart.render(api_versions=[MONITORING_API]).one("ServiceMonitor")
    endpoint = {**monitor["spec"]["endpoints"][0], "intervall": "30s"}
    bad = {**monitor, "spec": {**monitor["spec"], "endpoints": [endpoint]}}
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        validate_object(bad, NEWEST_KUBE)
