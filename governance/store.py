"""What every part of the registry shares: the engine, the transactions that hold the write lock and carry
their audit event, the identity acting, and lookups.

Every mutating call runs in one transaction that holds the registry write lock and appends its audit event on
the same connection, so a change and its audit event commit or fail together.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, Result, Select, select
from sqlalchemy.orm import Session

from core.errors import BadInputError
from governance.audit import AuditLog
from governance.db import lock_for_write, reachable, read_only
from governance.events import EventPayload
from governance.identity import Identity
from governance.models import Dataset, Metric, ModelVersion, RegisteredModel, Run
from governance.records import ModelVersionRecord, RunRecord

_SHA256 = re.compile(r"[0-9a-f]{64}")


def core(session: Session, stmt: Select) -> Result:
    """Run a column query on the session's connection, skipping ORM result processing."""
    return session.connection().execute(stmt)


def subject_of(model_name: str, version: int) -> str:
    return f"{model_name}:{version}"


def check_sha256(files: dict[str, str]) -> None:
    for path, digest in files.items():
        if not _SHA256.fullmatch(digest):
            raise BadInputError(f"file {path!r}: sha256 must be 64 lowercase hex characters, got {digest!r}")

def finite_metrics(metrics: dict[str, float]) -> dict[str, float]:
    values = {key: float(value) for key, value in metrics.items()}
    bad = sorted(key for key, value in values.items() if not math.isfinite(value))
    if bad:
        raise BadInputError(f"metrics must be finite numbers: {', '.join(bad)}")
    return values


class RegistryStore:
    """The base of every part of ``governance.registry.Registry``: one registry database, its audit log."""

    def __init__(self, engine: Engine, masked_url: str) -> None:
        self._engine = engine
        self._read_engine = read_only(engine)
        self._audit = AuditLog(engine)
        self.url = masked_url
        self.runs_found_dead: list[RunRecord] = []  # failed by `open`: their process was gone

    @property
    def audit(self) -> AuditLog:
        return self._audit

    @property
    def identity(self) -> Identity:
        """Who acts through this handle: the database login on PostgreSQL, the declared name on SQLite."""
        return self._audit.identity

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

    def _event(self, session: Session, subject: str, payload: EventPayload) -> None:
        """Append the change's audit event in the change's own transaction."""
        session.flush()
        self._audit.append_in(session.connection(), subject, payload)

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
        row = core(session, ModelVersion.records().where(ModelVersion.id == version_id)).first()
        if row is None:
            raise BadInputError(f"no model version with id {version_id}")
        return ModelVersion.to_record(row)

    @staticmethod
    def _dataset(session: Session, dataset_id: int) -> Dataset:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            raise BadInputError(f"no dataset with id {dataset_id}")
        return dataset

    @staticmethod
    def _metrics(session: Session, version_id: int) -> dict[str, float]:
        rows = session.execute(
            select(Metric.key, Metric.value).where(Metric.version_id == version_id).order_by(Metric.id)
        )
        return dict(rows.tuples().all())
