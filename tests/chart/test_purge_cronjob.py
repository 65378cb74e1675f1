"""The purge CronJob runs the service's real `keelson purge-expired`, like the server pods do."""

from __future__ import annotations

from typing import Any

import pytest

from service.cli import _parser
from tests.chart.chartlib import Chart, Rendered, containers, hook_events, pod_labels, pod_spec


def cronjob(rendered: Rendered) -> dict[str, Any]:
    return rendered.one("CronJob", "keelson-purge")


def purge_container(rendered: Rendered) -> dict[str, Any]:
    (container,) = containers(cronjob(rendered))
    return container


def test_it_runs_an_existing_cli_command(default_render: Rendered) -> None:
    command = purge_container(default_render)["command"]
    assert command == ["keelson", "purge-expired"]
    assert _parser().parse_args(command[1:]).command == "purge-expired"


def test_schedule_and_job_limits(default_render: Rendered) -> None:
    job = cronjob(default_render)
    assert job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["schedule"] == "17 3 * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (3, 1)
    job_spec = spec["jobTemplate"]["spec"]
    assert (job_spec["backoffLimit"], job_spec["activeDeadlineSeconds"]) == (2, 1800)
    assert pod_spec(job)["restartPolicy"] == "Never"


def test_values_reach_the_cronjob(chart: Chart) -> None:
    resources = {
        "requests": {"cpu": "20m", "memory": "96Mi"},
        "limits": {"cpu": "200m", "memory": "192Mi"},
    }
    rendered = chart.render(
        {
            "purge": {
                "schedule": "@hourly",
                "successfulJobsHistoryLimit": 1,
                "failedJobsHistoryLimit": 5,
                "backoffLimit": 0,
                "activeDeadlineSeconds": 600,
                "resources": resources,
            },
            "nodeSelector": {"pool": "batch"},
        }
    )
    spec = cronjob(rendered)["spec"]
    assert spec["schedule"] == "@hourly"
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (1, 5)
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 0
    assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 600
    assert purge_container(rendered)["resources"] == resources
    assert pod_spec(cronjob(rendered))["nodeSelector"] == {"pool": "batch"}


@pytest.mark.parametrize(
    "values",
    [{}, {"secret": {"existingSecret": "keelson-credentials"}}],
    ids=["chart-secret", "existing-secret"],
)
def test_same_image_and_environment_as_the_server(chart: Chart, values: dict[str, Any]) -> None:
    rendered = chart.render(values, with_required=not values)
    purge = purge_container(rendered)
    server = containers(rendered.deployment)[0]
    for key in ("image", "imagePullPolicy", "envFrom", "env", "securityContext", "volumeMounts"):
        assert purge[key] == server[key], key
    server_pod, purge_pod = pod_spec(rendered.deployment), pod_spec(cronjob(rendered))
    for key in ("serviceAccountName", "automountServiceAccountToken", "securityContext", "volumes"):
        assert purge_pod[key] == server_pod[key], key


def test_it_is_a_release_object_not_a_hook(default_render: Rendered) -> None:
    """It reads the release ConfigMap and Secret, which exist whenever a schedule fires."""
    assert not hook_events(cronjob(default_render))
    env = purge_container(default_render)
    assert env["envFrom"] == [{"configMapRef": {"name": "keelson"}}]
    assert default_render.one("ConfigMap", "keelson") in default_render.release_objects()
    assert default_render.one("Secret", "keelson") in default_render.release_objects()


def test_its_pods_are_not_server_endpoints(default_render: Rendered) -> None:
    selector = default_render.one("Service", "keelson")["spec"]["selector"]
    labels = pod_labels(cronjob(default_render))
    assert labels["app.kubernetes.io/component"] == "purge"
    assert not selector.items() <= labels.items()


def test_disabled_by_value(chart: Chart) -> None:
    rendered = chart.render({"purge": {"enabled": False}})
    assert not rendered.all("CronJob")


def test_name_fits_the_cronjob_limit(chart: Chart) -> None:
    """Kubernetes refuses CronJob names over 52 characters (its Jobs append 11)."""
    rendered = chart.render({"fullnameOverride": "k" * 63})
    name = cronjob_name(rendered)
    assert len(name) <= 52
    assert name.endswith("-purge")


def cronjob_name(rendered: Rendered) -> str:
    (job,) = rendered.all("CronJob")
    return job["metadata"]["name"]
