"""Datasets, runs and their liveness: a run's process is watched, and a run whose process died is failed."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import BadInputError
from governance.audit import canonical_json
from governance.events import DatasetRecorded, RunFinished, RunStarted
from governance.models import Dataset, Run, json_dumps, utcnow
from governance.records import DatasetRecord, RunRecord
from governance.redact import redact, redact_text
from governance.store import RegistryStore

RUN_STATUSES = ("completed", "failed")
STALE_RUN_ERROR = "stale: process died"
# A run's process was created before the run started; allow for the error of process start times
# (whole-second boot time, clock adjustments). A pid reused this soon after a run started goes unnoticed.
PROCESS_START_SLACK_S = 5.0


def this_host() -> str:
    """Where a process id means something: the host name and, on Linux, the boot and the PID namespace
    (so a container sharing its name, or the same machine after a reboot, never looks like this one)."""
    name = socket.gethostname()
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return name
    return f"{name} (boot {boot[:8]}, pid namespace {namespace})"

def process_alive(pid: int, started_at: datetime) -> bool:
    """Whether process `pid` on this host is still the one that started a run at `started_at`
    (not gone, not a zombie, and not a newer process that was given the same id)."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return process.create_time() <= started_at.timestamp() + PROCESS_START_SLACK_S
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # someone else's live process
        return True


class RunStore(RegistryStore):
    def record_dataset(
        self, *, role: str, source: str, fingerprint: str, rows: int, schema: dict[str, str]
    ) -> DatasetRecord:
        """The dataset row for this content and role; an existing one is reused, not duplicated."""
        with self._write() as session:
            existing = session.scalars(
                select(Dataset).where(Dataset.fingerprint == fingerprint, Dataset.role == role)
            ).first()
            if existing is not None:
                return existing.to_record()
            dataset = Dataset(role=role, source=redact_text(source), fingerprint=fingerprint, rows=rows)
            dataset.schema = dict(schema)
            session.add(dataset)
            session.flush()
            self._event(session, f"dataset:{fingerprint[:12]}", DatasetRecorded(dataset.id, role, source, rows))
            return dataset.to_record()

    def start_run(
        self,
        *,
        kind: str,
        model_name: str,
        config: dict,
        seed: int,
        code_version: str,
        package_versions: dict[str, str],
        flow_run_id: str | None = None,
    ) -> RunRecord:
        """A new run in status 'running', authored by this handle's identity. URL passwords in ``config`` are
        masked before storing."""
        snapshot = json.loads(json_dumps(redact(config)))  # exactly what the JSON column stores
        run = Run(
            id=str(uuid.uuid4()),
            kind=kind,
            model_name=model_name,
            status="running",
            flow_run_id=flow_run_id,
            config=snapshot,
            code_version=code_version,
            package_versions=dict(package_versions),
            seed=seed,
            author=self.identity.name,
            started_at=utcnow(),
            host=this_host(),
            pid=os.getpid(),
        )
        with self._write() as session:
            session.add(run)
            config_sha256 = hashlib.sha256(canonical_json(snapshot).encode()).hexdigest()
            payload = RunStarted(run.id, kind, seed, code_version, flow_run_id, run.host, run.pid, config_sha256)
            self._event(session, model_name, payload)
            return run.to_record()

    def finish_run(self, run_id: str, *, status: str, error: str | None = None) -> RunRecord:
        if status not in RUN_STATUSES:
            raise BadInputError(f"run status must be one of {', '.join(RUN_STATUSES)}, not {status!r}")
        with self._write() as session:
            run = self._run(session, run_id)
            if run.status != "running":
                raise BadInputError(f"run {run_id!r} has already {run.status}")
            self._close_run(session, run, status, error)
            return run.to_record()

    def _close_run(self, session: Session, run: Run, status: str, error: str | None, *, stale: bool = False) -> None:
        """End the run; a ``stale`` one (its process is gone) names the host and pid it ran as."""
        run.status = status
        run.finished_at = utcnow()
        run.error = None if error is None else redact_text(error)
        where = {"host": run.host, "pid": run.pid} if stale else {}
        self._event(session, run.model_name, RunFinished(run.id, run.kind, status, run.error, stale, **where))

    def get_run(self, run_id: str) -> RunRecord:
        with self._read() as session:
            return self._run(session, run_id).to_record()

    def fail_stale_runs(self, older_than_s: float) -> list[str]:
        """Mark runs still 'running' after ``older_than_s`` seconds as failed (their process died)."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        with self._write() as session:
            stale = session.scalars(
                select(Run).where(Run.status == "running", Run.started_at < cutoff).order_by(Run.started_at)
            ).all()
            for run in stale:
                self._close_run(session, run, "failed", STALE_RUN_ERROR, stale=True)
            return [run.id for run in stale]

    def fail_dead_runs(self) -> list[RunRecord]:
        """Mark as failed the runs still 'running' on this host whose process is gone (killed with
        SIGKILL, out of memory), each with a `run_failed` event; returns them as they are now.
        Runs of other hosts are left alone: only `fail_stale_runs` (by age) can judge those."""
        with self._read() as session:
            running = session.execute(
                select(Run.id, Run.pid, Run.started_at).where(Run.status == "running", Run.host == this_host())
            ).all()
        dead = [run_id for run_id, pid, started_at in running if pid is None or not process_alive(pid, started_at)]
        if not dead:
            return []
        with self._write() as session:
            runs = session.scalars(
                select(Run).where(Run.id.in_(dead), Run.status == "running").order_by(Run.started_at)
            ).all()
            for run in runs:
                self._close_run(session, run, "failed", STALE_RUN_ERROR, stale=True)
            return [run.to_record() for run in runs]
