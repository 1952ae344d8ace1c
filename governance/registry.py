"""The registry API: models, versions, lineage, runs, metrics, gate decisions, drift, aliases.

Every mutating call runs in one transaction that holds the registry write lock and appends its audit
event on the same connection, so a change and its audit event commit or fail together.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, Result, Select, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, aliased

from governance.audit import AuditLog, ChainVerification, canonical_json
from governance.db import lock_for_write, open_migrated, reachable, read_only
from governance.identity import Identity
from governance.models import (
    Alias,
    AliasHistory,
    ArtifactFile,
    CompressedForm,
    Dataset,
    DriftReport,
    EvaluationDetail,
    GateDecision,
    Metric,
    ModelVersion,
    RegisteredModel,
    Run,
    ValidationResult,
    VersionDataset,
    json_dumps,
    utcnow,
)
from governance.records import (
    AliasMove,
    ArtifactFileRecord,
    ClassScore,
    CompressedFormIn,
    CompressedFormRecord,
    DatasetRecord,
    DriftReportIn,
    DriftReportRecord,
    EvaluationDetailIn,
    EvaluationDetailRecord,
    GateDecisionIn,
    GateDecisionRecord,
    ModelSummary,
    ModelVersionDetail,
    ModelVersionRecord,
    ReliabilityBin,
    RunRecord,
    ValidationResultIn,
    ValidationResultRecord,
)
from governance.redact import mask_url, redact, redact_text
from governance.roles import RoleGrant, init_roles
from steward.errors import BadInputError, CheckFailedError, RegistryUnavailableError
from steward.scores import COMPRESSION_STATUSES, DRIFT_FINDINGS, FORMS, GATE_OUTCOMES, RETRAIN_DECISIONS

__all__ = [
    "AliasMove",
    "ArtifactFileRecord",
    "AuditLog",
    "ChainVerification",
    "ClassScore",
    "CompressedFormIn",
    "CompressedFormRecord",
    "DatasetRecord",
    "DriftReportIn",
    "DriftReportRecord",
    "EvaluationDetailIn",
    "EvaluationDetailRecord",
    "GateDecisionIn",
    "GateDecisionRecord",
    "ModelSummary",
    "ModelVersionDetail",
    "ModelVersionRecord",
    "Registry",
    "ReliabilityBin",
    "RunRecord",
    "ValidationResultIn",
    "ValidationResultRecord",
    "mask_url",
]

CHAMPION = "champion"
RUN_STATUSES = ("completed", "failed")
STALE_RUN_ERROR = "stale: process died"
DRIFT_EVENT_TYPES = {"drift": "drift_detected", "prior_shift": "prior_shift", "none": "drift_report"}  # by finding
# A run's process was created before the run started; allow for the error of process start times
# (whole-second boot time, clock adjustments). A pid reused this soon after a run started goes unnoticed.
PROCESS_START_SLACK_S = 5.0
_GATE_PAYLOAD_FIELDS = (
    "run_id",
    "champion_version",
    "primary_metric",
    "candidate_score",
    "champion_score",
    "min_score",
    "min_improvement",
    "passed",
    "outcome",
    "reasons",
)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_R = TypeVar("_R")

_Parent = aliased(ModelVersion)
_Champion = aliased(ModelVersion)


def _version_query() -> Select:
    """Columns in ModelVersionRecord field order (records are built positionally: 10,000 rows stay fast)."""
    return (
        select(
            ModelVersion.id,
            RegisteredModel.name.label("model_name"),
            ModelVersion.version,
            ModelVersion.artifact_path,
            ModelVersion.base_model,
            _Parent.version.label("parent_version"),
            ModelVersion.run_id,
            ModelVersion.status,
            ModelVersion.created_at,
            ModelVersion.created_by,
        )
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .outerjoin(_Parent, _Parent.id == ModelVersion.parent_version_id)
    )


def _gate_query() -> Select:
    """Columns in GateDecisionRecord field order."""
    decision_columns = [c for c in GateDecision.__table__.c if c.name != "id"]
    return (
        select(
            GateDecision.id,
            RegisteredModel.name.label("model_name"),
            ModelVersion.version.label("candidate_version"),
            _Champion.version.label("champion_version"),
            *decision_columns,
        )
        .join(ModelVersion, ModelVersion.id == GateDecision.candidate_version_id)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .outerjoin(_Champion, _Champion.id == GateDecision.champion_version_id)
    )


def _to_record(cls: type[_R], obj: object, **overrides: Any) -> _R:
    """Copy the dataclass's fields from an ORM object (same attribute names), plus overrides."""
    values = {f.name: getattr(obj, f.name) for f in fields(cls) if f.name not in overrides}  # type: ignore[arg-type]
    return cls(**values, **overrides)


