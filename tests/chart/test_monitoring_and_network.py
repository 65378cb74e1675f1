"""Monitoring appears only when wanted and possible; the NetworkPolicy admits what it must."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.chart.chartlib import (
    CHART,
    MONITORING_API,
    NEWEST_KUBE,
    Chart,
    Rendered,
    containers,
    pod_labels,
    run,
    validate_object,
    workloads,
)

RULES_FILE = CHART / "files" / "prometheus-rules.yaml"
DASHBOARDS = sorted((CHART / "files" / "dashboards").glob("*.json"))
MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}


def test_no_operator_objects_without_the_monitoring_api(default_render: Rendered) -> None:
    assert not default_render.kinds() & MONITORING_KINDS


def test_operator_objects_when_the_api_exists(chart: Chart) -> None:
    rendered = chart.render(api_versions=[MONITORING_API])
    expected = {"ServiceMonitor"} | ({"PrometheusRule"} if RULES_FILE.exists() else set())
    assert rendered.kinds() & MONITORING_KINDS == expected


def test_values_switch_them_off_even_with_the_api(chart: Chart) -> None:
    rendered = chart.render(
        {
            "metrics": {
                "serviceMonitor": {"enabled": False},
                "prometheusRule": {"enabled": False},
                "grafanaDashboards": {"enabled": False},
            }
        },
        api_versions=[MONITORING_API],
    )
    assert not rendered.kinds() & MONITORING_KINDS
    assert not rendered.find("ConfigMap", "keelson-dashboards")


def test_service_monitor_scrapes_the_metrics_port_of_the_metrics_service(chart: Chart) -> None:
    rendered = chart.render(
        {"metrics": {"serviceMonitor": {"labels": {"release": "kube-prometheus-stack"}}}},
        api_versions=[MONITORING_API],
    )
    monitor = rendered.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"].items()
    selected = [s["metadata"]["name"] for s in rendered.all("Service")
                if selector <= s["metadata"]["labels"].items()]  # fmt: skip
    assert selected == ["keelson-metrics"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["keelson"]}
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]


# -- the metrics port (issue 12 item 2: /metrics tells existing accounts from unknown ones) ------


def test_metrics_have_their_own_container_port(chart: Chart) -> None:
    rendered = chart.render({"metrics": {"port": 9102}})
    (server, *_) = containers(rendered.deployment)
    assert server["ports"] == [
        {"name": "http", "containerPort": 8000, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9102, "protocol": "TCP"},
    ]
    assert rendered.one("ConfigMap", "keelson")["data"]["METRICS_PORT"] == "9102"
    assert rendered.one("ConfigMap", "keelson-migrate")["data"]["METRICS_PORT"] == "9102"


def test_the_service_the_ingress_routes_to_has_no_metrics_port(chart: Chart) -> None:
    rendered = chart.render({"ingress": {"enabled": True}})
    backend = rendered.one("Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    api = rendered.one("Service", backend["service"]["name"])
    assert [(p["name"], p["targetPort"]) for p in api["spec"]["ports"]] == [("http", "http")]


def test_the_metrics_service_exposes_only_the_metrics_port(default_render: Rendered) -> None:
    service = default_render.one("Service", "keelson-metrics")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pods = default_render.deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pods


def test_a_metrics_port_equal_to_the_api_port_is_refused(chart: Chart) -> None:
    error = chart.render_error({"metrics": {"port": 8000}})
    assert "metrics.port (8000) must differ from server.port" in error


SCOPE = 'namespace="keelson",job="keelson-metrics"'
RUNBOOK_BASE = "https://github.com/keelson/keelson/blob/main/docs/observability.md"


def test_prometheus_rule_is_the_rules_file_scoped_to_the_release(chart: Chart) -> None:
    (rule,) = chart.render(api_versions=[MONITORING_API]).all("PrometheusRule")
    original = yaml.safe_load(RULES_FILE.read_text())["groups"]
    rendered = rule["spec"]["groups"]
    assert [g["name"] for g in rendered] == [g["name"] for g in original]
    for group, source in zip(rendered, original, strict=True):
        for scoped, plain in zip(group["rules"], source["rules"], strict=True):
            expr = scoped["expr"]
            # Every selector names this release; taking that back out gives the file's expr.
            unscoped = expr.replace(f"{{{SCOPE},", "{").replace(f"{{{SCOPE}}}", "")
            assert unscoped == plain["expr"], scoped.get("record") or scoped.get("alert")
            assert expr.count(SCOPE) == len(promql_metric_names(plain["expr"], occurrences=True))
            assert {k: v for k, v in scoped.items() if k not in {"expr", "annotations"}} == {
                k: v for k, v in plain.items() if k not in {"expr", "annotations"}
            }


def promql_metric_names(expr: str, *, occurrences: bool = False) -> list[str]:
    """Metric selectors in an expression: Keelson metrics, namespace_job: recordings and up."""
    pattern = r"(?<![\w:])(keelson_\w+|namespace_job:[\w:]+|up)(?![\w:(])"
    return re.findall(pattern, expr) if occurrences else sorted(set(re.findall(pattern, expr)))


def test_runbook_urls_are_absolute_and_follow_the_value(chart: Chart) -> None:
    base = "https://runbooks.example.org/keelson"
    values = {"metrics": {"prometheusRule": {"runbookBaseUrl": base}}}
    (rule,) = chart.render(values, api_versions=[MONITORING_API]).all("PrometheusRule")
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert alerts
    for alert in alerts:
        assert alert["annotations"]["runbook_url"] == f"{base}#{alert['alert'].lower()}"


def test_two_releases_never_count_each_others_series(
    chart: Chart, promtool: str, tmp_path: Path
) -> None:
    """Release "keelson" burns its error budget 20x; release "other" beside it serves only 200s.
    Each release's own rules see only its own series: one alert, for the right job."""
    for name, values in {"keelson": {}, "other": {"fullnameOverride": "other"}}.items():
        (rule,) = chart.render(values, api_versions=[MONITORING_API]).all("PrometheusRule")
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    series = (
        'keelson_http_requests_total{{namespace="keelson", job="{job}", instance="{ip}:9090",'
        ' method="GET", route="/api/v1/items/", status="{status}"}}'
    )
    case = {
        "rule_files": ["keelson.yaml", "other.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": series.format(job="keelson-metrics", ip="10.0.0.1", status="200"),
                        "values": "0+49x120",
                    },
                    {
                        "series": series.format(job="keelson-metrics", ip="10.0.0.1", status="500"),
                        "values": "0+1x120",
                    },
                    {
                        "series": series.format(job="other-metrics", ip="10.0.0.2", status="200"),
                        "values": "0+50x120",
                    },
                ],
                "promql_expr_test": [
                    {
                        "expr": "round(namespace_job:keelson_http_errors:ratio_rate5m, 0.0001)",
                        "eval_time": "65m",
                        "exp_samples": [
                            {
                                "labels": '{namespace="keelson", job="keelson-metrics"}',
                                "value": 0.02,
                            },
                            {"labels": '{namespace="keelson", job="other-metrics"}', "value": 0},
                        ],
                    }
                ],
                "alert_rule_test": [
                    {
                        "alertname": "KeelsonErrorBudgetBurnFast",
                        "eval_time": "65m",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "slo": "availability",
                                    "namespace": "keelson",
                                    "job": "keelson-metrics",
                                },
                                "exp_annotations": {
                                    "summary": "Keelson is burning its availability error"
                                    " budget 14.4 times too fast.",
                                    "description": "2% of requests to keelson/keelson-metrics"
                                    " failed with a 5xx over the last hour (and still over the"
                                    " last 5 minutes); the SLO allows 0.1%. At this rate the"
                                    " 30-day error budget is gone in about two days.",
                                    "runbook_url": f"{RUNBOOK_BASE}#keelsonerrorbudgetburnfast",
                                },
                            }
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(case))
    check = run([promtool, "check", "rules", str(tmp_path / "keelson.yaml")])
    assert check.returncode == 0, check.stdout + check.stderr
    result = run([promtool, "test", "rules", str(tmp_path / "test.yaml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_release_gets_its_own_dashboard_uid_and_title(chart: Chart) -> None:
    def dashboard(values: dict[str, Any]) -> dict[str, Any]:
        configmap = chart.render(values).one(
            "ConfigMap", values.get("fullnameOverride", "keelson") + "-dashboards"
        )
        return dict(json.loads(configmap["data"]["keelson.json"]))

    first, second = dashboard({}), dashboard({"fullnameOverride": "other"})
    assert first["uid"] == dashboard({})["uid"]  # stable across upgrades
    assert first["uid"] != second["uid"]
    assert first["uid"].startswith("keelson-overview-")
    assert len(first["uid"]) <= 40
    assert first["title"] != second["title"]


def test_dashboards_configmap_matches_the_files(chart: Chart) -> None:
    configmap = chart.render().find("ConfigMap", "keelson-dashboards")
    if not DASHBOARDS:
        assert configmap is None
        return
    assert configmap is not None
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"]["grafana_folder"] == "Keelson"
    assert set(configmap["data"]) == {path.name for path in DASHBOARDS}
    for path in DASHBOARDS:
        shipped, source = json.loads(configmap["data"][path.name]), json.loads(path.read_text())
        # Only the identity differs (per release); every panel and query is the file's.
        assert {k: v for k, v in shipped.items() if k not in {"uid", "title"}} == {
            k: v for k, v in source.items() if k not in {"uid", "title"}
        }


# -- NetworkPolicy -----------------------------------------------------------------------------


def test_network_policy_covers_every_pod_of_the_release(default_render: Rendered) -> None:
    policy = default_render.one("NetworkPolicy", "keelson")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    selector = policy["podSelector"]["matchLabels"].items()
    kinds = {workload["kind"] for workload in workloads(default_render)}
    assert kinds == {"Deployment", "Job", "CronJob", "Pod"}
    for workload in workloads(default_render):
        assert selector <= pod_labels(workload).items(), workload["metadata"]["name"]


def test_the_api_port_admits_the_controller_and_helm_test_only(default_render: Rendered) -> None:
    api, _ = default_render.one("NetworkPolicy", "keelson")["spec"]["ingress"]
    assert api["ports"] == [{"port": "http", "protocol": "TCP"}]
    controller, helm_test = api["from"]
    assert controller == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    }
    test_pod = default_render.one("Pod")
    assert helm_test["podSelector"]["matchLabels"].items() <= test_pod["metadata"]["labels"].items()


def test_the_metrics_port_admits_prometheus_only(chart: Chart) -> None:
    _, metrics = chart.render().one("NetworkPolicy", "keelson")["spec"]["ingress"]
    assert metrics == {
        "from": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            }
        ],
        "ports": [{"port": "metrics", "protocol": "TCP"}],
    }
    # Helm merges maps with the defaults: a key replaces its default, null removes one.
    selectors: dict[str, Any] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
        "podSelector": {
            "matchLabels": None,
            "matchExpressions": [
                {"key": "app.kubernetes.io/name", "operator": "In", "values": ["prometheus"]}
            ],
        },
    }
    rendered = chart.render({"networkPolicy": {"prometheus": selectors}})
    _, metrics_rule = rendered.one("NetworkPolicy", "keelson")["spec"]["ingress"]
    assert metrics_rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
            "podSelector": {"matchExpressions": selectors["podSelector"]["matchExpressions"]},
        }
    ]


