"""`kill -9` in the middle of training: the next run resumes from the last checkpoint.

A real `steward run` subprocess is killed with SIGKILL as soon as its first checkpoint is on disk.
The next run (in this process) finds the killed run still 'running' with a dead process, marks it
failed with a `run_failed` audit event, resumes training from the newest checkpoint, and ends with
exactly one registered version.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, update

from governance.models import Run, utcnow
from governance.registry import STALE_RUN_ERROR, Registry
from steward.cli import main
from tests.test_bad_input import default_registry
from tests.test_flow_retrain import run_json, write_project
from tests.test_registry import start_run

CHECKPOINT_TIMEOUT_S = 300


def _checkpoint_steps(work_dir: Path) -> list[int]:
    """Steps (or epochs) of the complete checkpoints: a checkpoint dir appears by an atomic rename."""
    return sorted(int(p.name.removeprefix("checkpoint-")) for p in work_dir.glob("checkpoint-*"))


def _wait_for_checkpoint(process: subprocess.Popen, work_dir: Path) -> int:
    deadline = time.monotonic() + CHECKPOINT_TIMEOUT_S
    while not _checkpoint_steps(work_dir):
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within the time limit"
        time.sleep(0.02)
    return _checkpoint_steps(work_dir)[-1]


def kill_at_first_checkpoint(config: Path, env: dict[str, str], work_dir: Path) -> tuple[int, int]:
    """Start `steward run`, SIGKILL it once a checkpoint exists; returns (its pid, the newest step seen)."""
    with (config.parent / "killed-run.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "steward.cli", "run", "--config", str(config)],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            seen = _wait_for_checkpoint(process, work_dir)
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == -signal.SIGKILL
    return process.pid, seen


def _run_ids(registry: Registry) -> list[str]:
    return [e.payload["run_id"] for e in registry.audit.events("tickets") if e.event_type == "run_started"]


def assert_killed_run_failed_and_one_version(registry: Registry, killed_pid: int) -> None:
    killed_id, resumed_id = _run_ids(registry)
    killed = registry.get_run(killed_id)
    assert (killed.status, killed.error, killed.pid) == ("failed", STALE_RUN_ERROR, killed_pid)
    assert registry.get_run(resumed_id).status == "completed"
    (failure,) = [e for e in registry.audit.events("tickets") if e.event_type == "run_failed"]
    assert failure.payload["run_id"] == killed_id
    assert (failure.payload["stale"], failure.payload["pid"]) == (True, killed_pid)
    assert [v.version for v in registry.list_versions("tickets")] == [1]
    assert registry.audit.verify().ok
    assert_crashed_in_prefect(killed.flow_run_id)


def assert_crashed_in_prefect(flow_run_id: str | None) -> None:
    """The killed run's Prefect flow run no longer shows as Running."""
    from prefect import get_client

    assert flow_run_id is not None
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(flow_run_id).state.is_crashed()


def resumed_event(registry: Registry, stage: str) -> dict:
    (event,) = [e for e in registry.audit.events("tickets") if e.event_type == "stage_resumed"]
    assert event.payload["stage"] == stage
    return event.payload


@pytest.mark.slow
def test_kill_during_continued_pretraining_resumes_from_its_checkpoint(
    tmp_path: Path, tiny_model_dir: Path, steward_env: dict[str, str], capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_project(tmp_path, tiny_model_dir, finetuning={"epochs": 2},
                           pretraining={"max_steps": 30, "max_epochs": 1_000, "save_steps": 2})
    work_dir = tmp_path / ".steward" / "work" / "pretrain"
    killed_pid, seen_step = kill_at_first_checkpoint(config, steward_env, work_dir)

    code, outcome = run_json(capsys, "run", "--config", str(config))

    assert (code, outcome["version"]) == (0, 1)
    assert outcome["pretraining_resumed_from_step"] >= seen_step
    with default_registry(tmp_path) as registry:
        assert_killed_run_failed_and_one_version(registry, killed_pid)
        payload = resumed_event(registry, "continued pretraining")
        assert payload["resumed_from_step"] == outcome["pretraining_resumed_from_step"]
    assert list(work_dir.iterdir()) == []  # no checkpoint or half-written temp dir is left behind


@pytest.mark.slow
def test_kill_during_fine_tuning_resumes_from_its_last_epoch(
    tmp_path: Path, tiny_model_dir: Path, steward_env: dict[str, str], capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_project(tmp_path, tiny_model_dir, pretraining={"enabled": False}, finetuning={"epochs": 4})
    work_dir = tmp_path / ".steward" / "work" / "finetune"
    killed_pid, seen_epoch = kill_at_first_checkpoint(config, steward_env, work_dir)

    code, outcome = run_json(capsys, "run", "--config", str(config))

    assert (code, outcome["version"]) == (0, 1)
    assert outcome["finetuning_resumed_from_epoch"] >= seen_epoch
    with default_registry(tmp_path) as registry:
        assert_killed_run_failed_and_one_version(registry, killed_pid)
        payload = resumed_event(registry, "fine-tuning")
        assert payload["resumed_from_epoch"] == outcome["finetuning_resumed_from_epoch"]
    assert main(["audit", "verify", "--config", str(config)]) == 0


def test_open_fails_only_runs_whose_process_is_gone(registry_url: str) -> None:
    """Dead (exited) and reused pids are stale; live runs and runs of other hosts are left alone."""
    script = ("import sys; from governance.registry import Registry; from tests.test_registry import start_run\n"
              "with Registry.open(sys.argv[1]) as r: print(start_run(r, 'tickets').id)")
    exited = subprocess.run([sys.executable, "-c", script, registry_url], capture_output=True, text=True, check=True)
    dead_id = exited.stdout.strip()
    with Registry.open(registry_url) as registry:
        alive, elsewhere, reused = (start_run(registry, "tickets") for _ in range(3))
    _set_run_columns(registry_url, elsewhere.id, host="another-machine")
    newer_process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # the run's pid now belongs to a process created long after the run started
        _set_run_columns(registry_url, reused.id, pid=newer_process.pid, started_at=utcnow() - timedelta(hours=1))
        with Registry.open(registry_url) as registry:
            status = {run.id: registry.get_run(run.id).status for run in (alive, elsewhere, reused)}
            dead = registry.get_run(dead_id)
            assert registry.audit.verify().ok
    finally:
        newer_process.kill()
        newer_process.wait()
    assert (dead.status, dead.error) == ("failed", STALE_RUN_ERROR)
    assert status == {alive.id: "running", elsewhere.id: "running", reused.id: "failed"}


def _set_run_columns(url: str, run_id: str, **values: object) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(update(Run).where(Run.id == run_id).values(**values))
    finally:
        engine.dispose()
