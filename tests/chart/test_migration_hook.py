"""The migration hook Job runs before the release and finds everything it reads at its weight."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.chartlib import (
    NEWEST_KUBE,
    Chart,
    Rendered,
    containers,
    hook_events,
    hook_weight,
    pod_labels,
    pod_spec,
    pod_template,
    validate_object,
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
    annotations = job["metadata"]["annotations"]
    # Deleted once it succeeded; a failed Job and its pods' logs stay (no hook-failed) until the
    # next release's Job replaces them.
    assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {
        "before-hook-creation",
        "hook-succeeded",
    }
    # Helm 4 copies a failed hook's logs into the install/upgrade output.
    assert annotations["helm.sh/hook-output-log-policy"] == "hook-failed"


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
    for kind, name in references(job) | {("NetworkPolicy", "keelson-migrate")}:
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


# -- issue 16 item 4: a stuck migration must not hurt the running release ---------------------


def test_the_lock_timeout_reaches_the_job(chart: Chart) -> None:
    default = chart.render().one("ConfigMap", "keelson-migrate")["data"]
    assert default["MIGRATION_LOCK_TIMEOUT_MS"] == "5000"
    rendered = chart.render({"migrations": {"lockTimeoutMs": 1500}})
    assert (
        rendered.one("ConfigMap", "keelson-migrate")["data"]["MIGRATION_LOCK_TIMEOUT_MS"] == "1500"
    )
    job = migration_job(rendered)
    for container in containers(job):
        assert {"configMapRef": {"name": "keelson-migrate"}} in container["envFrom"]


def test_the_migration_url_reaches_the_job_only(chart: Chart) -> None:
    owner = "postgresql://owner:s3cret@db.example.internal:5432/keelson"
    rendered = chart.render({"secret": {"migrationDatabaseUrl": owner}})
    assert (
        rendered.one("Secret", "keelson-migrate")["stringData"]["MIGRATION_DATABASE_URL"] == owner
    )
    for container in containers(migration_job(rendered)):
        (env,) = [e for e in container["env"] if e["name"] == "MIGRATION_DATABASE_URL"]
        assert env["valueFrom"]["secretKeyRef"] == {
            "name": "keelson-migrate",
            "key": "MIGRATION_DATABASE_URL",
            "optional": True,
        }
    for workload in (rendered.deployment, rendered.one("CronJob")):
        names = {e["name"] for c in containers(workload) for e in c["env"]}
        assert "MIGRATION_DATABASE_URL" not in names
    from_cnpg = chart.render({"database": {"migrationUrlSecret": {"name": "pg-superuser"}}})
    for container in containers(migration_job(from_cnpg)):
        (env,) = [e for e in container["env"] if e["name"] == "MIGRATION_DATABASE_URL"]
        assert env["valueFrom"]["secretKeyRef"] == {"name": "pg-superuser", "key": "uri"}


# -- issue 16 item 3: the hook carries the platform's identity, mesh and network settings -------

IDENTITY = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/keelson"}


def test_the_hook_service_account_carries_the_workload_identity(chart: Chart) -> None:
    rendered = chart.render({"serviceAccount": {"annotations": IDENTITY}})
    job = migration_job(rendered)
    account = rendered.one("ServiceAccount", pod_spec(job)["serviceAccountName"])
    assert hook_weight(account) < hook_weight(job)
    assert account["metadata"]["annotations"].items() >= IDENTITY.items()
    assert rendered.one("ServiceAccount", "keelson")["metadata"]["annotations"] == IDENTITY


def test_an_existing_service_account_is_used_by_the_job(chart: Chart) -> None:
    rendered = chart.render({"serviceAccount": {"create": False, "name": "platform-keelson"}})
    assert not rendered.all("ServiceAccount")
    for workload in (migration_job(rendered), rendered.deployment, rendered.one("CronJob")):
        assert pod_spec(workload)["serviceAccountName"] == "platform-keelson"


JOB_POD_VALUES: dict[str, Any] = {
    "podAnnotations": {"sidecar.istio.io/inject": "true", "team": "api"},
    "podLabels": {"cost-center": "42"},
    "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
    "priorityClassName": "normal",
    "nodeSelector": {"pool": "general"},
}
JOB_OWN = {
    "podAnnotations": {"sidecar.istio.io/inject": "false"},
    "podLabels": {"job-kind": "batch"},
    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
    "priorityClassName": "batch-low",
    "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "96Mi"}},
}


@pytest.mark.parametrize("job", ["migrations", "purge"])
def test_job_pods_get_their_own_settings_over_the_global_ones(chart: Chart, job: str) -> None:
    rendered = chart.render({**JOB_POD_VALUES, job: JOB_OWN})
    workload = migration_job(rendered) if job == "migrations" else rendered.one("CronJob")
    template = pod_template(workload)
    # Merged, the Job's own winning: a mesh sidecar that never exits is switched off here only.
    assert template["metadata"]["annotations"] == {
        "sidecar.istio.io/inject": "false",
        "team": "api",
    }
    assert pod_labels(workload).items() >= {"cost-center": "42", "job-kind": "batch"}.items()
    spec = pod_spec(workload)
    assert spec["affinity"] == JOB_OWN["affinity"]
    assert spec["priorityClassName"] == "batch-low"
    assert spec["nodeSelector"] == {"pool": "general"}  # not set for the Job: the global one
    assert {c["name"]: c["resources"] for c in containers(workload)} == {
        c["name"]: JOB_OWN["resources"] for c in containers(workload)
    }
    assert (
        pod_template(rendered.deployment)["metadata"]["annotations"]["sidecar.istio.io/inject"]
        == "true"
    )


@pytest.mark.parametrize("job", ["migrations", "purge"])
def test_job_pods_fall_back_to_the_global_settings(chart: Chart, job: str) -> None:
    rendered = chart.render(JOB_POD_VALUES)
    workload = migration_job(rendered) if job == "migrations" else rendered.one("CronJob")
    assert pod_template(workload)["metadata"]["annotations"] == JOB_POD_VALUES["podAnnotations"]
    spec = pod_spec(workload)
    assert spec["affinity"] == JOB_POD_VALUES["affinity"]
    assert spec["priorityClassName"] == "normal"
    server_resources = containers(rendered.deployment)[0]["resources"]
    for container in containers(workload):
        assert container["resources"] == server_resources


def hook_network_policy(rendered: Rendered) -> dict[str, Any]:
    return rendered.one("NetworkPolicy", "keelson-migrate")


def test_a_hook_network_policy_lets_the_migration_reach_dns_and_postgres(
    default_render: Rendered,
) -> None:
    """In a default-deny namespace the release's NetworkPolicy does not exist at pre-install."""
    policy = hook_network_policy(default_render)
    job = migration_job(default_render)
    assert hook_events(policy) == MIGRATE_EVENTS
    assert hook_weight(policy) < hook_weight(job)
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels(job).items()
    assert not selector.items() <= pod_labels(default_render.deployment).items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == []
    assert policy["spec"]["egress"] == [
        {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
        {"ports": [{"port": 5432, "protocol": "TCP"}]},
    ]
    validate_object(policy, NEWEST_KUBE)


def test_the_hook_network_policy_follows_the_database_peers(chart: Chart) -> None:
    cnpg = {"podSelector": {"matchLabels": {"cnpg.io/cluster": "pg"}}}
    rendered = chart.render({"networkPolicy": {"database": {"to": [cnpg]}}})
    _, postgres = hook_network_policy(rendered)["spec"]["egress"]
    assert postgres["to"] == [cnpg]
    assert not chart.render({"networkPolicy": {"enabled": False}}).all("NetworkPolicy")
