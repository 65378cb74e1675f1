"""Monitoring appears only when wanted and possible; the NetworkPolicy admits what it must."""

from __future__ import annotations

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


def test_prometheus_rule_carries_the_rules_file_verbatim(chart: Chart) -> None:
    rules = chart.render(api_versions=[MONITORING_API]).all("PrometheusRule")
    if not RULES_FILE.exists():
        assert rules == []
        return
    (rule,) = rules
    assert rule["spec"] == {"groups": yaml.safe_load(RULES_FILE.read_text())["groups"]}


def test_dashboards_configmap_matches_the_files(chart: Chart) -> None:
    configmap = chart.render().find("ConfigMap", "keelson-dashboards")
    if not DASHBOARDS:
        assert configmap is None
        return
    assert configmap is not None
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"]["grafana_folder"] == "Keelson"
    assert configmap["data"] == {path.name: path.read_text() for path in DASHBOARDS}


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
    selectors = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
        "podSelector": {
            "matchLabels": None,
            "matchExpressions": [
                {"key": "app.kubernetes.io/name", "operator": "In", "values": ["prometheus"]}
            ],
        },
    }
    rendered = chart.render({"networkPolicy": {"prometheus": selectors}})
    _, metrics = rendered.one("NetworkPolicy", "keelson")["spec"]["ingress"]
    assert metrics["from"] == [
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
