"""Local cluster: k8s/overlays/dev renders and validates; skaffold.yaml wires it together."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.chart.chartlib import (
    CHART,
    KUBE_VERSIONS,
    REPO,
    Chart,
    Rendered,
    containers,
    load_all,
    pod_labels,
    pod_spec,
    run,
    validate_object,
)

DEV_VALUES = yaml.safe_load((CHART / "values-dev.yaml").read_text())
SKAFFOLD = load_all((REPO / "skaffold.yaml").read_text())
DOCKERFILE = (REPO / "Dockerfile").read_text()


@pytest.fixture(scope="session")
def overlay(kubectl: str) -> Rendered:
    proc = run([kubectl, "kustomize", "k8s/overlays/dev"])
    assert proc.returncode == 0, proc.stderr
    return Rendered(tuple(load_all(proc.stdout)))


def skaffold_config(name: str) -> dict[str, Any]:
    (config,) = [c for c in SKAFFOLD if c["metadata"]["name"] == name]
    return config


def dockerfile_stages() -> list[str]:
    return re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", DOCKERFILE, flags=re.MULTILINE | re.IGNORECASE)


def apply_patches(config: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON-patch subset skaffold profiles use here (add, replace; "-" appends)."""
    result = copy.deepcopy(config)
    for patch in patches:
        *parents, last = patch["path"].strip("/").split("/")
        node: Any = result
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if patch["op"] == "add" and isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), patch["value"])
        elif patch["op"] in {"add", "replace"}:
            if patch["op"] == "replace":
                assert last in node, f"replace of missing {patch['path']}"
            node[last] = patch["value"]
        else:
            raise AssertionError(f"unsupported op {patch['op']}")
    return result


# -- k8s/overlays/dev ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_overlay_objects_are_valid_kubernetes(overlay: Rendered, version: str) -> None:
    for obj in overlay.objects:
        validate_object(obj, version)


def test_overlay_has_namespace_and_postgres(overlay: Rendered) -> None:
    assert {(o["kind"], o["metadata"]["name"]) for o in overlay.objects} == {
        ("Namespace", "keelson-dev"),
        ("Secret", "keelson-postgres"),
        ("Service", "keelson-postgres"),
        ("StatefulSet", "keelson-postgres"),
        ("NetworkPolicy", "keelson-postgres"),
    }
    for obj in overlay.objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "keelson-dev"


