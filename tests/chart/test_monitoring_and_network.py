"""Monitoring appears only when wanted and possible; the NetworkPolicy admits what it must."""

from __future__ import annotations

import yaml

from tests.chart.chartlib import (
    CHART,
    MONITORING_API,
    Chart,
    Rendered,
    containers,
    pod_labels,
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


def test_service_monitor_scrapes_the_server_service(chart: Chart) -> None:
    rendered = chart.render(
        {"metrics": {"serviceMonitor": {"labels": {"release": "kube-prometheus-stack"}}}},
        api_versions=[MONITORING_API],
    )
    monitor = rendered.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = rendered.one("Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["keelson"]}
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    assert service["spec"]["ports"][0]["name"] == "http"


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
    policy = default_render.one("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    selector = policy["podSelector"]["matchLabels"].items()
    kinds = {workload["kind"] for workload in workloads(default_render)}
    assert kinds == {"Deployment", "Job", "CronJob", "Pod"}
    for workload in workloads(default_render):
        assert selector <= pod_labels(workload).items(), workload["metadata"]["name"]


def test_ingress_is_the_controller_prometheus_and_helm_test(default_render: Rendered) -> None:
    (rule,) = default_render.one("NetworkPolicy")["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    controller, prometheus, helm_test = rule["from"]
    assert controller == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    }
    assert prometheus == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    test_pod = default_render.one("Pod")
    assert helm_test["podSelector"]["matchLabels"].items() <= test_pod["metadata"]["labels"].items()


def test_egress_is_own_servers_postgres_and_dns_only(default_render: Rendered) -> None:
    servers, postgres, dns = default_render.one("NetworkPolicy")["spec"]["egress"]
    server_labels = default_render.deployment["spec"]["template"]["metadata"]["labels"]
    assert servers["ports"] == [{"port": "http", "protocol": "TCP"}]
    (peer,) = servers["to"]
    assert peer["podSelector"]["matchLabels"] == {
        k: v for k, v in server_labels.items() if k in peer["podSelector"]["matchLabels"]
    }
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "server"
    assert postgres == {"ports": [{"port": 5432, "protocol": "TCP"}]}
    assert dns["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    assert dns["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]


def test_egress_narrows_to_database_cidrs_and_extra_destinations(chart: Chart) -> None:
    rendered = chart.render(
        {
            "networkPolicy": {
                "database": {"cidrs": ["10.20.0.0/16"]},
                "extraEgress": [{"port": 4318, "cidrs": ["10.30.0.5/32"]}],
            }
        }
    )
    _, postgres, _, otlp = rendered.one("NetworkPolicy")["spec"]["egress"]
    assert postgres["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    assert otlp == {
        "ports": [{"port": 4318, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "10.30.0.5/32"}}],
    }


# -- helm test ---------------------------------------------------------------------------------


def test_helm_test_pod_checks_readiness_through_the_service(default_render: Rendered) -> None:
    pod = default_render.one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    (container,) = containers(pod)
    script = container["command"][-1]
    service = default_render.one("Service")
    assert (
        f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/readyz"
        in script
    )
    assert container["image"] == containers(default_render.deployment)[0]["image"]
    compile(script, "helm-test", "exec")
