"""The multi-replica drill, bounded: 3 `keelson serve` replicas behind haproxy and PgBouncer, an
upgrade with an expand-only migration then the documented rollback, a SIGKILL mid-traffic, and
state shared across replicas (load-tests/drill; the full run is documented in docs/kubernetes.md).

Bounded for a 2-core CI machine: preStop 1 s instead of the chart's 5 s (every other lifecycle
number is the chart's) and a 1 s balancer check interval instead of the probe's 5 s. Last,
PostgreSQL is restarted under PgBouncer (2 s down) while the traffic flows.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.support.pgbouncer import find_pgbouncer

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "load-tests"))

from drill.__main__ import run_drill  # noqa: E402
from drill.cluster import HAPROXY, Lifecycle  # noqa: E402


def _require_tools() -> None:
    """A missing tool fails the run: CI must install it (.ci/run), never skip the drill."""
    assert find_pgbouncer() is not None, "pgbouncer is not installed (apt-get install pgbouncer)"
    assert os.path.exists(HAPROXY), "haproxy is not installed (apt-get install haproxy)"


@pytest.fixture(scope="module")
async def report() -> dict[str, Any]:
    _require_tools()
    lifecycle = replace(Lifecycle.from_chart(), prestop_s=1.0)
    result = await run_drill(
        replicas=3,
        lifecycle=lifecycle,
        check_interval_s=1.0,
        fall=2,
        only=("rolling_restart", "upgrade_rollback", "sigkill", "shared_state", "postgres_restart"),
    )
    print("\n[drill]", json.dumps(result, default=str))
    return result


def test_the_chart_lifecycle_is_what_the_drill_plays(report: dict[str, Any]) -> None:
    chart = Lifecycle.from_chart()
    played = report["lifecycle"]
    assert played["shutdown_timeout_s"] == chart.shutdown_timeout_s
    assert played["grace_s"] == 1.0 + chart.shutdown_timeout_s + chart.termination_margin_s


def test_rolling_restart_new_ready_before_old_leaves_fails_no_request(
    report: dict[str, Any],
) -> None:
    rolled = report["rolling_restart"]
    assert rolled["failed"] == 0, rolled
    assert rolled["requests"] > 100
    assert [step["sigkilled"] for step in rolled["steps"]] == [False, False, False]


def test_upgrade_with_a_migration_then_rollback_fails_no_request(report: dict[str, Any]) -> None:
    upgrade, rollback = (
        report["upgrade_rollback"]["upgrade"],
        report["upgrade_rollback"]["rollback"],
    )
    for phase in (upgrade, rollback):
        assert phase["failed"] == 0, phase
        assert phase["requests"] > 100
        assert not any(step["sigkilled"] for step in phase["steps"])  # all left within grace
        assert len(phase["steps"]) == 3


def test_readyz_follows_the_documented_rollback_sequence(report: dict[str, Any]) -> None:
    checks = report["upgrade_rollback"]
    assert checks["readyz_as_documented"], checks["readyz"]


def test_sigkill_fails_only_requests_in_flight_on_the_killed_replica(
    report: dict[str, Any],
) -> None:
    killed = report["sigkill"]
    assert killed["failed"] <= killed["in_flight_bound"], killed
    assert killed["failed_after_marked_down"] == 0
    assert killed["marked_down_after_s"] <= 1.0 * 2 + 1.0  # inter x fall, plus one check's slack


def test_no_acknowledged_write_is_lost_or_duplicated_by_retries(report: dict[str, Any]) -> None:
    writes = report["writes"]
    assert writes["acknowledged"] > 100
    assert (writes["missing"], writes["duplicated"]) == (0, 0), writes


def test_login_throttle_refresh_reuse_and_replays_are_shared_by_replicas(
    report: dict[str, Any],
) -> None:
    shared = report["shared_state"]
    assert shared["throttle"]["ok"], shared["throttle"]
    assert shared["throttle"]["replicas_hit"] == 3
    assert shared["refresh_reuse"]["ok"], shared["refresh_reuse"]
    assert shared["idempotent_replay"]["ok"], shared["idempotent_replay"]


def test_postgres_restart_under_pgbouncer_answers_503_then_recovers_without_restarts(
    report: dict[str, Any],
) -> None:
    restarted = report["postgres_restart"]
    assert restarted["down_s"] >= 2.0
    assert restarted["postgres_answers_directly"]
    assert restarted["failed"] > 0, "the outage did not bite"
    assert restarted["errors"] == {}, restarted
    assert set(restarted["non_2xx"]) == {"503"}, restarted
    assert restarted["only_503_with_retry_after"], restarted
    assert set(restarted["readyz_during"].values()) == {503}, restarted
    # PgBouncer retries a failed server login after server_login_retry (1 s); haproxy routes a
    # replica again after one passing check (rise 1, inter 1 s).
    assert restarted["recover_s"] is not None, restarted.get("pgbouncer_log_tail")
    assert restarted["recover_s"] < 5.0, restarted
    assert restarted["routed_again_s"] is not None, restarted
    assert restarted["routed_again_s"] < 5.0, restarted
    assert restarted["replicas_not_restarted"]
    assert restarted["ready_after"]
