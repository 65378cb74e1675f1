"""The shipped alert rules: promtool accepts and unit-tests them, and they keep the contract."""

import re
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from tests.ops.metric_names import (
    CONTRACT_METRICS,
    DEFAULT_COLLECTOR_METRICS,
    OBSERVABILITY_DOC,
    RULE_TESTS_DIR,
    RULES_FILE,
    base_metric_name,
    exposed_metric_names,
    iter_rules,
    metric_names_used,
    promql_metric_names,
    recording_rule_names,
    rule_exprs,
)

if TYPE_CHECKING:
    from tests.ops.conftest import RunPromtool

ALERTS = [rule for rule in iter_rules() if "alert" in rule]
ALERT_NAMES = [rule["alert"] for rule in ALERTS]
RULE_TEST_FILES = sorted(RULE_TESTS_DIR.glob("*.yaml"))
# Absolute, so the link works from Alertmanager, PagerDuty or Slack (a relative path does not).
RUNBOOK_BASE = "https://github.com/keelson/keelson/blob/main/docs/observability.md"
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


def github_anchor(heading: str) -> str:
    """The fragment GitHub renders for a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def doc_anchors() -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", OBSERVABILITY_DOC.read_text(), re.MULTILINE)
    return {github_anchor(heading) for heading in headings}


def alert_tests() -> list[dict[str, Any]]:
    return [
        case
        for path in RULE_TEST_FILES
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]


def test_promtool_check_rules_accepts_the_rules_file(promtool: "RunPromtool") -> None:
    result = promtool("check", "rules", RULES_FILE)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(list(iter_rules()))} rules found" in result.stdout


def test_promtool_unit_tests_pass(promtool: "RunPromtool") -> None:
    assert RULE_TEST_FILES, f"no promtool unit tests in {RULE_TESTS_DIR}"

    result = promtool("test", "rules", *RULE_TEST_FILES)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("SUCCESS") == len(RULE_TEST_FILES), output
    assert "FAILED" not in output


def test_rules_file_is_plain_prometheus_without_helm_templating() -> None:
    text = RULES_FILE.read_text()
    actions = re.findall(r"\{\{-?\s*(.*?)\s*-?\}\}", text)

    assert list(yaml.safe_load(text)) == ["groups"]
    assert actions, "alert descriptions are expected to use Prometheus templates"
    assert all(action.startswith("$") for action in actions), actions


@pytest.mark.parametrize("alert", ALERTS, ids=ALERT_NAMES)
def test_alert_has_severity_summary_description_and_runbook(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in {"critical", "warning"}
    for annotation in ("summary", "description", "runbook_url"):
        assert alert["annotations"].get(annotation, "").strip(), annotation


def test_alerts_without_for_are_the_multi_window_burn_rates_only() -> None:
    """A burn-rate alert's short window is its debounce; every other alert needs a `for:`."""
    without = {rule["alert"] for rule in ALERTS if not rule.get("for")}
    assert without == {name for name in ALERT_NAMES if "BudgetBurn" in name}
    timeouts = next(rule for rule in ALERTS if rule["alert"] == "KeelsonDBPoolTimeouts")
    assert timeouts["for"] == "2m"


@pytest.mark.parametrize("alert", ALERTS, ids=ALERT_NAMES)
def test_alert_runbook_url_points_at_its_section_in_the_observability_doc(
    alert: dict[str, Any],
) -> None:
    anchor = alert["alert"].lower()

    assert alert["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}#{anchor}"
    assert anchor in doc_anchors()


@pytest.mark.parametrize("name", ALERT_NAMES)
def test_alert_has_a_promtool_test_where_it_fires_and_one_where_it_stays_quiet(name: str) -> None:
    cases = [case for case in alert_tests() if case["alertname"] == name]

    assert any(case.get("exp_alerts") for case in cases), f"{name} is never shown firing"
    assert any(not case.get("exp_alerts") for case in cases), f"{name} is never shown quiet"


def test_promtool_tests_expect_exact_labels_and_annotations() -> None:
    for case in alert_tests():
        for expected in case.get("exp_alerts") or []:
            assert "severity" in expected["exp_labels"], case["alertname"]
            assert set(expected["exp_annotations"]) == {"summary", "description", "runbook_url"}


def test_rules_read_only_contract_metrics_or_their_own_recordings() -> None:
    allowed = {*CONTRACT_METRICS, *DEFAULT_COLLECTOR_METRICS, *recording_rule_names(), "up"}

    used = {base_metric_name(name) for expr in rule_exprs() for name in promql_metric_names(expr)}

    assert used <= allowed, used - allowed


def test_rules_hard_code_no_job_or_namespace() -> None:
    for expr in rule_exprs():
        assert not re.search(r"\b(job|namespace)\s*(=|!=|=~|!~)", expr), expr


def test_error_ratios_count_only_5xx_as_errors() -> None:
    status_matchers = {
        matcher
        for expr in rule_exprs()
        for matcher in re.findall(r'status\s*(?:=|!=|=~|!~)\s*"[^"]*"', expr)
    }

    assert status_matchers == {'status=~"5.."'}


@pytest.mark.parametrize("window", SLO_WINDOWS)
def test_both_slis_are_recorded_over_every_burn_rate_window(window: str) -> None:
    assert f"namespace_job:keelson_http_errors:ratio_rate{window}" in recording_rule_names()
    assert f"namespace_job:keelson_http_slow_requests:ratio_rate{window}" in recording_rule_names()


def test_latency_sli_uses_the_250ms_bucket() -> None:
    latency_exprs = [e for e in rule_exprs() if "keelson_http_request_duration_seconds" in e]

    assert latency_exprs
    assert all('le="0.25"' in expr for expr in latency_exprs)


def test_every_contract_metric_is_documented() -> None:
    doc = OBSERVABILITY_DOC.read_text()

    for name in CONTRACT_METRICS:
        assert f"`{name}`" in doc, name


def test_metric_names_used_are_exported_base_names() -> None:
    used = metric_names_used()

    assert used <= {*CONTRACT_METRICS, *DEFAULT_COLLECTOR_METRICS}, used
    assert "keelson_http_request_duration_seconds" in used
    assert not any(name.endswith(("_bucket", "_sum", "_count")) for name in used)


def test_metric_name_extraction_ignores_functions_labels_keywords_and_variables() -> None:
    expr = """
        sum by (le, route) (rate(a_bucket{route!~"/x|{y}", job=~"$job"}[$__rate_interval]))
        / on (namespace) group_left (version) count without (pod) (b:recorded offset 5m)
        and topk(3, up) > bool 0.5e3  # c_comment
        or max(vector(1)) unless sum(d_total) * inf
    """

    assert promql_metric_names(expr) == {"a_bucket", "b:recorded", "up", "d_total"}


def test_metric_names_used_match_a_registry_built_to_the_contract() -> None:
    """The hand-off to the live scrape test: a /metrics body built to the contract has them all."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    for name, kind in CONTRACT_METRICS.items():
        family = name.removeprefix("keelson_").removesuffix("_total")
        if kind == "counter":
            Counter(family, "doc", namespace="keelson", registry=registry).inc()
        elif kind == "histogram":
            Histogram(family, "doc", namespace="keelson", registry=registry).observe(0.1)
        else:
            Gauge(family, "doc", namespace="keelson", registry=registry).set(1)

    exposed = exposed_metric_names(generate_latest(registry).decode())

    assert metric_names_used() <= exposed, metric_names_used() - exposed
