"""Every values combination we ship renders, lints and validates on old and new Kubernetes."""

from __future__ import annotations

from typing import Any

import kubernetes_validate.utils as kv
import pytest

from tests.chart.chartlib import (
    CHART,
    KUBE_VERSIONS,
    MONITORING_API,
    NEWEST_KUBE,
    OLDEST_KUBE,
    REQUIRED_VALUES,
    Chart,
    run,
    validate_object,
)

DEV_VALUES = ["charts/keelson/values-dev.yaml", "charts/keelson/values-dev-sync.yaml"]

MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "autoscaling-off": {"values": {"autoscaling": {"enabled": False}}},
    "migrations-off": {"values": {"migrations": {"enabled": False}}},
    "monitoring-crds": {"api_versions": [MONITORING_API]},
    "existing-secret": {
        "values": {"secret": {"existingSecret": "keelson-credentials"}},
        "with_required": False,
    },
    "ingress-tls": {"values": {"ingress": {"enabled": True}}},
    "skaffold-dev": {"values_files": DEV_VALUES, "with_required": False},
}

CELLS = [
    pytest.param(case, version, id=f"{case}-k8s{version}")
    for case in MATRIX
    for version in KUBE_VERSIONS
]


def render_cell(chart: Chart, case: str, version: str):
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
def test_helm_lint_strict_passes(helm: str, case: str, tmp_path) -> None:
    import yaml

    from tests.chart.chartlib import deep_merge

    spec = MATRIX[case]
    values = spec.get("values", {})
    if spec.get("with_required", True):
        values = deep_merge(REQUIRED_VALUES, values)
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    args = [helm, "lint", "--strict", str(CHART), "-f", str(values_file)]
    for path in spec.get("values_files", []):
        args[4:4] = ["-f", path]
    for version in KUBE_VERSIONS:
        proc = run([*args, "--kube-version", version])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "0 chart(s) failed" in proc.stdout


def test_defaults_render_the_full_production_set(chart: Chart) -> None:
    rendered = chart.render()
    assert rendered.kinds() == {
        "ConfigMap",
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
