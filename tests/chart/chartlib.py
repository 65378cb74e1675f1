"""Helpers for the chart suite: locate tools, run helm, validate and index rendered objects."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate.utils as kv
import pytest
import yaml

from tests.support import tools

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "keelson"
CRD_SCHEMAS = Path(__file__).resolve().parent / "crd_schemas"

# Values the chart cannot default (it refuses to render without them): the defaults matrix cell
# is "values.yaml plus these", as an operator's smallest `helm install`.
REQUIRED_VALUES: dict[str, Any] = {
    "secret": {
        "databaseUrl": "postgresql://keelson:s3cret@db.example.internal:5432/keelson",
        "secretKey": "Zq8rT2vW9xY4bN7mK3pL6hJ1gF5dS0aQeRtYuIoP",
        "firstSuperuserPassword": "correct-horse-battery",
    }
}

# Kinds that are not built into Kubernetes, with the JSON schema each is checked against.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
    ("postgresql.cnpg.io/v1", "Pooler"): "pooler-postgresql-cnpg-v1.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproute-gateway-v1.json",
}

MONITORING_API = "monitoring.coreos.com/v1"


# One rule for CI and missing tools, shared by the whole suite (tests/support/tools.py).
in_ci = tools.in_ci
require_tool = tools.require_tool


def run(
    args: list[str], *, input_text: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@dataclass(frozen=True)
class Rendered:
    """The objects of one `helm template` run."""

    objects: tuple[dict[str, Any], ...]

    def kinds(self) -> set[str]:
        return {obj["kind"] for obj in self.objects}

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        matches = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} {name or ''}, got {len(matches)}"
        return matches[0]

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((o for o in self.all(kind) if o["metadata"]["name"] == name), None)

    def hooks(self) -> list[dict[str, Any]]:
        return [o for o in self.objects if "helm.sh/hook" in annotations(o)]

    def release_objects(self) -> list[dict[str, Any]]:
        """Objects Helm installs as the release itself (not hooks)."""
        return [o for o in self.objects if "helm.sh/hook" not in annotations(o)]

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")


def annotations(obj: dict[str, Any]) -> dict[str, str]:
    return obj.get("metadata", {}).get("annotations") or {}


def hook_events(obj: dict[str, Any]) -> set[str]:
    return {e.strip() for e in annotations(obj).get("helm.sh/hook", "").split(",") if e.strip()}


def hook_weight(obj: dict[str, Any]) -> int:
    return int(annotations(obj).get("helm.sh/hook-weight", "0"))


def pod_template(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod template of a workload (a CronJob's is inside its jobTemplate)."""
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]
    return obj["spec"]["template"]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "Pod":
        return obj["spec"]
    return pod_template(obj)["spec"]


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    if obj["kind"] == "Pod":
        return obj["metadata"]["labels"]
    return pod_template(obj)["metadata"]["labels"]


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(obj)
    return [*spec.get("initContainers", []), *spec["containers"]]


WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "Job", "CronJob", "Pod"})


def workloads(rendered: Rendered) -> list[dict[str, Any]]:
    return [o for o in rendered.objects if o["kind"] in WORKLOAD_KINDS]


@cache
def _crd_schema(filename: str) -> dict[str, Any]:
    return json.loads((CRD_SCHEMAS / filename).read_text())


def validate_object(obj: dict[str, Any], kube_version: str) -> None:
    """kubernetes-validate --strict for built-in kinds; our CRD shape for the operator's kinds.

    A kind that is neither (an unknown or misspelt built-in kind, a removed API version) fails:
    kubernetes-validate only warns about those.
    """
    crd = CRD_KINDS.get((obj.get("apiVersion"), obj.get("kind")))
    if crd is not None:
        jsonschema.validate(obj, _crd_schema(crd))
        return
    try:
        kv.validate(obj, kube_version, strict=True)
    except kv.SchemaNotFoundError as exc:
        pytest.fail(f"{exc.message}: not a Kubernetes {kube_version} kind nor a known CRD")
    except kv.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        pytest.fail(
            f"{obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {kube_version}"
            f" at {where or '<root>'}: {exc.message}"
        )


def schema_error_mentions(error: str, *tokens: str) -> bool:
    """Whether a values-schema failure names each token. "/a/b" tokens are value paths, which
    Helm >= 3.18 prints as "/a/b" and older Helm as "a.b"; other tokens must appear as given."""
    if "values don't meet the specifications of the schema" not in error:
        return False
    for token in tokens:
        forms = {token, token.strip("/").replace("/", ".")} if token.startswith("/") else {token}
        if not any(form in error for form in forms):
            return False
    return True


def _oldest_supported() -> str:
    """The floor of Chart.yaml's kubeVersion: the oldest Kubernetes the chart claims to support."""
    constraint = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    match = re.fullmatch(r">=\s*(\d+\.\d+\.\d+)(-0)?", constraint.strip())
    assert match, f"kubeVersion {constraint!r} is not a simple lower bound"
    return match.group(1)


OLDEST_KUBE = _oldest_supported()
NEWEST_KUBE = kv.latest_version()
KUBE_VERSIONS = (OLDEST_KUBE, NEWEST_KUBE)


class Chart:
    """Runs `helm template` on charts/keelson and caches each distinct render for the session."""

    def __init__(self, helm: str) -> None:
        self.helm = helm
        self._cache: dict[str, tuple[int, str, str]] = {}

    def _template(
        self,
        values: dict[str, Any],
        kube_version: str,
        api_versions: Iterable[str],
        values_files: Iterable[str],
    ) -> tuple[int, str, str]:
        files = list(values_files)
        apis = sorted(api_versions)
        key = json.dumps([values, kube_version, apis, files], sort_keys=True)
        if key not in self._cache:
            args = [self.helm, "template", "keelson", str(CHART), "--namespace", "keelson"]
            args += ["--kube-version", kube_version]
            for api in apis:
                args += ["--api-versions", api]
            for path in files:
                args += ["-f", str(REPO / path)]
            args += ["-f", "-"]
            proc = run(args, input_text=yaml.safe_dump(values))
            self._cache[key] = (proc.returncode, proc.stdout, proc.stderr)
        return self._cache[key]

    def render(
        self,
        values: dict[str, Any] | None = None,
        *,
        kube_version: str = NEWEST_KUBE,
        api_versions: Iterable[str] = (),
        values_files: Iterable[str] = (),
        with_required: bool = True,
    ) -> Rendered:
        """Render with REQUIRED_VALUES (unless told otherwise) under the given overrides."""
        merged = deep_merge(REQUIRED_VALUES, values or {}) if with_required else values or {}
        code, out, err = self._template(merged, kube_version, api_versions, values_files)
        assert code == 0, f"helm template failed:\n{err}"
        return Rendered(tuple(load_all(out)))

    def render_error(
        self,
        values: dict[str, Any] | None = None,
        *,
        kube_version: str = NEWEST_KUBE,
        with_required: bool = True,
    ) -> str:
        """Render expecting failure; returns helm's error output."""
        merged = deep_merge(REQUIRED_VALUES, values or {}) if with_required else values or {}
        code, out, err = self._template(merged, kube_version, (), ())
        assert code != 0, f"helm template unexpectedly succeeded:\n{out[:2000]}"
        return err
