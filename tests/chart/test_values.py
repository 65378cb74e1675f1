"""values.yaml, schema and README agree; bad values and an overflowing pool budget do not render."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import pytest
import yaml

from scripts.chart_values_table import descriptions as values_descriptions
from scripts.chart_values_table import leaf_paths
from tests.chart.chartlib import CHART, Chart, run, schema_error_mentions

VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
README = (CHART / "README.md").read_text()

BUDGET = "connection pool budget exceeded"


# -- connection-pool budget -------------------------------------------------------------------


def test_defaults_fit_the_budget_with_room_to_spare(chart: Chart) -> None:
    """(3 + 1 + 1) * (10 + 5) + 2 + 2 = 79 <= 100 - 10."""
    rendered = chart.render()
    assert rendered.deployment["spec"]["minReadySeconds"] == 30
    assert rendered.one("HorizontalPodAutoscaler")["spec"]["maxReplicas"] == 3


def test_terminating_pods_count_against_the_budget(chart: Chart) -> None:
    """Issue 16 item 2: the old chart accepted 4 replicas, (4 + 1) * 15 + 2 + 1 = 78, but an old
    pod keeps its pool through preStop and shutdown while its replacement already runs."""
    error = chart.render_error({"autoscaling": {"maxReplicas": 4}})
    assert (
        "connection pool budget exceeded: (maxReplicas 4 + maxSurge 1 + terminating 1) * (poolSize"
        " 10 + maxOverflow 5) + migration job 2 + purge jobs 2 = 94 > database.maxConnections 100"
        " - database.reservedConnections 10 = 90; terminating = min(maxReplicas 4, maxUnavailable"
        " 0 + (maxSurge 1 + maxUnavailable 0) * ceil(terminationGracePeriodSeconds 30 /"
        " minReadySeconds 30))"
    ) in error


def test_without_min_ready_seconds_every_old_pod_may_be_terminating(chart: Chart) -> None:
    error = chart.render_error({"minReadySeconds": 0})
    assert "(maxReplicas 3 + maxSurge 1 + terminating 3) *" in error
    assert "= 109 > " in error
    assert "terminating = maxReplicas 3 (minReadySeconds 0 does not bound" in error
    chart.render({"minReadySeconds": 0, "database": {"maxConnections": 119}})


@pytest.mark.parametrize(
    ("values", "terminating"),
    [
        ({"minReadySeconds": 15}, 2),  # ceil(30 / 15) steps overlap within one grace period
        ({"minReadySeconds": 31}, 1),
        ({"minReadySeconds": 7}, 3),  # ceil(30 / 7) = 5 steps, but only 3 old pods exist
        ({"rollingUpdate": {"maxUnavailable": 1}}, 3),  # 1 at once + (1 + 1) per step
        ({"lifecycle": {"shutdownTimeoutSeconds": 50}}, 2),  # grace 60 s spans two steps
    ],
)
def test_overlapping_rollout_steps_count_every_terminating_pod(
    chart: Chart, values: dict[str, Any], terminating: int
) -> None:
    error = chart.render_error({**values, "database": {"maxConnections": 60}})
    assert f"(maxReplicas 3 + maxSurge 1 + terminating {terminating}) *" in error


def test_a_budget_overflow_fails_with_the_arithmetic(chart: Chart) -> None:
    error = chart.render_error({"autoscaling": {"maxReplicas": 6}})
    assert (
        "connection pool budget exceeded: (maxReplicas 6 + maxSurge 1 + terminating 1) * (poolSize"
        " 10 + maxOverflow 5) + migration job 2 + purge jobs 2 = 124 > database.maxConnections 100"
        " - database.reservedConnections 10 = 90"
    ) in error


def test_the_budget_boundary_is_inclusive(chart: Chart) -> None:
    # (4 + 1 + 1) * (10 + 5) + 0 + 0 = 90 = 100 - 10: exactly full renders; one more does not.
    at_limit = {
        "autoscaling": {"maxReplicas": 4},
        "migrations": {"enabled": False},
        "purge": {"enabled": False},
    }
    chart.render(at_limit)
    error = chart.render_error({**at_limit, "database": {"reservedConnections": 11}})
    assert "= 90 > database.maxConnections 100 - database.reservedConnections 11 = 89" in error


def test_replica_count_counts_when_autoscaling_is_off(chart: Chart) -> None:
    error = chart.render_error({"autoscaling": {"enabled": False}, "replicaCount": 8})
    assert (
        "(maxReplicas 8 + maxSurge 1 + terminating 1) * (poolSize 10 + maxOverflow 5) + migration"
        " job 2 + purge jobs 2 = 154" in error
    )


def test_a_percentage_surge_rounds_up_like_kubernetes(chart: Chart) -> None:
    error = chart.render_error(
        {"rollingUpdate": {"maxSurge": "25%"}, "database": {"maxConnections": 80}}
    )
    # ceil(3 * 25 %) = 1 extra pod: (3 + 1 + 1) * 15 + 2 + 2 = 79 > 80 - 10.
    assert (
        "(maxReplicas 3 + maxSurge 1 + terminating 1) * (poolSize 10 + maxOverflow 5) + migration"
        " job 2 + purge jobs 2 = 79 > " in error
    )


def test_the_migration_job_counts_only_when_enabled(chart: Chart) -> None:
    tight = {"database": {"maxConnections": 87}}  # budget 77: 77 without the Job, 79 with it
    assert BUDGET in chart.render_error(tight)
    chart.render({**tight, "migrations": {"enabled": False}})


def test_the_purge_jobs_count_two_connections_only_when_enabled(chart: Chart) -> None:
    """A manual `kubectl create job --from=cronjob` runs beside a scheduled run: Forbid only
    keeps scheduled runs apart."""
    tight = {"database": {"maxConnections": 87}}  # budget 77: servers 75 + migration job 2
    error = chart.render_error(tight)
    assert "+ migration job 2 + purge jobs 2 = 79 > database.maxConnections 87" in error
    rendered = chart.render({**tight, "purge": {"enabled": False}})
    assert not rendered.all("CronJob")


def test_a_bigger_database_allows_more_pods(chart: Chart) -> None:
    rendered = chart.render(
        {"autoscaling": {"maxReplicas": 10}, "database": {"maxConnections": 200}}
    )
    assert rendered.one("HorizontalPodAutoscaler")["spec"]["maxReplicas"] == 10


# -- rollout, disruption and scrape settings that cannot work ----------------------------------


@pytest.mark.parametrize(
    "rolling",
    [
        {"maxSurge": 0, "maxUnavailable": 0},
        {"maxSurge": "0%", "maxUnavailable": "10%"},  # 10 % of 3 rounds down to 0 pods
    ],
)
def test_a_rollout_that_can_replace_no_pod_is_refused(
    chart: Chart, rolling: dict[str, Any]
) -> None:
    error = chart.render_error({"rollingUpdate": rolling})
    assert "are both 0 pods at 3 replicas: the rollout could never replace a pod" in error


@pytest.mark.parametrize("max_unavailable", [0, "0%"])
def test_a_pdb_that_allows_no_disruption_is_refused(
    chart: Chart, max_unavailable: int | str
) -> None:
    error = chart.render_error({"podDisruptionBudget": {"maxUnavailable": max_unavailable}})
    assert f"podDisruptionBudget.maxUnavailable ({max_unavailable}) allows no disruption" in error
    rendered = chart.render({"podDisruptionBudget": {"maxUnavailable": "10%"}})  # rounds up to 1
    assert rendered.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == "10%"


@pytest.mark.parametrize(
    ("interval", "timeout"), [("30s", "30s"), ("30s", "1m"), ("1m", "1m0s"), ("1m", "90s")]
)
def test_a_scrape_timeout_not_below_the_interval_is_refused(
    chart: Chart, interval: str, timeout: str
) -> None:
    values = {"metrics": {"serviceMonitor": {"interval": interval, "scrapeTimeout": timeout}}}
    error = chart.render_error(values)
    assert f"metrics.serviceMonitor.scrapeTimeout ({timeout}) must be shorter than" in error


def test_a_scrape_timeout_below_the_interval_renders(chart: Chart) -> None:
    values = {"metrics": {"serviceMonitor": {"interval": "1m30s", "scrapeTimeout": "1m29s"}}}
    chart.render(values)


def test_a_progress_deadline_within_min_ready_seconds_is_refused(chart: Chart) -> None:
    error = chart.render_error({"minReadySeconds": 120, "progressDeadlineSeconds": 120})
    assert "progressDeadlineSeconds (120) must exceed minReadySeconds (120)" in error


# -- required values and cross-field checks ----------------------------------------------------


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("databaseUrl", "secret.databaseUrl is required"),
        ("secretKey", "secret.secretKey is required"),
        ("firstSuperuserPassword", "secret.firstSuperuserPassword is required"),
    ],
)
def test_secrets_are_required_without_an_existing_secret(
    chart: Chart, missing: str, message: str
) -> None:
    values = {
        "secret": {
            "databaseUrl": "postgresql://u:p@db:5432/keelson",
            "secretKey": "k" * 40,
            "firstSuperuserPassword": "long-enough",
        }
    }
    del values["secret"][missing]
    assert message in chart.render_error(values, with_required=False)


def test_pure_defaults_name_what_is_missing(chart: Chart) -> None:
    assert "secret.databaseUrl is required" in chart.render_error(with_required=False)


def test_a_short_secret_key_is_refused_outside_local(chart: Chart) -> None:
    error = chart.render_error({"secret": {"secretKey": "too-short"}})
    assert (
        "secret.secretKey must be at least 32 characters when config.environment=production"
        in error
    )
    chart.render({"secret": {"secretKey": "too-short"}, "config": {"environment": "local"}})


def test_a_short_previous_key_is_refused_outside_local(chart: Chart) -> None:
    good = "Zq8rT2vW9xY4bN7mK3pL6hJ1gF5dS0aQeRtYuIoQ"
    values = {"secret": {"jwtPreviousKeys": f"2026-01:{good}, ,2025-07:too-short"}}
    error = chart.render_error(values)
    assert (
        "secret.jwtPreviousKeys entry 1: the key must be at least 32 characters when"
        " config.environment=production"
    ) in error
    assert "too-short" not in error
    chart.render({"secret": {"jwtPreviousKeys": f"2026-01:{good},{good[::-1]}"}})
    chart.render({**values, "config": {"environment": "local"}})


def test_min_replicas_above_max_is_refused(chart: Chart) -> None:
    error = chart.render_error({"autoscaling": {"minReplicas": 4, "maxReplicas": 3}})
    assert "autoscaling.minReplicas (4) must not exceed autoscaling.maxReplicas (3)" in error


# -- the schema --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"autoscaling": {"maxReplicas": 0}}, "/autoscaling/maxReplicas"),
        ({"database": {"poolSize": 0}}, "/database/poolSize"),
        ({"database": {"poolSize": 201}}, "/database/poolSize"),
        ({"config": {"environment": "prod"}}, "/config/environment"),
        ({"config": {"logLevel": "TRACE"}}, "/config/logLevel"),
        ({"config": {"otel": {"TRACES_EXPORTER": "otlp"}}}, "/config/otel"),
        ({"config": {"otel": {"OTEL_SERVICE_NAME": "x"}}}, "OTEL_SERVICE_NAME"),
        ({"config": {"otelTracesExporter": "jaeger"}}, "/config/otelTracesExporter"),
        ({"config": {"accessTokenExpireMinutes": 1441}}, "/config/accessTokenExpireMinutes"),
        ({"config": {"jwtKeyId": "key 1"}}, "/config/jwtKeyId"),
        ({"config": {"trustedProxyCidrs": ["ingress"]}}, "/config/trustedProxyCidrs/0"),
        (
            {"config": {"loginThrottle": {"maxFailuresPerIp": 0}}},
            "/config/loginThrottle/maxFailuresPerIp",
        ),
        ({"config": {"maxRequestBodyBytes": 100}}, "/config/maxRequestBodyBytes"),
        ({"server": {"forwardedAllowIps": "10.0.0.0/8; 10.1.0.0/16"}}, "/server/forwardedAllowIps"),
        ({"purge": {"schedule": "daily"}}, "/purge/schedule"),
        ({"purge": {"activeDeadlineSeconds": 0}}, "/purge/activeDeadlineSeconds"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"rollingUpdate": {"maxSurge": "lots"}}, "/rollingUpdate/maxSurge"),
        ({"secret": {"databaseUrl": "mysql://u:p@db/k"}}, "/secret/databaseUrl"),
        ({"secret": {"firstSuperuserPassword": "short"}}, "/secret/firstSuperuserPassword"),
        ({"server": {"port": 80}}, "/server/port"),
        ({"podSecurityContext": {"runAsUser": 0}}, "/podSecurityContext/runAsUser"),
        ({"resources": {"requests": {"cpu": "lots", "memory": "1Gi"}}}, "/resources/requests/cpu"),
        (
            {"metrics": {"serviceMonitor": {"interval": "30 seconds"}}},
            "/metrics/serviceMonitor/interval",
        ),
        ({"autoscaling": {"enabld": True}}, "/autoscaling enabld"),
        ({"replicas": 3}, "replicas"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_schema_violations_fail_to_render(chart: Chart, values: dict[str, Any], where: str) -> None:
    error = chart.render_error(values)
    assert schema_error_mentions(error, *where.split()), error


def test_schema_is_strict_everywhere() -> None:
    """Every object in the schema declares its properties and rejects unknown ones."""

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}[{index}]")

    walk(SCHEMA, "#")


def test_schema_describes_every_value() -> None:
    def covered(schema: dict[str, Any], path: list[str]) -> bool:
        node = schema
        for key in path:
            properties = node.get("properties", {})
            if key not in properties:
                return bool(node.get("additionalProperties")) or "patternProperties" in node
            node = properties[key]
        return True

    missing = [p for p in leaf_paths(VALUES, SCHEMA) if not covered(SCHEMA, p.split("."))]
    assert not missing


# -- documentation -----------------------------------------------------------------------------


def test_every_value_is_commented() -> None:
    """Each key in values.yaml has a comment line directly above it (or above its comment block)."""
    lines = VALUES_TEXT.splitlines()
    uncommented = []
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z0-9_.]+):", line)
        if not match or line.lstrip().startswith("-"):
            continue
        previous = lines[index - 1].strip() if index else ""
        if not previous.startswith("#") and not lines[index + 1].startswith(match.group(1) + "  "):
            uncommented.append(line.strip())
    assert not uncommented, f"keys without a comment: {uncommented}"


def test_readme_table_is_what_the_generator_writes() -> None:
    proc = run([sys.executable, "scripts/chart_values_table.py", "--check"])
    assert proc.returncode == 0, proc.stderr


def test_readme_table_lists_every_value() -> None:
    documented = set(re.findall(r"^\| `([^`]+)` \|", README, flags=re.MULTILINE))
    assert set(leaf_paths(VALUES, SCHEMA)) == documented


def test_readme_defaults_match_values_yaml() -> None:
    rows = dict(re.findall(r"^\| `([^`]+)` \| [^|]+ \| `([^`]*)` \|", README, flags=re.MULTILINE))
    for path in leaf_paths(VALUES, SCHEMA):
        node: Any = VALUES
        for key in path.split("."):
            node = node[key]
        assert rows[path] == json.dumps(node), path


def test_readme_descriptions_match_values_yaml() -> None:
    rows = dict(
        re.findall(r"^\| `([^`]+)` \| [^|]+ \| `[^`]*` \| (.*) \|$", README, flags=re.MULTILINE)
    )
    descriptions = values_descriptions(VALUES_TEXT)
    for path in leaf_paths(VALUES, SCHEMA):
        assert rows[path] == descriptions[path], path


# -- chart metadata ----------------------------------------------------------------------------

CHART_YAML = yaml.safe_load((CHART / "Chart.yaml").read_text())


def test_chart_metadata_is_complete_for_artifact_hub() -> None:
    assert CHART_YAML["maintainers"]
    assert CHART_YAML["home"] == CHART_YAML["sources"][0]
    prefix = "https://raw.githubusercontent.com/keelson/keelson/main/"
    assert CHART_YAML["icon"].startswith(prefix)
    icon = CHART.parents[1] / CHART_YAML["icon"].removeprefix(prefix)
    assert icon.read_text().lstrip().startswith("<svg"), "the icon URL names a file in this repo"
    annotations = CHART_YAML["annotations"]
    (image,) = yaml.safe_load(annotations["artifacthub.io/images"])
    assert image["image"] == f"{VALUES['image']['repository']}:{CHART_YAML['appVersion']}"
    for change in yaml.safe_load(annotations["artifacthub.io/changes"]):
        assert change["kind"] in {"added", "changed", "deprecated", "removed", "fixed", "security"}
        assert change["description"]
