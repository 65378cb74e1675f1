"""The chart and the service's Settings agree: names, types, bounds, defaults; key roll-over and
client addresses work as the values describe them."""

from __future__ import annotations

import json
import re
from enum import Enum
from typing import Any, Literal, get_args, get_origin

import annotated_types
import pytest
from starlette.datastructures import Headers
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from service.core.client_ip import resolve_client_ip
from service.core.config import Settings, derive_key_id
from tests.chart.chartlib import CHART, REQUIRED_VALUES, Chart, Rendered, containers

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
HELPERS = (CHART / "templates" / "_helpers.tpl").read_text()

# Chart defaults that differ from the service's defaults for ENVIRONMENT=production, and why.
DELIBERATE_DIFFERENCES = {
    "hsts_enabled": "production is reached over HTTPS through the TLS ingress; browsers ignore"
    " the header on plain-HTTP answers, so it cannot lock anyone out of a port-forward",
}

# Values the chart bounds more tightly than the service, and why.
STRICTER_THAN_THE_SERVICE = {
    "SERVER_PORT": "the container drops every capability, so it cannot bind a port below 1024",
    "METRICS_PORT": "the same reason as SERVER_PORT: no capability to bind below 1024",
    "SERVER_HOST": "the service ignores an empty SERVER_HOST (its default applies); the chart"
    " refuses one rather than render a value that silently means something else",
}

PREVIOUS_KEY = "Xk4mP9qR2sT7vW1yZ3bC6dF8gH0jL5nQaEiOuYt"

_BOUND_WORDS = {
    "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "minLength", "maxLength",
}  # fmt: skip


def config_values() -> dict[str, str]:
    """ENV_NAME -> dotted values path, read from the keelson.configData template itself."""
    block = HELPERS.split('{{- define "keelson.configData" -}}', 1)[1].split(
        "{{- end }}\n{{- end }}"
    )[0]
    pairs = re.findall(r"^([A-Z][A-Z0-9_]+): \{\{.*?\.Values\.([A-Za-z0-9_.]+)", block, re.M)
    return dict(pairs)


def schema_node(path: str) -> dict[str, Any]:
    node = SCHEMA
    for key in path.split("."):
        node = node["properties"][key]
    return node


def settings_bounds(name: str) -> dict[str, Any]:
    """The Field constraints of a setting, in JSON-schema words."""
    words = {
        annotated_types.Ge: ("minimum", "ge"),
        annotated_types.Gt: ("exclusiveMinimum", "gt"),
        annotated_types.Le: ("maximum", "le"),
        annotated_types.Lt: ("exclusiveMaximum", "lt"),
        annotated_types.MinLen: ("minLength", "min_length"),
        annotated_types.MaxLen: ("maxLength", "max_length"),
    }
    bounds: dict[str, Any] = {}
    for item in Settings.model_fields[name.lower()].metadata:
        if type(item) in words:
            word, attribute = words[type(item)]
            bounds[word] = getattr(item, attribute)
    return bounds


def schema_type(annotation: Any) -> set[str]:
    """JSON-schema types that may carry a value of this Settings annotation."""
    if annotation is bool:
        return {"boolean"}
    if annotation is int:
        return {"integer"}
    if annotation is float:
        return {"integer", "number"}
    if get_origin(annotation) is list:
        return {"array"}
    return {"string"}


def test_the_mapping_covers_every_configmap_key(chart: Chart) -> None:
    """The parse below sees every key the ConfigMap can hold (SMTP_* only with smtp.host)."""
    data = chart.render({"smtp": {"host": "smtp.example.org"}}).one("ConfigMap", "keelson")["data"]
    assert set(config_values()) == set(data)


@pytest.mark.parametrize(("env", "path"), sorted(config_values().items()))
def test_schema_types_and_bounds_match_the_settings(env: str, path: str) -> None:
    node = schema_node(path)
    field = Settings.model_fields[env.lower()]
    annotation = field.annotation
    assert node["type"] in schema_type(annotation), (path, node["type"], annotation)
    if get_origin(annotation) is Literal:
        assert set(node["enum"]) == set(get_args(annotation)), path
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        assert set(node["enum"]) == {member.value for member in annotation}, path
    pattern = next((m.pattern for m in field.metadata if getattr(m, "pattern", None)), None)
    if pattern is not None:  # the chart adds "^$|": empty means unset
        assert node["pattern"] in {pattern, f"^$|{pattern}"}, path
    expected = settings_bounds(env)
    actual = {key: node[key] for key in expected.keys() | node.keys() if key in _BOUND_WORDS}
    if env not in STRICTER_THAN_THE_SERVICE:
        assert actual == expected, path
        return
    assert actual != expected, f"{env} is no longer stricter: drop it from the list"
    for word, bound in expected.items():  # never looser than the service
        assert word in actual, (path, word)
        if word in {"minimum", "exclusiveMinimum", "minLength"}:
            assert actual[word] >= bound, (path, word)
        else:
            assert actual[word] <= bound, (path, word)


