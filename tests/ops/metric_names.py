"""Which metric names the shipped dashboard and alert rules read, and which ones Keelson promises.

`metric_names_used()` is the hand-off to the end-to-end test that scrapes a running service: every
name it returns must appear in that service's /metrics output.
"""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = REPO_ROOT / "charts/keelson/files/prometheus-rules.yaml"
DASHBOARD_FILE = REPO_ROOT / "charts/keelson/files/dashboards/keelson.json"
RULE_TESTS_DIR = REPO_ROOT / "tests/ops/rules"
OBSERVABILITY_DOC = REPO_ROOT / "docs/observability.md"

# The metric contract (name -> type): what the service exports, as the samples are named.
CONTRACT_METRICS: dict[str, str] = {
    "keelson_http_requests_total": "counter",
    "keelson_http_request_duration_seconds": "histogram",
    "keelson_http_requests_in_flight": "gauge",
    "keelson_db_pool_size": "gauge",
    "keelson_db_pool_checked_out": "gauge",
    "keelson_db_pool_overflow": "gauge",
    "keelson_db_pool_timeouts_total": "counter",
    "keelson_db_connections_opened_total": "counter",
    "keelson_login_attempts_total": "counter",
    "keelson_ready": "gauge",
    "keelson_build_info": "gauge",
}

# prometheus-client's default process and platform collectors (Linux), also part of the contract.
DEFAULT_COLLECTOR_METRICS: frozenset[str] = frozenset(
    {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "python_info",
        "python_gc_objects_collected_total",
        "python_gc_objects_uncollectable_total",
        "python_gc_collections_total",
    }
)

# Series Prometheus itself attaches to every scrape target; the service does not export them.
SCRAPE_METRICS: frozenset[str] = frozenset(
    {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"}
)

_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_GROUPING_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$")


def _skip_quoted(expr: str, i: int) -> int:
    """Index just past the string literal that starts at expr[i]."""
    quote = expr[i]
    i += 1
    while i < len(expr) and expr[i] != quote:
        i += 2 if quote != "`" and expr[i] == "\\" else 1
    return i + 1


def _skip_group(expr: str, i: int, opening: str, closing: str) -> int:
    """Index just past the bracketed group that starts at expr[i], skipping strings inside."""
    depth = 0
    while i < len(expr):
        char = expr[i]
        if char in "\"'`":
            i = _skip_quoted(expr, i)
            continue
        if char == opening:
            depth += 1
        elif char == closing:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced {opening!r} in PromQL: {expr!r}")


def _next_significant(expr: str, i: int) -> int:
    while i < len(expr) and expr[i].isspace():
        i += 1
    return i


def _is_function_or_keyword(word: str, expr: str, after: int) -> bool:
    """Whether `word`, followed by expr[after:], is a function, an aggregation or a keyword."""
    if expr.startswith("(", after) or word.lower() in _KEYWORDS:
        return True
    next_word = _IDENT.match(expr, after)
    grouped = next_word is not None and next_word.group() in {"by", "without"}
    return word in _AGGREGATIONS and grouped


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects, exactly as written (`x_bucket` stays `x_bucket`).

    A small lexer, not a parser (promtool checks syntax): it drops strings, label matchers,
    range/subquery brackets, grouping label lists, numbers/durations, Grafana variables,
    keywords and function or aggregation names; what remains are metric names.
    """
    names: set[str] = set()
    i = 0
    while i < len(expr):
        char = expr[i]
        if char in "\"'`":
            i = _skip_quoted(expr, i)
        elif char == "{":
            i = _skip_group(expr, i, "{", "}")
        elif char == "[":
            i = _skip_group(expr, i, "[", "]")
        elif char == "#":
            newline = expr.find("\n", i)
            i = len(expr) if newline == -1 else newline
        elif char == "$":
            i += 1
            if i < len(expr) and expr[i] == "{":
                i = _skip_group(expr, i, "{", "}")
            elif match := _IDENT.match(expr, i):
                i = match.end()
        elif char.isdigit() or (char == "." and expr[i + 1 : i + 2].isdigit()):
            while i < len(expr) and (expr[i].isalnum() or expr[i] in "._"):
                i += 1
        elif match := _IDENT.match(expr, i):
            word = match.group()
            i = match.end()
            after = _next_significant(expr, i)
            if word in _GROUPING_KEYWORDS:
                if expr.startswith("(", after):
                    i = _skip_group(expr, after, "(", ")")
            elif not _is_function_or_keyword(word, expr, after):
                names.add(word)
        else:
            i += 1
    return names


def base_metric_name(name: str) -> str:
    """The exported family name of a sample name: histogram series lose _bucket/_sum/_count."""
    for suffix in _HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and CONTRACT_METRICS.get(name[: -len(suffix)]) == "histogram":
            return name[: -len(suffix)]
    return name


def load_rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(RULES_FILE.read_text())
    return loaded


def iter_rules() -> Iterator[dict[str, Any]]:
    for group in load_rules()["groups"]:
        yield from group["rules"]


def recording_rule_names() -> set[str]:
    return {rule["record"] for rule in iter_rules() if "record" in rule}


def load_dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return loaded


def iter_panels(panels: list[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in load_dashboard()["panels"] if panels is None else panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query", "")
    return str(query["query"] if isinstance(query, dict) else query)


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and label_values() selectors."""
    exprs = [
        target["expr"]
        for panel in iter_panels()
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in load_dashboard()["templating"]["list"]:
        if variable.get("type") == "query":
            match = _LABEL_VALUES.match(variable_query(variable))
            if match:
                exprs.append(match.group("selector"))
    return exprs


def rule_exprs() -> list[str]:
    return [str(rule["expr"]) for rule in iter_rules()]


def metric_names_used() -> set[str]:
    """Base names of the exported metrics the dashboard and the alert rules read.

    Recording rules defined in the rules file and series Prometheus adds itself (`up`) are left
    out: none of them is in the service's /metrics output.
    """
    written = set().union(*(promql_metric_names(e) for e in [*rule_exprs(), *dashboard_exprs()]))
    return {
        base_metric_name(name)
        for name in written
        if name not in recording_rule_names() and name not in SCRAPE_METRICS
    }


def exposed_metric_names(metrics_text: str) -> set[str]:
    """Names in a /metrics body, normalised like `metric_names_used()` (histograms by family)."""
    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        if family.type == "histogram":
            names.add(family.name)
        else:
            names.update(sample.name for sample in family.samples)
    return names
