"""checkov passes on everything we deploy, but for a short list of justified exceptions.

One checkov run per session (it takes seconds, not per matrix cell): the chart rendered with
defaults and the monitoring API, the dev overlay from `kubectl kustomize`, and the Dockerfile.
"""

from __future__ import annotations

import json
import re
import shutil
from typing import Any

import pytest
import yaml

from tests.chart.chartlib import MONITORING_API, REPO, Chart, deep_merge, run
from tests.chart.test_render_matrix import MATRIX

# Checks that do not apply anywhere in this repository, passed to checkov as --skip-check.
SKIPPED = {
    "CKV_K8S_43": "image digests are an install-time choice: image.digest pins one (skaffold sets"
    " it for pushed images); the default is the chart's appVersion tag",
    "CKV_K8S_15": "pullPolicy IfNotPresent is right for immutable tags and digests; Always makes"
    " every pod start depend on the registry",
    "CKV_K8S_35": "the service reads its settings from environment variables (pydantic-settings,"
    " as the contract specifies); files would need a second configuration path",
}

# Failures accepted on named resources only; anything else checkov flags fails the test.
ACCEPTED = {
    (
        "CKV_K8S_8",
        r"^Pod\.keelson\.(keelson|platform)-test-readiness$",
    ): "the helm test pod runs once and exits; a liveness probe has nothing to watch",
    (
        "CKV_K8S_9",
        r"^Pod\.keelson\.(keelson|platform)-test-readiness$",
    ): "the helm test pod is never a Service endpoint; readiness has no meaning for it",
    ("CKV_K8S_40", r"^StatefulSet\.keelson-dev\.keelson-postgres$"): "the development PostgreSQL"
    " runs as the postgres image's own UID 70, which owns its data directory layout",
}


@pytest.fixture(scope="session")
def checkov_report(
    checkov: str, kubectl: str, chart: Chart, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    target = tmp_path_factory.mktemp("checkov")
    rendered = chart.render(api_versions=[MONITORING_API])
    (target / "chart.yaml").write_text(yaml.safe_dump_all(rendered.objects))
    # The render matrix's "platform" install (pooler, CloudNativePG, TLS, mesh annotations, extra
    # volumes and env), under another name so its resources do not collide with the defaults'.
    platform = MATRIX["platform"]
    platform_values = deep_merge(platform["values"], {"fullnameOverride": "platform"})
    platform_render = chart.render(
        platform_values, with_required=False, api_versions=platform["api_versions"]
    )
    (target / "platform.yaml").write_text(yaml.safe_dump_all(platform_render.objects))
    kustomized = run([kubectl, "kustomize", "k8s/overlays/dev"])
    assert kustomized.returncode == 0, kustomized.stderr
    (target / "dev-overlay.yaml").write_text(kustomized.stdout)
    shutil.copy(REPO / "Dockerfile", target / "Dockerfile")
    proc = run(
        [
            checkov,
            "--directory",
            str(target),
            "--framework",
            "kubernetes",
            "dockerfile",
            "--skip-check",
            ",".join(SKIPPED),
            "--output",
            "json",
            "--skip-download",
        ],
        timeout=300,
    )
    assert proc.stdout, proc.stderr
    report = json.loads(proc.stdout)
    return report if isinstance(report, list) else [report]


def by_framework(report: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {section["check_type"]: section for section in report}


def test_checkov_saw_the_manifests_and_the_dockerfile(checkov_report: list[dict[str, Any]]) -> None:
    sections = by_framework(checkov_report)
    assert set(sections) == {"kubernetes", "dockerfile"}
    assert sections["kubernetes"]["summary"]["resource_count"] >= 20
    assert sections["kubernetes"]["summary"]["parsing_errors"] == 0
    assert sections["dockerfile"]["summary"]["passed"] > 0


# Pod hardening checks every workload of the chart must be seen to pass (checkov silently skips
# kinds it does not parse, so "no failures" alone would not prove a new workload was checked).
HARDENING_CHECKS = {
    "CKV_K8S_20": "allowPrivilegeEscalation false",
    "CKV_K8S_22": "read-only root filesystem",
    "CKV_K8S_23": "no root container admission",
    "CKV_K8S_28": "NET_RAW dropped",
    "CKV_K8S_31": "seccomp RuntimeDefault",
    "CKV_K8S_37": "capabilities dropped",
    "CKV_K8S_38": "service account token not mounted",
    "CKV_K8S_40": "high UID",
    "CKV_K8S_11": "CPU limit",
    "CKV_K8S_13": "memory limit",
}


@pytest.mark.parametrize(
    "resource",
    [
        "Deployment.keelson.keelson",
        "Job.keelson.keelson-migrate",
        "CronJob.keelson.keelson-purge",
        "Deployment.keelson.platform",
        "Job.keelson.platform-migrate",
        "CronJob.keelson.platform-purge",
    ],
)
def test_every_chart_workload_passes_the_hardening_checks(
    checkov_report: list[dict[str, Any]], resource: str
) -> None:
    passed = {
        check["check_id"]
        for section in checkov_report
        for check in section["results"]["passed_checks"]
        if check["resource"] == resource
    }
    missing = set(HARDENING_CHECKS) - passed
    assert not missing, {check: HARDENING_CHECKS[check] for check in sorted(missing)}


def test_only_accepted_findings_remain(checkov_report: list[dict[str, Any]]) -> None:
    failures = [
        (check["check_id"], check["resource"], check.get("check_name", ""))
        for section in checkov_report
        for check in section["results"]["failed_checks"]
    ]
    unexpected = [
        failure
        for failure in failures
        if not any(
            failure[0] == check_id and re.search(resource, failure[1])
            for check_id, resource in ACCEPTED
        )
    ]
    assert not unexpected, "\n".join(f"{c} {r}: {n}" for c, r, n in unexpected)


def test_every_accepted_finding_still_occurs(checkov_report: list[dict[str, Any]]) -> None:
    """An exception that no longer matches anything must be removed, keeping the list honest."""
    failures = {
        (check["check_id"], check["resource"])
        for section in checkov_report
        for check in section["results"]["failed_checks"]
    }
    stale = [
        key
        for key in ACCEPTED
        if not any(c == key[0] and re.search(key[1], r) for c, r in failures)
    ]
    assert not stale


def test_skip_list_stays_short_and_justified() -> None:
    assert len(SKIPPED) + len(ACCEPTED) <= 6
    assert all(len(reason) > 40 for reason in [*SKIPPED.values(), *ACCEPTED.values()])
