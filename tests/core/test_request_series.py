"""core/metrics.RequestSeries: every answer counted and timed, children looked up once."""

from __future__ import annotations

from prometheus_client import REGISTRY

from service.core.metrics import RequestSeries


def _count(method: str, route: str, status: str) -> float:
    labels = {"method": method, "route": route, "status": status}
    return REGISTRY.get_sample_value("keelson_http_requests_total", labels) or 0.0


def _timed(method: str, route: str) -> float:
    labels = {"method": method, "route": route}
    return REGISTRY.get_sample_value("keelson_http_request_duration_seconds_count", labels) or 0.0


def test_every_observation_is_counted_and_timed_under_its_own_labels() -> None:
    series = RequestSeries()
    before = (_count("GET", "/series-a", "200"), _count("GET", "/series-a", "404"))
    timed = _timed("GET", "/series-a")

    for status in ("200", "200", "404"):
        series.observe("GET", "/series-a", status, 0.02)

    assert (_count("GET", "/series-a", "200"), _count("GET", "/series-a", "404")) == (
        before[0] + 2,
        before[1] + 1,
    )
    assert _timed("GET", "/series-a") == timed + 3
    fast = REGISTRY.get_sample_value(
        "keelson_http_request_duration_seconds_bucket",
        {"method": "GET", "route": "/series-a", "le": "0.01"},
    )
    assert fast == 0.0  # 20 ms is above the 10 ms bucket


def test_label_sets_past_the_bound_are_still_counted() -> None:
    series = RequestSeries(max_kept=1)
    before = [_count("POST", f"/series-b{i}", "201") for i in range(3)]

    for _ in range(2):
        for i in range(3):
            series.observe("POST", f"/series-b{i}", "201", 0.001)

    assert [_count("POST", f"/series-b{i}", "201") for i in range(3)] == [b + 2 for b in before]
    assert len(series._children) == 1