def _settings_from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def rendered_env(rendered: Rendered) -> dict[str, str]:
    env = dict(rendered.one("ConfigMap", "keelson")["data"])
    env.update(rendered.one("Secret", "keelson")["stringData"])
    return env


def test_chart_defaults_are_the_service_defaults_but_for_listed_reasons(
    default_render: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the pods run with equals what the service does with only its secrets and
    ENVIRONMENT=production set, except the differences listed (each with its reason)."""
    secrets = {
        "ENVIRONMENT": "production",
        "DATABASE_URL": REQUIRED_VALUES["secret"]["databaseUrl"],
        "SECRET_KEY": REQUIRED_VALUES["secret"]["secretKey"],
        "FIRST_SUPERUSER_PASSWORD": REQUIRED_VALUES["secret"]["firstSuperuserPassword"],
    }
    service = _settings_from_env(monkeypatch, secrets).model_dump()
    chart = _settings_from_env(monkeypatch, rendered_env(default_render)).model_dump()
    differing = {name for name in service if service[name] != chart[name]}
    assert differing == set(DELIBERATE_DIFFERENCES), {
        name: (service[name], chart[name]) for name in differing
    }


def test_changed_defaults(default_render: Rendered) -> None:
    data = default_render.one("ConfigMap", "keelson")["data"]
    assert data["ACCESS_TOKEN_EXPIRE_MINUTES"] == "15"
    assert data["DOCS_ENABLED"] == "false"
    assert data["DB_CONNECT_TIMEOUT_S"] == "2"
    assert data["HSTS_ENABLED"] == "true"
    assert data["FORWARDED_ALLOW_IPS"] == "127.0.0.1"


def test_dev_values_keep_docs_and_drop_hsts(chart: Chart) -> None:
    dev = chart.render(values_files=["charts/keelson/values-dev.yaml"], with_required=False)
    data = dev.one("ConfigMap", "keelson")["data"]
    assert (data["DOCS_ENABLED"], data["HSTS_ENABLED"]) == ("true", "false")


# -- signing-key roll-over ---------------------------------------------------------------------


def previous_keys_env(container: dict[str, Any]) -> dict[str, Any]:
    (env,) = [e for e in container["env"] if e["name"] == "JWT_PREVIOUS_KEYS"]
    return env


def test_previous_keys_go_to_the_secret_only_when_set(
    chart: Chart, default_render: Rendered
) -> None:
    assert "JWT_PREVIOUS_KEYS" not in default_render.one("Secret", "keelson")["stringData"]
    rendered = chart.render({"secret": {"jwtPreviousKeys": f"2026-01:{PREVIOUS_KEY}"}})
    for name in ("keelson", "keelson-migrate"):
        data = rendered.one("Secret", name)["stringData"]
        assert data["JWT_PREVIOUS_KEYS"] == f"2026-01:{PREVIOUS_KEY}", name
    assert PREVIOUS_KEY not in json.dumps(rendered.one("ConfigMap", "keelson"))


@pytest.mark.parametrize(
    ("values", "secret"),
    [({}, "keelson"), ({"secret": {"existingSecret": "vault-synced"}}, "vault-synced")],
    ids=["chart-secret", "existing-secret"],
)
def test_every_container_reads_previous_keys_optionally(
    chart: Chart, values: dict[str, Any], secret: str
) -> None:
    """Optional: the chart's Secret lacks the key until it is set, an existingSecret may lack it."""
    rendered = chart.render(values, with_required=not values)
    workloads = [rendered.deployment, rendered.one("CronJob"), rendered.one("Job")]
    for workload in workloads:
        for container in containers(workload):
            ref = previous_keys_env(container)["valueFrom"]["secretKeyRef"]
            expected_secret = (
                "keelson-migrate" if workload["kind"] == "Job" and not values else secret
            )
            assert ref == {"name": expected_secret, "key": "JWT_PREVIOUS_KEYS", "optional": True}


def test_a_swapped_key_pair_loads_in_the_service(
    chart: Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 2 of a roll-over: new SECRET_KEY with its kid, the old key still verifying."""
    new_key = REQUIRED_VALUES["secret"]["secretKey"]
    rendered = chart.render(
        {
            "config": {"jwtKeyId": "2026-07"},
            "secret": {"secretKey": new_key, "jwtPreviousKeys": f"2026-01:{PREVIOUS_KEY}"},
        }
    )
    settings = _settings_from_env(monkeypatch, rendered_env(rendered))
    assert settings.signing_key_id == "2026-07"
    assert {kid: key.get_secret_value() for kid, key in settings.jwt_previous_keys.items()} == {
        "2026-01": PREVIOUS_KEY
    }


def test_bare_previous_keys_get_derived_kids(chart: Chart, monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = chart.render({"secret": {"jwtPreviousKeys": PREVIOUS_KEY}})
    settings = _settings_from_env(monkeypatch, rendered_env(rendered))
    assert set(settings.jwt_previous_keys) == {derive_key_id(PREVIOUS_KEY)}
    assert settings.jwt_key_id is None  # empty JWT_KEY_ID: the kid is derived from SECRET_KEY


# -- client addresses ----------------------------------------------------------------------------

INGRESS_POD = "10.244.3.7"
INGRESS_CIDR = "10.244.0.0/16"
CLIENT = "203.0.113.9"
SPOOFED = "198.51.100.66"


async def client_seen(settings: Settings, peer: str, forwarded_for: str) -> tuple[str, str, str]:
    """What uvicorn (configured as `keelson serve` does) and then Keelson's login throttle make of
    a request: (uvicorn's client address, uvicorn's scheme, the throttle's client address)."""
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)

    middleware = ProxyHeadersMiddleware(app, trusted_hosts=settings.forwarded_allow_ips)  # type: ignore[arg-type]
    headers = [(b"x-forwarded-for", forwarded_for.encode()), (b"x-forwarded-proto", b"https")]
    scope = {"type": "http", "client": (peer, 40000), "scheme": "http", "headers": headers}
    await middleware(scope, None, None)  # type: ignore[arg-type]
    host = seen["client"][0]
    throttle = resolve_client_ip(host, Headers(raw=headers), settings.trusted_proxy_cidrs)
    return host, seen["scheme"], str(throttle)


async def test_default_believes_no_forwarded_header(
    default_render: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Safe but coarse: a spoofed header is ignored, and every client is the ingress pod."""
    settings = _settings_from_env(monkeypatch, rendered_env(default_render))
    seen = await client_seen(settings, INGRESS_POD, f"{SPOOFED}, {CLIENT}")
    assert seen == (INGRESS_POD, "http", INGRESS_POD)


@pytest.mark.parametrize(
    "values",
    [
        {
            "server": {"forwardedAllowIps": INGRESS_CIDR},
            "config": {"trustedProxyCidrs": [INGRESS_CIDR]},
        },
        {"server": {"forwardedAllowIps": INGRESS_CIDR}},
        {"config": {"trustedProxyCidrs": [INGRESS_CIDR]}},
    ],
    ids=["both", "uvicorn-only", "throttle-only"],
)
async def test_trusting_the_ingress_finds_the_real_client(
    chart: Chart, monkeypatch: pytest.MonkeyPatch, values: dict[str, Any]
) -> None:
    """The hop the ingress appended (rightmost) is believed; what the client wrote is not."""
    settings = _settings_from_env(monkeypatch, rendered_env(chart.render(values)))
    host, scheme, throttle = await client_seen(settings, INGRESS_POD, f"{SPOOFED}, {CLIENT}")
    assert throttle == CLIENT
    uvicorn_trusts = "server" in values
    assert host == (CLIENT if uvicorn_trusts else INGRESS_POD)
    assert scheme == ("https" if uvicorn_trusts else "http")
    # A peer outside the ingress CIDR (another pod, were the NetworkPolicy off) is not believed.
    assert await client_seen(settings, "10.99.0.5", CLIENT) == ("10.99.0.5", "http", "10.99.0.5")


async def test_a_wildcard_lets_the_client_choose_its_address(
    chart: Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why "*" is not the default: uvicorn takes the leftmost entry, which the client wrote."""
    rendered = chart.render({"server": {"forwardedAllowIps": "*"}})
    settings = _settings_from_env(monkeypatch, rendered_env(rendered))
    _, _, throttle = await client_seen(settings, INGRESS_POD, f"{SPOOFED}, {CLIENT}")
    assert throttle == SPOOFED


def test_trusted_proxy_cidrs_render_as_the_list_the_service_parses(
    chart: Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = chart.render({"config": {"trustedProxyCidrs": [INGRESS_CIDR, "fd00:10::/64"]}})
    assert rendered.one("ConfigMap", "keelson")["data"]["TRUSTED_PROXY_CIDRS"] == (
        f"{INGRESS_CIDR},fd00:10::/64"
    )
    settings = _settings_from_env(monkeypatch, rendered_env(rendered))
    assert [str(network) for network in settings.trusted_proxy_cidrs] == [
        INGRESS_CIDR,
        "fd00:10::/64",
    ]
