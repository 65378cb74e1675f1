"""The migration hook Job runs before the release and finds everything it reads at its weight."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.chartlib import (
    Chart,
    Rendered,
    containers,
    hook_events,
    hook_weight,
    pod_spec,
)

MIGRATE_EVENTS = {"pre-install", "pre-upgrade"}


def migration_job(rendered: Rendered) -> dict[str, Any]:
    return rendered.one("Job", "keelson-migrate")


def references(job: dict[str, Any]) -> set[tuple[str, str]]:
    """(kind, name) of every object the Job's pods read: ServiceAccount, ConfigMaps, Secrets."""
    spec = pod_spec(job)
    refs = {("ServiceAccount", spec.get("serviceAccountName", "default"))}
    for container in containers(job):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                refs.add(("ConfigMap", source["configMapRef"]["name"]))
            if "secretRef" in source:
                refs.add(("Secret", source["secretRef"]["name"]))
        for env in container.get("env", []):
            ref = env.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                refs.add(("ConfigMap", ref["configMapKeyRef"]["name"]))
            if "secretKeyRef" in ref:
                refs.add(("Secret", ref["secretKeyRef"]["name"]))
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            refs.add(("ConfigMap", volume["configMap"]["name"]))
        if "secret" in volume:
            refs.add(("Secret", volume["secret"]["secretName"]))
    return refs


def test_job_runs_before_install_and_upgrade(default_render: Rendered) -> None:
    job = migration_job(default_render)
    assert hook_events(job) == MIGRATE_EVENTS
    assert hook_weight(job) == 0
    policy = job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    # Replaced by the next release's Job; never deleted on success, so its logs stay readable.
    assert policy == "before-hook-creation"


def test_job_is_bounded_and_cleaned_up(default_render: Rendered) -> None:
    spec = migration_job(default_render)["spec"]
    assert spec["backoffLimit"] == 2
    assert spec["activeDeadlineSeconds"] == 300
    assert spec["ttlSecondsAfterFinished"] == 3600
    assert pod_spec(migration_job(default_render))["restartPolicy"] == "Never"


def test_job_migrates_then_seeds(default_render: Rendered) -> None:
    spec = pod_spec(migration_job(default_render))
    assert [c["command"] for c in spec["initContainers"]] == [["keelson", "migrate"]]
    assert [c["command"] for c in spec["containers"]] == [["keelson", "seed"]]


def test_without_seed_the_job_only_migrates(chart: Chart) -> None:
    spec = pod_spec(migration_job(chart.render({"migrations": {"seed": False}})))
    assert "initContainers" not in spec
    assert [c["command"] for c in spec["containers"]] == [["keelson", "migrate"]]


@pytest.mark.parametrize(
    "values",
    [{}, {"migrations": {"seed": False}}],
    ids=["migrate-and-seed", "migrate-only"],
)
def test_everything_the_job_reads_exists_at_a_lower_hook_weight(
    chart: Chart, values: dict[str, Any]
) -> None:
    """At pre-install time no release object exists yet: only earlier hooks can be read."""
    rendered = chart.render(values)
    job = migration_job(rendered)
    for kind, name in references(job):
        target = rendered.find(kind, name)
        assert target is not None, f"the Job reads {kind}/{name}, which the chart does not render"
        assert hook_events(target) >= MIGRATE_EVENTS, f"{kind}/{name} is not a pre-install hook"
        assert hook_weight(target) < hook_weight(job), f"{kind}/{name} is not created first"


def test_hook_config_is_deleted_once_the_hook_is_over(default_render: Rendered) -> None:
    job = migration_job(default_render)
    for kind, name in references(job):
        target = default_render.one(kind, name)
        policy = set(target["metadata"]["annotations"]["helm.sh/hook-delete-policy"].split(","))
        assert policy == {"before-hook-creation", "hook-succeeded", "hook-failed"}, (kind, name)


def test_hook_config_matches_the_release_config(default_render: Rendered) -> None:
    """The Job and the pods must see the same settings and secrets."""
    assert (
        default_render.one("ConfigMap", "keelson-migrate")["data"]
        == default_render.one("ConfigMap", "keelson")["data"]
    )
    assert (
        default_render.one("Secret", "keelson-migrate")["stringData"]
        == default_render.one("Secret", "keelson")["stringData"]
    )


def test_with_existing_secret_the_job_reads_it_and_no_secret_is_rendered(chart: Chart) -> None:
    rendered = chart.render(
        {"secret": {"existingSecret": "keelson-credentials"}}, with_required=False
    )
    assert not rendered.all("Secret")
    job = migration_job(rendered)
    secrets = {name for kind, name in references(job) if kind == "Secret"}
    assert secrets == {"keelson-credentials"}
    for kind, name in references(job) - {("Secret", "keelson-credentials")}:
        target = rendered.one(kind, name)
        assert hook_weight(target) < hook_weight(job)


def test_migrations_off_renders_no_hooks_but_the_helm_test(chart: Chart) -> None:
    rendered = chart.render({"migrations": {"enabled": False}})
    assert [(o["kind"], hook_events(o)) for o in rendered.hooks()] == [("Pod", {"test"})]


def test_job_pods_are_not_selected_by_the_server_service(default_render: Rendered) -> None:
    selector = default_render.one("Service", "keelson")["spec"]["selector"]
    labels = migration_job(default_render)["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= labels.items()