def test_postgres_service_reaches_the_statefulset(overlay: Rendered) -> None:
    service = overlay.one("Service")
    statefulset = overlay.one("StatefulSet")
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    port_names = {p["name"] for p in containers(statefulset)[0]["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in port_names


def test_chart_dev_values_point_at_the_dev_postgres(overlay: Rendered) -> None:
    url = urlsplit(DEV_VALUES["secret"]["databaseUrl"])
    service = overlay.one("Service")
    env = {e["name"]: e for e in containers(overlay.one("StatefulSet"))[0]["env"]}
    secret = overlay.one("Secret", env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"])
    assert url.hostname == service["metadata"]["name"]
    assert url.port == service["spec"]["ports"][0]["port"]
    assert url.username == env["POSTGRES_USER"]["value"]
    assert url.path.lstrip("/") == env["POSTGRES_DB"]["value"]
    assert url.password == secret["stringData"]["POSTGRES_PASSWORD"]


def test_postgres_is_reachable_only_from_keelson_pods(overlay: Rendered, chart: Chart) -> None:
    policy = overlay.one("NetworkPolicy")["spec"]
    (rule,) = policy["ingress"]
    allowed = rule["from"][0]["podSelector"]["matchLabels"].items()
    dev = chart.render(values_files=["charts/keelson/values-dev.yaml"], with_required=False)
    for workload in (dev.deployment, dev.one("Job"), dev.one("CronJob")):
        assert allowed <= pod_labels(workload).items(), workload["kind"]
    assert policy["egress"] == []


def test_postgres_pod_is_hardened(overlay: Rendered) -> None:
    spec = pod_spec(overlay.one("StatefulSet"))
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    ctx = container["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert {"requests", "limits"} <= set(container["resources"])


def test_dev_namespace_enforces_restricted_pod_security(overlay: Rendered) -> None:
    labels = overlay.one("Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# -- skaffold.yaml -------------------------------------------------------------------------------


def test_skaffold_uses_a_current_v4beta_schema() -> None:
    assert [c["metadata"]["name"] for c in SKAFFOLD] == ["keelson-dev-postgres", "keelson"]
    for config in SKAFFOLD:
        assert re.fullmatch(r"skaffold/v4beta\d+", config["apiVersion"])
        assert int(config["apiVersion"].removeprefix("skaffold/v4beta")) >= 11
        assert config["kind"] == "Config"


def test_postgres_is_deployed_before_the_chart() -> None:
    postgres = skaffold_config("keelson-dev-postgres")
    assert postgres["manifests"]["kustomize"]["paths"] == ["k8s/overlays/dev"]
    assert "kubectl" in postgres["deploy"]
    assert skaffold_config("keelson")["requires"] == [{"configs": ["keelson-dev-postgres"]}]


def test_skaffold_builds_the_dockerfile_runtime_target() -> None:
    (artifact,) = skaffold_config("keelson")["build"]["artifacts"]
    assert (REPO / artifact.get("context", ".") / artifact["docker"]["dockerfile"]).is_file()
    assert artifact["docker"]["target"] == "runtime" == dockerfile_stages()[-1]


def test_skaffold_deploys_the_chart_with_dev_values_and_the_built_image() -> None:
    config = skaffold_config("keelson")
    (artifact,) = config["build"]["artifacts"]
    (release,) = config["deploy"]["helm"]["releases"]
    assert (REPO / release["chartPath"]) == CHART
    assert release["valuesFiles"] == ["charts/keelson/values-dev.yaml"]
    assert release["namespace"] == "keelson-dev"
    image = artifact["image"]
    assert release["setValueTemplates"] == {
        "image.repository": f"{{{{.IMAGE_REPO_{image}}}}}",
        "image.tag": f"{{{{.IMAGE_TAG_{image}}}}}",
        "image.digest": f"{{{{.IMAGE_DIGEST_{image}}}}}",
    }


@pytest.mark.parametrize(
    ("tag", "digest", "expected"),
    [
        ("3f5c0a1e", "", "keelson:3f5c0a1e"),
        ("v1-dirty", "sha256:" + "b" * 64, "keelson@sha256:" + "b" * 64),
    ],
    ids=["loaded-into-cluster", "pushed"],
)
def test_the_values_skaffold_sets_render(
    chart: Chart, tag: str, digest: str, expected: str
) -> None:
    values = {"image": {"repository": "keelson", "tag": tag, "digest": digest}}
    rendered = chart.render(
        values, values_files=["charts/keelson/values-dev.yaml"], with_required=False
    )
    assert containers(rendered.deployment)[0]["image"] == expected
    assert containers(rendered.one("Job"))[0]["image"] == expected


def test_port_forward_targets_the_chart_service(chart: Chart) -> None:
    config = skaffold_config("keelson")
    (release,) = config["deploy"]["helm"]["releases"]
    (forward,) = config["portForward"]
    rendered = chart.render(values_files=["charts/keelson/values-dev.yaml"], with_required=False)
    service = rendered.one("Service", "keelson")
    assert forward["resourceType"] == "service"
    assert forward["resourceName"] == service["metadata"]["name"]
    assert forward["namespace"] == release["namespace"]
    assert forward["port"] == service["spec"]["ports"][0]["port"]
    assert forward["localPort"] == 8000


def test_dev_profile_syncs_python_sources_into_a_reloading_server(chart: Chart) -> None:
    config = skaffold_config("keelson")
    (profile,) = config["profiles"]
    assert profile["name"] == "dev"
    assert profile["activation"] == [{"command": "dev"}]
    patched = apply_patches(config, profile["patches"])
    (artifact,) = patched["build"]["artifacts"]
    assert artifact["docker"]["target"] == "dev" in dockerfile_stages()
    (rule,) = artifact["sync"]["manual"]
    assert rule["src"] == "service/**/*.py"
    assert list(Path(REPO).glob(rule["src"])), "the sync pattern matches no file"
    # Synced files keep their "service/..." prefix under dest: /app/service, the editable install.
    assert rule["dest"] == "/app"
    assert re.search(r"^WORKDIR /app$", DOCKERFILE, flags=re.MULTILINE)
    assert re.search(r"^RUN chown -R 10001:10001 /app/service$", DOCKERFILE, flags=re.MULTILINE)
    (release,) = patched["deploy"]["helm"]["releases"]
    assert release["valuesFiles"] == [
        "charts/keelson/values-dev.yaml",
        "charts/keelson/values-dev-sync.yaml",
    ]
    rendered = chart.render(values_files=release["valuesFiles"], with_required=False)
    server = containers(rendered.deployment)[0]
    assert server["securityContext"]["readOnlyRootFilesystem"] is False
    assert server["command"][server["command"].index("--reload-dir") + 1] == "/app/service"
