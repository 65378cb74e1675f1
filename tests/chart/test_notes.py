"""NOTES.txt renders and tells the operator what happened and what to check.

`helm template` skips NOTES.txt and Helm 3's `install --dry-run` needs a cluster, so the file is
rendered through `tpl` from a throwaway copy of the chart: same values, same helpers.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.chartlib import CHART, REQUIRED_VALUES, deep_merge, run

Notes = Callable[..., str]

WRAPPER = """apiVersion: v1
kind: ConfigMap
metadata:
  name: rendered-notes
data:
  NOTES.txt: {{ tpl (.Files.Get "notes.src") . | quote }}
"""


@pytest.fixture(scope="session")
def notes_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("notes") / "keelson"
    shutil.copytree(CHART, copy)
    (copy / "templates" / "NOTES.txt").rename(copy / "notes.src")
    (copy / "templates" / "zz-notes.yaml").write_text(WRAPPER)
    return copy


@pytest.fixture(scope="session")
def notes(helm: str, notes_chart: Path) -> Notes:
    def render(values: dict[str, Any] | None = None) -> str:
        merged = deep_merge(REQUIRED_VALUES, values or {})
        args = [helm, "template", "keelson", str(notes_chart), "--namespace", "keelson"]
        args += ["--show-only", "templates/zz-notes.yaml", "-f", "-"]
        proc = run(args, input_text=yaml.safe_dump(merged))
        assert proc.returncode == 0, proc.stderr
        return yaml.safe_load(proc.stdout)["data"]["NOTES.txt"]

    return render


def test_notes_name_the_hook_job_and_how_to_verify(notes: Notes) -> None:
    text = notes()
    assert "kubectl -n keelson logs job/keelson-migrate --all-containers" in text
    assert "kubectl -n keelson rollout status deployment/keelson" in text
    assert "helm test keelson -n keelson" in text


def test_notes_show_the_connection_budget(notes: Notes) -> None:
    text = notes()
    assert (
        "(max replicas 3 + surge 1 + terminating 1) x (pool 10 + overflow 5) + job 2 + purge 2"
        " fits in 90" in text
    )
    text = notes({"purge": {"enabled": False}, "migrations": {"enabled": False}})
    assert "(max replicas 3 + surge 1 + terminating 1) x (pool 10 + overflow 5) fits in 90" in text


def test_notes_name_the_purge_cronjob_only_when_enabled(notes: Notes) -> None:
    text = notes()
    assert 'CronJob "keelson-purge" (17 3 * * *)' in text
    assert "kubectl -n keelson create job --from=cronjob/keelson-purge keelson-purge-manual" in text
    assert "keelson-purge" not in notes({"purge": {"enabled": False}})


def test_notes_warn_while_client_addresses_are_unknown(notes: Notes) -> None:
    assert "every client looks like the ingress controller" in notes()
    for values in (
        {"server": {"forwardedAllowIps": "10.244.0.0/16"}},
        {"config": {"trustedProxyCidrs": ["10.244.0.0/16"]}},
    ):
        assert "Client addresses" not in notes(values)


def test_notes_warn_when_nothing_migrates(notes: Notes) -> None:
    text = notes({"migrations": {"enabled": False}})
    assert "nothing migrated the database" in text
    assert "keelson-migrate" not in text


def test_notes_give_the_public_url_with_an_ingress(notes: Notes) -> None:
    text = notes({"ingress": {"enabled": True, "host": "api.example.org"}})
    assert "URL: https://api.example.org/" in text
    assert "port-forward" not in text


def test_notes_name_the_metrics_service_and_the_hook_timeout(notes: Notes) -> None:
    text = notes()
    assert 'Metrics: /metrics on port 9090 through Service "keelson-metrics" only' in text
    assert "or the Ingress).\n\nConnection budget: (max replicas 3" in text
    assert "more than the Job's 300 s deadline plus an image pull" in text


def test_notes_show_the_pooler_budget_behind_pgbouncer(notes: Notes) -> None:
    text = notes({"database": {"pooler": {"mode": "pgbouncer"}}})
    assert (
        "Connection budget (behind PgBouncer): PostgreSQL holds pooler 2 x 20 + job 2 within 90"
        " connections; each pooler pod accepts 1000 clients." in text
    )
