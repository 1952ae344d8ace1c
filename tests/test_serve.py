"""`steward serve`: the deployments it builds from a config, and its one-line errors.

Serving itself (registration with a real Prefect server, SIGTERM) is in tests/test_prefect_ui.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.settings import PREFECT_API_URL, temporary_settings

from core.config import load_config
from flows.deployments import build_deployments
from flows.events import DRIFT_EVENT
from steward.cli import main


def _write_config(folder: Path, **sections: dict) -> Path:
    config = {"name": "tickets", "data": {"train": "data/train.csv", "test": "data/test.csv"}, **sections}
    path = folder / "steward.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _cron(deployment) -> str:
    (schedule,) = deployment.schedules
    return schedule.schedule.cron


def test_retrain_runs_on_its_cron_and_on_drift_one_run_at_a_time(tmp_path: Path) -> None:
    path = _write_config(tmp_path, schedule={"retrain_cron": "15 2 * * 0"})
    served = build_deployments(load_config(path), path)

    retrain = served.retrain
    assert (retrain.name, retrain.flow_name) == ("tickets-retrain", "steward-retrain")
    assert _cron(retrain) == "15 2 * * 0"
    # the registry is no parameter (Prefect shows parameters, a password included): runs resolve it themselves
    assert retrain.parameters == {"config_path": str(path.resolve())}
    assert retrain.concurrency_limit == 1
    assert retrain.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW
    (trigger,) = retrain.triggers
    assert trigger.expect == {DRIFT_EVENT}
    assert trigger.match.model_dump() == {"prefect.resource.id": "steward.model.tickets"}
    assert trigger.parameters == retrain.parameters


def test_monitor_is_served_only_when_the_config_names_the_current_batch(tmp_path: Path) -> None:
    without = _write_config(tmp_path)
    assert build_deployments(load_config(without), without).monitor is None

    path = _write_config(
        tmp_path, monitoring={"current": "batches/today.csv"}, schedule={"monitor_cron": "*/5 * * * *"}
    )
    monitor = build_deployments(load_config(path), path).monitor
    assert monitor is not None
    assert (monitor.name, monitor.flow_name) == ("tickets-monitor", "steward-monitor")
    assert _cron(monitor) == "*/5 * * * *"
    assert monitor.parameters == {
        "config_path": str(path.resolve()),
        "current_path": str(tmp_path.resolve() / "batches" / "today.csv"),
    }
    assert monitor.concurrency_limit == 1


def test_a_served_monitor_checks_the_prediction_log(tmp_path: Path) -> None:
    path = _write_config(tmp_path, monitoring={"current": "served"}, serving={"window": "6h"})
    monitor = build_deployments(load_config(path), path).monitor
    assert monitor is not None and monitor.parameters["current_path"] == "served"
    assert load_config(path).serving.window.total_seconds() == 6 * 3600


def test_a_bad_cron_is_a_one_line_error_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_config(tmp_path, schedule={"retrain_cron": "every monday"})
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        code = main(["serve", "--config", str(path)])
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert error.count("\n") == 0
    assert "schedule.retrain_cron" in error
    assert "every monday" in error


def test_serve_without_a_prefect_server_says_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_config(tmp_path)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        code = main(["serve", "--config", str(path)])
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert "prefect server start" in error
    assert "PREFECT_API_URL" in error
