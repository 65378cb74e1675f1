"""The common extension points: extra env, volumes, containers, objects and a Gateway route."""

from __future__ import annotations

from typing import Any

from tests.chart.chartlib import (
    KUBE_VERSIONS,
    Chart,
    Rendered,
    containers,
    pod_spec,
    validate_object,
    workloads,
)

ENV_FROM = [{"secretRef": {"name": "external-settings"}}]
VOLUME = {"name": "certs", "secret": {"secretName": "internal-ca"}}
MOUNT = {"name": "certs", "mountPath": "/etc/ssl/internal", "readOnly": True}
PROXY = {
    "name": "cloud-sql-proxy",
    "image": "gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.14.0",
    "args": ["--port=5432", "project:region:instance"],
    "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
}
INIT = {"name": "wait", "image": "busybox:1.37", "command": ["true"]}


def keelson_workloads(rendered: Rendered) -> list[dict[str, Any]]:
    """Workloads that run the keelson service image with its environment (not the helm test)."""
    return [w for w in workloads(rendered) if w["kind"] != "Pod"]


def test_extra_env_from_volumes_and_mounts_reach_every_keelson_container(chart: Chart) -> None:
    rendered = chart.render(
        {"extraEnvFrom": ENV_FROM, "extraVolumes": [VOLUME], "extraVolumeMounts": [MOUNT]}
    )
    assert {w["kind"] for w in keelson_workloads(rendered)} == {"Deployment", "Job", "CronJob"}
    for workload in keelson_workloads(rendered):
        assert VOLUME in pod_spec(workload)["volumes"]
        for container in containers(workload):
            assert ENV_FROM[0] in container["envFrom"], container["name"]
            assert container["envFrom"][0]["configMapRef"]  # the chart's settings come first
            assert MOUNT in container["volumeMounts"], container["name"]


def test_init_containers_and_sidecars_join_the_server_pods_only(chart: Chart) -> None:
    rendered = chart.render({"initContainers": [INIT], "sidecars": [PROXY]})
    spec = pod_spec(rendered.deployment)
    assert spec["initContainers"] == [INIT]
    assert [c["name"] for c in spec["containers"]] == ["keelson", "cloud-sql-proxy"]
    job_containers = {c["name"] for c in containers(rendered.one("Job", "keelson-migrate"))}
    assert job_containers == {"migrate", "seed"}


def test_extra_objects_render_as_given_or_templated(chart: Chart) -> None:
    external_secret = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "{{ .Release.Name }}-extra"},
        "data": {"release": "{{ .Release.Namespace }}"},
    }
    as_string = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-text\n"
    rendered = chart.render({"extraObjects": [external_secret, as_string]})
    assert rendered.one("ConfigMap", "keelson-extra")["data"] == {"release": "keelson"}
    assert rendered.find("ConfigMap", "keelson-text") is not None


def test_http_route_sends_traffic_to_the_api_service(chart: Chart) -> None:
    values = {
        "httpRoute": {
            "enabled": True,
            "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
            "hostnames": ["api.example.org"],
        }
    }
    for version in KUBE_VERSIONS:
        rendered = chart.render(values, kube_version=version)
        route = rendered.one("HTTPRoute", "keelson")
        validate_object(route, version)
    assert route["spec"]["parentRefs"] == values["httpRoute"]["parentRefs"]
    assert route["spec"]["hostnames"] == ["api.example.org"]
    (rule,) = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    (backend,) = rule["backendRefs"]
    api = rendered.one("Service", backend["name"])
    assert [p["port"] for p in api["spec"]["ports"]] == [backend["port"]]
    assert [p["name"] for p in api["spec"]["ports"]] == ["http"]
    assert not chart.render().all("HTTPRoute")


def test_rollout_pacing_values_reach_the_deployment(chart: Chart) -> None:
    spec = chart.render({"minReadySeconds": 45, "progressDeadlineSeconds": 900}).deployment["spec"]
    assert (spec["minReadySeconds"], spec["progressDeadlineSeconds"]) == (45, 900)
