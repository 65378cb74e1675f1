"""The shipped Grafana dashboard: valid, portable (datasource and job chosen by variables), and its
queries parse and read only metrics Keelson exports or its own recording rules."""

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.ops.metric_names import (
    CONTRACT_METRICS,
    DASHBOARD_FILE,
    DEFAULT_COLLECTOR_METRICS,
    base_metric_name,
    dashboard_exprs,
    iter_panels,
    load_dashboard,
    promql_metric_names,
    recording_rule_names,
    variable_query,
)

if TYPE_CHECKING:
    from tests.ops.conftest import RunPromtool

DATASOURCE_UIDS = {"${datasource}", "$datasource"}
DASHBOARD = load_dashboard()
VARIABLES = {variable["name"]: variable for variable in DASHBOARD["templating"]["list"]}
PANELS = list(iter_panels())
QUERY_PANELS = [panel for panel in PANELS if panel.get("targets")]
TARGETS = [(panel, target) for panel in QUERY_PANELS for target in panel["targets"]]
TARGET_IDS = [f"{panel['title']}/{target['refId']}" for panel, target in TARGETS]


def with_variables_substituted(expr: str) -> str:
    """Grafana interpolation as promtool needs it: intervals become durations, others a regex."""
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)\}?", "5m", expr)
    return re.sub(r"\$\{?[A-Za-z_]\w*\}?", ".*", expr)


def test_dashboard_file_is_a_json_object() -> None:
    assert isinstance(json.loads(DASHBOARD_FILE.read_text()), dict)


def test_dashboard_has_stable_uid_and_current_schema() -> None:
    assert DASHBOARD["uid"] == "keelson-overview"
    assert DASHBOARD["schemaVersion"] >= 39
    assert DASHBOARD["title"]
    assert DASHBOARD.get("id") is None


def test_datasource_variable_selects_a_prometheus_datasource() -> None:
    variable = VARIABLES["datasource"]

    assert variable["type"] == "datasource"
    assert variable["query"] == "prometheus"


@pytest.mark.parametrize("name", ["namespace", "job"])
def test_namespace_and_job_variables_come_from_label_values(name: str) -> None:
    variable = VARIABLES[name]

    assert variable["type"] == "query"
    assert variable["datasource"]["uid"] in DATASOURCE_UIDS
    assert re.fullmatch(
        rf"label_values\(keelson_build_info(\{{.*\}})?, {name}\)", variable_query(variable)
    )
    assert variable["includeAll"] is True
    assert variable["allValue"] == ".*"


@pytest.mark.parametrize("panel", PANELS, ids=[panel["title"] for panel in PANELS])
def test_every_panel_uses_the_datasource_variable(panel: dict[str, Any]) -> None:
    assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    for target in panel.get("targets", []):
        assert target["datasource"]["uid"] in DATASOURCE_UIDS


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in PANELS]

    assert len(ids) == len(set(ids))


def test_panels_do_not_overlap_on_the_grid() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in PANELS:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize(("panel", "target"), TARGETS, ids=TARGET_IDS)
def test_every_query_is_scoped_by_the_namespace_and_job_variables(
    panel: dict[str, Any], target: dict[str, Any]
) -> None:
    expr = target["expr"]
    for name in promql_metric_names(expr):
        for match in re.finditer(rf"(?<![\w:]){re.escape(name)}(?![\w:])", expr):
            selector = re.match(r"\s*\{([^}]*)\}", expr[match.end() :])
            assert selector, f"{name} has no label selector in {expr}"
            assert 'namespace=~"$namespace"' in selector.group(1), expr
            assert 'job=~"$job"' in selector.group(1), expr


def test_no_job_name_is_hard_coded() -> None:
    text = DASHBOARD_FILE.read_text()
    job_matchers = set(re.findall(r'\bjob\s*(?:=|!=|=~|!~)\s*\\?"([^"\\]*)', text))

    assert job_matchers == {"$job"}


@pytest.mark.parametrize(("panel", "target"), TARGETS, ids=TARGET_IDS)
def test_every_query_parses_with_promtool(
    panel: dict[str, Any], target: dict[str, Any], promtool: "RunPromtool", tmp_path: Path
) -> None:
    rules = tmp_path / "dashboard-query.yaml"
    expr = with_variables_substituted(target["expr"])
    record = {"record": "dashboard:query", "expr": expr}
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [record]}]}))

    result = promtool("check", "rules", rules)

    assert result.returncode == 0, f"{expr}\n{result.stdout}{result.stderr}"
    assert "SUCCESS" in result.stdout


def test_dashboard_reads_only_contract_metrics_or_shipped_recording_rules() -> None:
    allowed = {*CONTRACT_METRICS, *DEFAULT_COLLECTOR_METRICS, *recording_rule_names()}

    used = {base_metric_name(n) for expr in dashboard_exprs() for n in promql_metric_names(expr)}

    assert used <= allowed, used - allowed


def test_dashboard_shows_every_contract_metric() -> None:
    used = {base_metric_name(n) for expr in dashboard_exprs() for n in promql_metric_names(expr)}

    assert set(CONTRACT_METRICS) <= used, set(CONTRACT_METRICS) - used


@pytest.mark.parametrize(("quantile", "label"), [("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99")])
def test_latency_quantile_panel_aggregates_buckets_by_le_and_route(
    quantile: str, label: str
) -> None:
    panel = next(p for p in QUERY_PANELS if p["title"] == f"Latency {label} by route")
    expr = panel["targets"][0]["expr"]

    assert expr.startswith(f"histogram_quantile({quantile}, sum by (le, route) (rate(")
    assert "keelson_http_request_duration_seconds_bucket{" in expr
    assert panel["fieldConfig"]["defaults"]["unit"] == "s"


def test_error_ratio_panel_counts_only_5xx() -> None:
    panel = next(p for p in QUERY_PANELS if p["title"] == "5xx error ratio")
    for target in panel["targets"]:
        assert re.findall(r'status\s*(?:=|!=|=~|!~)\s*"[^"]*"', target["expr"]) == ['status=~"5.."']


def test_burn_rate_panels_divide_recorded_ratios_by_the_error_budget() -> None:
    budgets = {"Availability burn rate": "0.001", "Latency burn rate": "0.01"}
    for title, budget in budgets.items():
        panel = next(p for p in QUERY_PANELS if p["title"] == title)
        for target in panel["targets"]:
            assert re.fullmatch(
                rf"namespace_job:\S+:ratio_rate\w+\{{.*\}} / {budget}", target["expr"]
            )
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [step["value"] for step in steps] == [None, 6, 14.4]


def test_pod_count_panel_counts_build_info_series() -> None:
    panel = next(p for p in QUERY_PANELS if p["title"] == "Pods")

    assert panel["targets"][0]["expr"].startswith("count(keelson_build_info{")