def egress_rules(rendered: Rendered) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = rendered.one("NetworkPolicy", "keelson")["spec"]["egress"]
    return rules


def test_egress_is_dns_postgres_and_own_servers_only(default_render: Rendered) -> None:
    dns, postgres, servers = egress_rules(default_render)
    server_labels = default_render.deployment["spec"]["template"]["metadata"]["labels"]
    assert servers["ports"] == [{"port": "http", "protocol": "TCP"}]
    (peer,) = servers["to"]
    assert peer["podSelector"]["matchLabels"].items() <= server_labels.items()
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "server"
    assert postgres == {"ports": [{"port": 5432, "protocol": "TCP"}]}
    # Port 53 to any destination: NodeLocal DNSCache (169.254.20.10) and OpenShift's resolver are
    # not the kube-dns pods, so a label-pinned rule breaks name resolution there.
    assert dns == {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}


CNPG_PODS = {"podSelector": {"matchLabels": {"cnpg.io/cluster": "pg"}}}
COLLECTOR = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "otel"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "opentelemetry-collector"}},
}


def test_egress_narrows_to_database_cidrs_and_peers(chart: Chart) -> None:
    rendered = chart.render(
        {"networkPolicy": {"database": {"cidrs": ["10.20.0.0/16"], "to": [CNPG_PODS]}}}
    )
    _, postgres, _ = egress_rules(rendered)
    assert postgres["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}, CNPG_PODS]


def test_extra_egress_takes_raw_rules_with_any_peer(chart: Chart) -> None:
    rule = {"to": [COLLECTOR, {"ipBlock": {"cidr": "10.30.0.5/32"}}], "ports": [{"port": 4317}]}
    rendered = chart.render({"networkPolicy": {"extraEgress": [rule]}})
    assert egress_rules(rendered)[-1] == rule
    for obj in rendered.all("NetworkPolicy"):
        validate_object(obj, NEWEST_KUBE)


def test_smtp_and_otlp_egress_open_only_when_configured(chart: Chart) -> None:
    assert len(egress_rules(chart.render())) == 3
    rendered = chart.render(
        {
            "smtp": {"host": "smtp.example.org", "port": 465},
            "config": {"otelTracesExporter": "otlp"},
            "networkPolicy": {"otlp": {"to": [COLLECTOR]}},
        }
    )
    *_, smtp, otlp = egress_rules(rendered)
    assert smtp == {"ports": [{"port": 465, "protocol": "TCP"}]}
    assert otlp == {"ports": [{"port": 4318, "protocol": "TCP"}], "to": [COLLECTOR]}


# -- helm test ---------------------------------------------------------------------------------


def test_helm_test_pod_checks_readiness_through_the_service(default_render: Rendered) -> None:
    pod = default_render.one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    # Kept after success, so `helm test --logs` (the e2e workflow runs it) can read its logs.
    assert pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation"
    assert pod["spec"]["restartPolicy"] == "Never"
    (container,) = containers(pod)
    script = container["command"][-1]
    service = default_render.one("Service", "keelson")
    assert (
        f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/readyz"
        in script
    )
    assert container["image"] == containers(default_render.deployment)[0]["image"]
    compile(script, "helm-test", "exec")