def _core(session: Session, stmt: Select) -> Result:
    """Run a column query on the session's connection, skipping ORM result processing."""
    return session.connection().execute(stmt)


def _subject(model_name: str, version: int) -> str:
    return f"{model_name}:{version}"


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


class Registry:
    """A handle on one registry database. Open with ``Registry.open(url)``; close when done."""

    def __init__(self, engine: Engine, masked_url: str) -> None:
        self._engine = engine
        self._read_engine = read_only(engine)
        self._audit = AuditLog(engine)
        self.url = masked_url
        self.runs_found_dead: list[RunRecord] = []  # failed by `open`: their process was gone

    @classmethod
    def open(cls, url: str) -> Registry:
        """Connect, upgrade the schema to the newest migration, and fail the runs whose process died."""
        registry = cls(open_migrated(url, "registry"), mask_url(url))
        registry.runs_found_dead = registry._sweep_dead_runs()
        return registry

    def _sweep_dead_runs(self) -> list[RunRecord]:
        """`fail_dead_runs` as housekeeping on open: a registry user who may only read skips it."""
        try:
            return self.fail_dead_runs()
        except (SQLAlchemyError, RegistryUnavailableError):
            return []

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def audit(self) -> AuditLog:
        return self._audit

    @property
    def identity(self) -> Identity:
        """Who acts through this handle: the database login on PostgreSQL, the declared name on SQLite."""
        return self._audit.identity

    # -- transactions and lookups ------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A session whose transaction holds the registry write lock; commits on success."""
        with reachable(self._engine), Session(self._engine, expire_on_commit=False) as session, session.begin():
            lock_for_write(session.connection())
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with reachable(self._engine), Session(self._read_engine) as session:
            yield session

    def _event(self, session: Session, event_type: str, subject: str, payload: dict[str, Any]) -> None:
        session.flush()
        self._audit.append_in(session.connection(), event_type, subject, payload)

    @staticmethod
    def _find_model(session: Session, name: str) -> RegisteredModel | None:
        return session.scalars(select(RegisteredModel).where(RegisteredModel.name == name)).first()

    @classmethod
    def _model(cls, session: Session, name: str) -> RegisteredModel:
        model = cls._find_model(session, name)
        if model is None:
            raise BadInputError(f"no model named {name!r}")
        return model

    @classmethod
    def _version(cls, session: Session, model_name: str, version: int) -> tuple[RegisteredModel, ModelVersion]:
        model = cls._model(session, model_name)
        row = session.scalars(
            select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version == version)
        ).first()
        if row is None:
            raise BadInputError(f"model {model_name!r} has no version {version}")
        return model, row

    @staticmethod
    def _run(session: Session, run_id: str) -> Run:
        run = session.get(Run, run_id)
        if run is None:
            raise BadInputError(f"no run {run_id!r}")
        return run

    @staticmethod
    def _version_by_id(session: Session, version_id: int) -> ModelVersionRecord:
        row = _core(session, _version_query().where(ModelVersion.id == version_id)).first()
        if row is None:
            raise BadInputError(f"no model version with id {version_id}")
        return ModelVersionRecord(*row)

    # -- datasets and runs -------------------------------------------------------------------------

    def record_dataset(
        self, *, role: str, source: str, fingerprint: str, rows: int, schema: dict[str, str]
    ) -> DatasetRecord:
        """The dataset row for this content and role; an existing one is reused, not duplicated."""
        with self._write() as session:
            existing = session.scalars(
                select(Dataset).where(Dataset.fingerprint == fingerprint, Dataset.role == role)
            ).first()
            if existing is not None:
                return _to_record(DatasetRecord, existing)
            dataset = Dataset(role=role, source=redact_text(source), fingerprint=fingerprint, rows=rows)
            dataset.schema = dict(schema)
            session.add(dataset)
            session.flush()
            payload = {"dataset_id": dataset.id, "role": role, "source": source, "rows": rows}
            self._event(session, "dataset_recorded", f"dataset:{fingerprint[:12]}", payload)
            return _to_record(DatasetRecord, dataset)

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
            payload = {
                "run_id": run.id,
                "kind": kind,
                "seed": seed,
                "code_version": code_version,
                "flow_run_id": flow_run_id,
                "host": run.host,
                "pid": run.pid,
                "config_sha256": hashlib.sha256(canonical_json(snapshot).encode()).hexdigest(),
            }
            self._event(session, "run_started", model_name, payload)
            return _to_record(RunRecord, run)

    def finish_run(self, run_id: str, *, status: str, error: str | None = None) -> RunRecord:
        if status not in RUN_STATUSES:
            raise BadInputError(f"run status must be one of {', '.join(RUN_STATUSES)}, not {status!r}")
        with self._write() as session:
            run = self._run(session, run_id)
            if run.status != "running":
                raise BadInputError(f"run {run_id!r} has already {run.status}")
            self._close_run(session, run, status, error)
            return _to_record(RunRecord, run)

    def _close_run(
        self, session: Session, run: Run, status: str, error: str | None, detail: dict[str, Any] | None = None,
    ) -> None:
        run.status = status
        run.finished_at = utcnow()
        run.error = None if error is None else redact_text(error)
        payload = {"run_id": run.id, "kind": run.kind, "status": status, "error": run.error, **(detail or {})}
        self._event(session, f"run_{status}", run.model_name, payload)

    def get_run(self, run_id: str) -> RunRecord:
        with self._read() as session:
            return _to_record(RunRecord, self._run(session, run_id))

    def fail_stale_runs(self, older_than_s: float) -> list[str]:
        """Mark runs still 'running' after ``older_than_s`` seconds as failed (their process died)."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        with self._write() as session:
            stale = session.scalars(
                select(Run).where(Run.status == "running", Run.started_at < cutoff).order_by(Run.started_at)
            ).all()
            for run in stale:
                self._close_run(session, run, "failed", STALE_RUN_ERROR, {"stale": True})
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
                detail = {"stale": True, "host": run.host, "pid": run.pid}
                self._close_run(session, run, "failed", STALE_RUN_ERROR, detail)
            return [_to_record(RunRecord, run) for run in runs]

    # -- versions and lineage ----------------------------------------------------------------------

    def register_version(
        self,
        *,
        model_name: str,
        run_id: str,
        artifact_path: str,
        files: dict[str, str],
        base_model: str,
        parent_version: int | None = None,
        datasets: dict[str, int] | None = None,
        require_approval: bool = False,
    ) -> ModelVersionRecord:
        """Register the next version (max + 1, numbered under the write lock) with its files and datasets.

        ``files`` maps paths relative to ``artifact_path`` to sha256; ``datasets`` maps role to dataset id.
        The model is created on first registration; ``require_approval`` updates its promotion policy.
        """
        _check_sha256(files)
        datasets = datasets or {}
        with self._write() as session:
            self._run(session, run_id)
            model = self._model_for_registration(session, model_name, require_approval)
            parent = self._version(session, model_name, parent_version)[1] if parent_version is not None else None
            dataset_rows = {role: self._dataset(session, dataset_id) for role, dataset_id in datasets.items()}
            latest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id))
            version = ModelVersion(
                model_id=model.id,
                version=(latest or 0) + 1,
                artifact_path=artifact_path,
                base_model=base_model,
                parent_version_id=parent.id if parent else None,
                run_id=run_id,
                created_by=self.identity.name,
            )
            session.add(version)
            session.flush()
            session.add_all(_artifact_files(version.id, artifact_path, files))
            session.add_all(
                VersionDataset(version_id=version.id, role=role, dataset_id=dataset_id)
                for role, dataset_id in datasets.items()
            )
            payload = {
                "version_id": version.id,
                "run_id": run_id,
                "artifact_path": artifact_path,
                "base_model": base_model,
                "parent_version": parent_version,
                "files": files,
                "datasets": {role: row.fingerprint for role, row in dataset_rows.items()},
                "require_approval": model.require_approval,
            }
            self._event(session, "version_registered", _subject(model_name, version.version), payload)
            return self._version_by_id(session, version.id)

    def _model_for_registration(self, session: Session, name: str, require_approval: bool) -> RegisteredModel:
        model = self._find_model(session, name)
        if model is None:
            model = RegisteredModel(name=name, require_approval=require_approval, created_at=utcnow())
            session.add(model)
            self._event(session, "model_created", name, {"require_approval": require_approval})
        # A registration can make promotion need approval, never lift it: a trainer's config must not
        # switch off the four-eyes rule (lifting it is an approver's UPDATE, see `steward registry init-roles`).
        model.require_approval = model.require_approval or require_approval
        return model

    @staticmethod
    def _dataset(session: Session, dataset_id: int) -> Dataset:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            raise BadInputError(f"no dataset with id {dataset_id}")
        return dataset

    def list_models(self) -> list[ModelSummary]:
        stats = (
            select(
                ModelVersion.model_id,
                func.max(ModelVersion.version).label("latest"),
                func.count().label("count"),
            )
            .group_by(ModelVersion.model_id)
            .subquery()
        )
        with self._read() as session:
            rows = session.execute(
                select(RegisteredModel, stats.c.latest, stats.c.count)
                .outerjoin(stats, stats.c.model_id == RegisteredModel.id)
                .order_by(RegisteredModel.name)
            ).all()
            aliases: dict[int, dict[str, int]] = {}
            alias_rows = session.execute(
                select(Alias.model_id, Alias.alias, ModelVersion.version).join(
                    ModelVersion, ModelVersion.id == Alias.version_id
                )
            )
            for model_id, alias, version in alias_rows:
                aliases.setdefault(model_id, {})[alias] = version
        return [
            ModelSummary(
                name=model.name,
                latest_version=latest,
                version_count=count or 0,
                aliases=aliases.get(model.id, {}),
                created_at=model.created_at,
                require_approval=model.require_approval,
                description=model.description,
            )
            for model, latest, count in rows
        ]

    def requires_approval(self, model_name: str) -> bool:
        """Whether promoting the model's champion needs an approver who is not the author (False if unknown)."""
        with self._read() as session:
            model = self._find_model(session, model_name)
            return model is not None and model.require_approval

    def list_versions(self, model_name: str, limit: int | None = None) -> list[ModelVersionRecord]:
        """Versions of a model, newest first."""
        with self._read() as session:
            model = self._model(session, model_name)
            stmt = _version_query().where(ModelVersion.model_id == model.id).order_by(ModelVersion.version.desc())
            rows = _core(session, stmt.limit(limit)).all()
        return [ModelVersionRecord(*row) for row in rows]

    def get_version(self, model_name: str, version: int) -> ModelVersionDetail:
        with self._read() as session:
            _, row = self._version(session, model_name, version)
            files = session.scalars(
                select(ArtifactFile).where(ArtifactFile.version_id == row.id).order_by(ArtifactFile.relative_path)
            )
            datasets = session.execute(
                select(VersionDataset.role, Dataset)
                .join(Dataset, Dataset.id == VersionDataset.dataset_id)
                .where(VersionDataset.version_id == row.id)
            )
            aliases = session.scalars(select(Alias.alias).where(Alias.version_id == row.id).order_by(Alias.alias)).all()
            gate = _core(
                session,
                _gate_query().where(GateDecision.candidate_version_id == row.id).order_by(GateDecision.id.desc()),
            ).first()
            return ModelVersionDetail(
                version=self._version_by_id(session, row.id),
                files=[_to_record(ArtifactFileRecord, f) for f in files],
                datasets={role: _to_record(DatasetRecord, dataset) for role, dataset in datasets},
                metrics=self._metrics(session, row.id),
                aliases=list(aliases),
                run=_to_record(RunRecord, self._run(session, row.run_id)),
                gate_decision=None if gate is None else GateDecisionRecord(*gate),
                forms=self._forms(session, row.id),
            )

    # -- metrics, validation, gate, drift ----------------------------------------------------------

    def log_metrics(
        self,
        *,
        run_id: str,
        metrics: dict[str, float],
        version_id: int | None = None,
        dataset_id: int | None = None,
        step: int | None = None,
    ) -> None:
        values = _finite_metrics(metrics)
        with self._write() as session:
            run = self._run(session, run_id)
            subject = run.model_name
            if version_id is not None:
                record = self._version_by_id(session, version_id)
                subject = _subject(record.model_name, record.version)
            if dataset_id is not None:
                self._dataset(session, dataset_id)
            session.add_all(
                Metric(run_id=run_id, version_id=version_id, dataset_id=dataset_id, key=k, value=v, step=step)
                for k, v in values.items()
            )
            payload = {"run_id": run_id, "dataset_id": dataset_id, "step": step, "metrics": values}
            self._event(session, "metrics_logged", subject, payload)

    def log_curve(self, *, run_id: str, key: str, points: list[tuple[int, float]]) -> None:
        """A per-step series (a loss curve) in one transaction and one audit event.

        The event carries the series' sha256 rather than every point, so the chain still covers it.
        """
        values = [(int(step), value) for step, value in points]
        _finite_metrics({f"{key}@{step}": value for step, value in values})
        with self._write() as session:
            run = self._run(session, run_id)
            session.add_all(Metric(run_id=run_id, key=key, value=value, step=step) for step, value in values)
            payload = {
                "run_id": run_id,
                "key": key,
                "points": len(values),
                "last": values[-1][1] if values else None,
                "sha256": hashlib.sha256(canonical_json(values).encode()).hexdigest(),
            }
            self._event(session, "metric_curve_logged", run.model_name, payload)

    def curve(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """A series logged with `log_curve`, in step order."""
        with self._read() as session:
            rows = session.execute(
                select(Metric.step, Metric.value)
                .where(Metric.run_id == run_id, Metric.key == key, Metric.step.is_not(None))
                .order_by(Metric.step)
            ).all()
        return [(int(step), float(value)) for step, value in rows]

    def metrics_for_version(self, version_id: int) -> dict[str, float]:
        """The latest value of each metric logged against the version."""
        with self._read() as session:
            return self._metrics(session, version_id)

    @staticmethod
    def _metrics(session: Session, version_id: int) -> dict[str, float]:
        rows = session.execute(
            select(Metric.key, Metric.value).where(Metric.version_id == version_id).order_by(Metric.id)
        )
        return dict(rows.tuples().all())

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """The latest value of each scalar logged against the run itself (no version, not a curve)."""
        with self._read() as session:
            rows = session.execute(
                select(Metric.key, Metric.value)
                .where(Metric.run_id == run_id, Metric.version_id.is_(None), Metric.step.is_(None))
                .order_by(Metric.id)
            )
            return dict(rows.tuples().all())

    def record_evaluation(self, detail: EvaluationDetailIn) -> EvaluationDetailRecord:
        """Store a version's per-class scores, confusion matrix and reliability bins (one audit event).

        The event carries the sha256 of the whole record, so the chain covers every number in it.
        """
        _check_evaluation(detail)
        with self._write() as session:
            self._run(session, detail.run_id)
            version = self._version_by_id(session, detail.version_id)
            if detail.dataset_id is not None:
                self._dataset(session, detail.dataset_id)
            row = EvaluationDetail(**_evaluation_columns(detail), created_at=utcnow())
            session.add(row)
            session.flush()
            payload = {
                "run_id": detail.run_id,
                "version_id": detail.version_id,
                "dataset_id": detail.dataset_id,
                "labels": list(detail.labels),
                "examples": sum(score.support for score in detail.per_class),
                "adapted_checkpoint_key": detail.adapted_checkpoint_key,
                "sha256": hashlib.sha256(canonical_json(_evaluation_columns(detail)).encode()).hexdigest(),
            }
            self._event(session, "evaluation_recorded", _subject(version.model_name, version.version), payload)
            return _evaluation_record(row)

    def evaluation(self, version_id: int) -> EvaluationDetailRecord | None:
        """The latest evaluation detail recorded for the version; None when there is none."""
        with self._read() as session:
            row = session.scalars(
                select(EvaluationDetail)
                .where(EvaluationDetail.version_id == version_id)
                .order_by(EvaluationDetail.id.desc())
                .limit(1)
            ).first()
            return None if row is None else _evaluation_record(row)

    def record_validation(self, *, run_id: str, dataset_id: int | None, results: list[ValidationResultIn]) -> None:
        with self._write() as session:
            run = self._run(session, run_id)
            if dataset_id is not None:
                self._dataset(session, dataset_id)
            session.add_all(
                ValidationResult(
                    run_id=run_id,
                    dataset_id=dataset_id,
                    expectation=r.expectation,
                    column_name=r.column,
                    success=r.success,
                    observed=r.observed,
                    details=r.details,
                )
                for r in results
            )
            failed = [f"{r.expectation}({r.column})" if r.column else r.expectation for r in results if not r.success]
            payload = {"run_id": run_id, "dataset_id": dataset_id, "checked": len(results), "failed": failed}
            self._event(session, "validation_recorded", run.model_name, payload)

    def validation_results(self, run_id: str) -> list[ValidationResultRecord]:
        with self._read() as session:
            rows = session.scalars(
                select(ValidationResult).where(ValidationResult.run_id == run_id).order_by(ValidationResult.id)
            )
            return [_to_record(ValidationResultRecord, r, column=r.column_name) for r in rows]

    def record_gate_decision(self, decision: GateDecisionIn) -> GateDecisionRecord:
        if decision.outcome not in GATE_OUTCOMES:
            raise BadInputError(f"gate outcome must be one of {', '.join(GATE_OUTCOMES)}, not {decision.outcome!r}")
        with self._write() as session:
            self._run(session, decision.run_id)
            candidate = self._version_by_id(session, decision.candidate_version_id)
            if decision.champion_version_id is not None:
                self._version_by_id(session, decision.champion_version_id)
            row = GateDecision(**asdict(decision), created_at=utcnow())
            session.add(row)
            session.flush()
            record = GateDecisionRecord(*_core(session, _gate_query().where(GateDecision.id == row.id)).one())
            payload = {k: getattr(record, k) for k in _GATE_PAYLOAD_FIELDS}
            self._event(session, "gate_decision", _subject(candidate.model_name, candidate.version), payload)
            return record

    def gate_decisions(self, model_name: str) -> list[GateDecisionRecord]:
        with self._read() as session:
            rows = _core(
                session, _gate_query().where(RegisteredModel.name == model_name).order_by(GateDecision.id)
            ).all()
        return [GateDecisionRecord(*row) for row in rows]

    def record_drift_report(self, report: DriftReportIn) -> DriftReportRecord:
        if report.finding not in DRIFT_FINDINGS or report.retrain not in RETRAIN_DECISIONS:
            raise BadInputError(f"drift finding must be one of {', '.join(DRIFT_FINDINGS)} and retrain one of "
                                f"{', '.join(RETRAIN_DECISIONS)}, not {report.finding!r} / {report.retrain!r}")
        with self._write() as session:
            if report.run_id is not None:
                self._run(session, report.run_id)
            if report.version_id is not None:
                self._version_by_id(session, report.version_id)
            row = DriftReport(**asdict(report), drift_detected=report.drift_detected, created_at=utcnow())
            session.add(row)
            session.flush()
            session.refresh(row)  # hand back details as stored: NaN -> null, odd objects -> str
            payload = {
                "drift_detected": report.drift_detected,
                "drift_share": report.drift_share,
                "finding": report.finding,
                "retrain": report.retrain,
                "report_path": report.report_path,
                "run_id": report.run_id,
                "version_id": report.version_id,
            }
            event_type = DRIFT_EVENT_TYPES[report.finding]
            self._event(session, event_type, report.model_name, payload)
            return _to_record(DriftReportRecord, row)

    def record_compressed_form(self, form: CompressedFormIn) -> CompressedFormRecord:
        """Store a compressed form and the compression gate's verdict; one audit event, `compression_<status>`,
        carrying the sha256 of every file of the form."""
        if form.form not in FORMS or form.status not in COMPRESSION_STATUSES:
            raise BadInputError(f"form must be one of {', '.join(FORMS)} and status one of "
                                f"{', '.join(COMPRESSION_STATUSES)}, not {form.form!r} / {form.status!r}")
        _check_sha256(form.files)
        with self._write() as session:
            self._run(session, form.run_id)
            version = self._version_by_id(session, form.version_id)
            row = CompressedForm(**{**asdict(form), "reasons": list(form.reasons),
                                    "metrics": _finite_metrics(form.metrics)}, created_at=utcnow())
            session.add(row)
            session.flush()
            payload = {"run_id": form.run_id, "form": form.form, "method": form.method, "reasons": list(form.reasons),
                       "size_bytes": form.size_bytes, "sha256": form.files,
                       **{key: form.metrics.get(key) for key in ("agreement", "metric_drop")}}
            self._event(session, f"compression_{form.status}", _subject(version.model_name, version.version), payload)
            return _form_record(row)

    @staticmethod
    def _forms(session: Session, version_id: int) -> list[CompressedFormRecord]:
        """The latest record of each form of the version, in form order."""
        rows = session.scalars(
            select(CompressedForm).where(CompressedForm.version_id == version_id).order_by(CompressedForm.id)
        )
        latest = {row.form: row for row in rows}
        return [_form_record(latest[name]) for name in FORMS if name in latest]

    def drift_reports(self, model_name: str) -> list[DriftReportRecord]:
        with self._read() as session:
            rows = session.scalars(
                select(DriftReport).where(DriftReport.model_name == model_name).order_by(DriftReport.id)
            )
            return [_to_record(DriftReportRecord, r) for r in rows]

    # -- aliases -----------------------------------------------------------------------------------

    def set_alias(self, model_name: str, version: int, alias: str, *, reason: str = "") -> AliasMove:
        """Point any alias at a version, except the champion of a model that requires approval."""
        with self._write() as session:
            model, row = self._version(session, model_name, version)
            if alias == CHAMPION and model.require_approval:
                raise CheckFailedError(
                    f"{model_name!r} requires approval: make {model_name}:{version} {CHAMPION} with "
                    "`steward registry promote`, as an approver who did not train it"
                )
            move = self._move_alias(session, model, row, alias, "set", reason)
            self._event(session, "alias_set", _subject(model_name, version), _move_payload(move))
            return move

    def promote(
        self, model_name: str, version: int, *, alias: str = CHAMPION, approver: str | None = None, reason: str = ""
    ) -> AliasMove:
        """Point ``alias`` at the version, approved by this handle's identity.

        ``approver``, when given, is a claim checked against that identity: a different name is bad input,
        never recorded as the approver. A model that requires approval refuses an approval by the author
        of the version's training run (the refusal itself is audited).
        """
        identity = self.identity
        claimed = (approver or "").strip()
        if claimed and claimed != identity.name:
            raise BadInputError(
                f"--approver {claimed!r} is not who is acting: this registry knows you as {identity.name!r} "
                f"({identity.source}); an approval is recorded as the identity that makes it"
            )
        with self._write() as session:
            model, row = self._version(session, model_name, version)
            author = self._run(session, row.run_id).author
            who = {"approver": identity.name, "author": author}
            if not (model.require_approval and identity.name == author):
                move = self._move_alias(session, model, row, alias, "promote", reason)
                self._event(session, "model_promoted", _subject(model_name, version), {**_move_payload(move), **who})
                return move
            payload = {"alias": alias, "version": version, "reason": reason, **who}
            self._event(session, "promotion_refused", _subject(model_name, version), payload)
        raise CheckFailedError(
            f"promotion of {model_name}:{version} refused: {model_name!r} requires approval by someone other "
            f"than the run's author ({author})"
        )

    def rollback(self, model_name: str, *, reason: str = "") -> AliasMove:
        """Move the champion back to the version that held it before the current one was given it."""
        with self._write() as session:
            model = self._model(session, model_name)
            current = session.get(Alias, (model.id, CHAMPION))
            if current is None:
                raise CheckFailedError(f"model {model_name!r} has no {CHAMPION} to roll back")
            previous_id = session.scalar(
                select(AliasHistory.previous_version_id)
                .where(
                    AliasHistory.model_id == model.id,
                    AliasHistory.alias == CHAMPION,
                    AliasHistory.version_id == current.version_id,
                    AliasHistory.action != "rollback",
                )
                .order_by(AliasHistory.id.desc())
                .limit(1)
            )
            if previous_id is None:
                version = session.get_one(ModelVersion, current.version_id).version
                raise CheckFailedError(f"model {model_name!r} had no {CHAMPION} before version {version}")
            target = session.get_one(ModelVersion, previous_id)
            move = self._move_alias(session, model, target, CHAMPION, "rollback", reason)
            self._event(session, "champion_rolled_back", _subject(model_name, target.version), _move_payload(move))
            return move

    def init_roles(self) -> list[RoleGrant]:
        """PostgreSQL: the reader, trainer and approver roles and their grants (``governance.roles``)."""
        with self._write() as session:
            roles = init_roles(session.connection())
            self._event(session, "roles_initialised", "registry", {"roles": [role.name for role in roles]})
            return roles

    def alias_history(self, model_name: str) -> list[AliasMove]:
        """Every alias move of the model, oldest first: who pointed which alias where, and why."""
        previous = aliased(ModelVersion)
        with self._read() as session:
            model = self._model(session, model_name)
            rows = session.execute(
                select(
                    AliasHistory.alias,
                    ModelVersion.version,
                    previous.version,
                    AliasHistory.action,
                    AliasHistory.actor,
                    AliasHistory.reason,
                    AliasHistory.created_at,
                )
                .join(ModelVersion, ModelVersion.id == AliasHistory.version_id)
                .outerjoin(previous, previous.id == AliasHistory.previous_version_id)
                .where(AliasHistory.model_id == model.id)
                .order_by(AliasHistory.id)
            ).all()
        return [AliasMove(model_name, *row) for row in rows]

    def alias_version(self, model_name: str, alias: str) -> ModelVersionRecord | None:
        """The version `alias` points at; None when the model or the alias does not exist yet."""
        with self._read() as session:
            model = self._find_model(session, model_name)
            if model is None:
                return None
            row = _core(
                session,
                _version_query()
                .join(Alias, Alias.version_id == ModelVersion.id)
                .where(Alias.model_id == model.id, Alias.alias == alias),
            ).first()
        return None if row is None else ModelVersionRecord(*row)

    def _move_alias(
        self, session: Session, model: RegisteredModel, target: ModelVersion, alias: str, action: str, reason: str
    ) -> AliasMove:
        if not alias or len(alias) > 100:
            raise BadInputError(f"alias must be 1-100 characters, got {alias!r}")
        current = session.get(Alias, (model.id, alias))
        previous_id = None if current is None else current.version_id
        actor = self.identity.name
        if current is None:
            session.add(Alias(model_id=model.id, alias=alias, version_id=target.id))
        else:
            current.version_id = target.id
        history = AliasHistory(
            model_id=model.id,
            alias=alias,
            version_id=target.id,
            previous_version_id=previous_id,
            action=action,
            actor=actor,
            reason=reason,
            created_at=utcnow(),
        )
        session.add(history)
        previous = None if previous_id is None else session.get_one(ModelVersion, previous_id).version
        return AliasMove(
            model_name=model.name,
            alias=alias,
            version=target.version,
            previous_version=previous,
            action=action,
            actor=actor,
            reason=reason,
            created_at=history.created_at,
        )


def _move_payload(move: AliasMove) -> dict[str, Any]:
    return {
        "alias": move.alias,
        "version": move.version,
        "previous_version": move.previous_version,
        "action": move.action,
        "reason": move.reason,
    }


def _check_sha256(files: dict[str, str]) -> None:
    for path, digest in files.items():
        if not _SHA256.fullmatch(digest):
            raise BadInputError(f"file {path!r}: sha256 must be 64 lowercase hex characters, got {digest!r}")


def _check_evaluation(detail: EvaluationDetailIn) -> None:
    labels = list(detail.labels)
    if not labels or len(set(labels)) != len(labels):
        raise BadInputError(f"evaluation labels must be distinct and non-empty, got {labels}")
    if [score.label for score in detail.per_class] != labels:
        raise BadInputError("evaluation per-class scores must follow the labels' order")
    matrix = detail.confusion_matrix
    if len(matrix) != len(labels) or any(len(row) != len(labels) or min(row) < 0 for row in matrix):
        raise BadInputError(f"confusion matrix must be {len(labels)}x{len(labels)} non-negative counts")
    if detail.adapted_checkpoint_key is not None and not _SHA256.fullmatch(detail.adapted_checkpoint_key):
        raise BadInputError(f"adapted checkpoint key must be a sha256, got {detail.adapted_checkpoint_key!r}")
    scores = {f"{s.label}.{name}": getattr(s, name) for s in detail.per_class for name in ("precision", "recall", "f1")}
    bins = {f"bin{i}.{name}": getattr(b, name) for i, b in enumerate(detail.reliability)
            for name in ("lower", "upper", "mean_confidence", "accuracy")}
    _finite_metrics({**scores, **bins})


def _evaluation_columns(detail: EvaluationDetailIn) -> dict[str, Any]:
    """The record as the row's columns (plain JSON data)."""
    return {
        **asdict(detail),
        "labels": list(detail.labels),
        "per_class": [asdict(score) for score in detail.per_class],
        "confusion_matrix": [list(row) for row in detail.confusion_matrix],
        "reliability": [asdict(b) for b in detail.reliability],
    }


def _evaluation_record(row: EvaluationDetail) -> EvaluationDetailRecord:
    return _to_record(
        EvaluationDetailRecord,
        row,
        labels=tuple(row.labels),
        per_class=tuple(ClassScore(**score) for score in row.per_class),
        confusion_matrix=tuple(tuple(counts) for counts in row.confusion_matrix),
        reliability=tuple(ReliabilityBin(**b) for b in row.reliability),
    )


def _form_record(row: CompressedForm) -> CompressedFormRecord:
    return _to_record(CompressedFormRecord, row, reasons=tuple(row.reasons))


def _artifact_files(version_id: int, artifact_path: str, files: dict[str, str]) -> list[ArtifactFile]:
    """File rows; sizes are read from disk when the artifact is reachable from here."""
    root = Path(artifact_path)
    rows = []
    for relative, digest in sorted(files.items()):
        path = root / relative
        size = path.stat().st_size if path.is_file() else None
        rows.append(ArtifactFile(version_id=version_id, relative_path=relative, sha256=digest, size_bytes=size))
    return rows


def _finite_metrics(metrics: dict[str, float]) -> dict[str, float]:
    values = {key: float(value) for key, value in metrics.items()}
    bad = sorted(key for key, value in values.items() if not math.isfinite(value))
    if bad:
        raise BadInputError(f"metrics must be finite numbers: {', '.join(bad)}")
    return values
