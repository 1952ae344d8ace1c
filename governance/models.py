"""ORM schema of the registry. Migrations in ``governance/migrations`` must create exactly this."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def json_dumps(value: Any) -> str:
    """JSON for JSON columns: odd objects become strings, NaN/inf become null (PostgreSQL rejects them)."""
    try:
        return json.dumps(value, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always hands back aware UTC datetimes, SQLite included."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads it as a class attribute
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        dict[str, str]: JSON(),
    }


_NAME = String(200)


class RegisteredModel(Base):
    __tablename__ = "registered_models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(_NAME, unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    require_approval: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_status_started_at", "status", "started_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    model_name: Mapped[str] = mapped_column(_NAME, index=True)
    status: Mapped[str] = mapped_column(String(16))
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    config: Mapped[dict[str, Any]]
    code_version: Mapped[str] = mapped_column(String(200))
    package_versions: Mapped[dict[str, str]]
    seed: Mapped[int]
    author: Mapped[str] = mapped_column(_NAME)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(String(255))  # where the run's process runs, and its id:
    pid: Mapped[int | None]  # a 'running' run whose process is gone is stale (Registry.fail_dead_runs)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id"))
    version: Mapped[int]
    artifact_path: Mapped[str] = mapped_column(Text)
    base_model: Mapped[str] = mapped_column(String(500))
    parent_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    status: Mapped[str] = mapped_column(String(32), default="registered")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(_NAME)


class ArtifactFile(Base):
    __tablename__ = "artifact_files"
    __table_args__ = (UniqueConstraint("version_id", "relative_path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    relative_path: Mapped[str] = mapped_column(String(1000))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("fingerprint", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    role: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int]
    schema: Mapped[dict[str, str]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class VersionDataset(Base):
    __tablename__ = "version_datasets"

    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(32), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)


class Metric(Base):
    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), index=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    key: Mapped[str] = mapped_column(_NAME)
    value: Mapped[float] = mapped_column(Float)
    step: Mapped[int | None]


class Alias(Base):
    __tablename__ = "aliases"

    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(100), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))


class AliasHistory(Base):
    __tablename__ = "alias_history"
    __table_args__ = (Index("ix_alias_history_model_alias", "model_id", "alias"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id"))
    alias: Mapped[str] = mapped_column(String(100))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    previous_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    action: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(_NAME)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """One link of the hash chain. ``created_at`` and ``payload`` are text so hashing is byte-exact."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    created_at: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(_NAME)
    event_type: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(500), index=True)
    payload: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


# Added by migration 0002.


class ValidationResult(Base):
    __tablename__ = "validation_results"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    expectation: Mapped[str] = mapped_column(_NAME)
    column_name: Mapped[str | None] = mapped_column(_NAME)
    success: Mapped[bool]
    observed: Mapped[Any] = mapped_column(JSON, nullable=True)
    details: Mapped[dict[str, Any]]


class GateDecision(Base):
    __tablename__ = "gate_decisions"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    candidate_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    champion_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    primary_metric: Mapped[str] = mapped_column(_NAME)
    candidate_score: Mapped[float] = mapped_column(Float)
    champion_score: Mapped[float | None] = mapped_column(Float)
    min_score: Mapped[float] = mapped_column(Float)
    min_improvement: Mapped[float] = mapped_column(Float)
    passed: Mapped[bool]
    outcome: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DriftReport(Base):
    __tablename__ = "drift_reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    model_name: Mapped[str] = mapped_column(_NAME, index=True)
    drift_detected: Mapped[bool]
    drift_share: Mapped[float] = mapped_column(Float)
    report_path: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]]
    finding: Mapped[str] = mapped_column(String(32), server_default="none")  # added by migration 0005
    retrain: Mapped[str] = mapped_column(String(32), server_default="not_needed")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# Added by migration 0003.


class EvaluationDetail(Base):
    """A version's test-set evaluation beyond the scalar metrics, and the adapted checkpoint behind it."""

    __tablename__ = "evaluation_details"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    labels: Mapped[list[str]] = mapped_column(JSON)
    per_class: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    confusion_matrix: Mapped[list[list[int]]] = mapped_column(JSON)
    reliability: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    adapted_checkpoint_key: Mapped[str | None] = mapped_column(String(64))
    adapted_checkpoint_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# Added by migration 0006.


class ServedPrediction(Base):
    """One text a model server answered: what it predicted, with which version, when. Append-only; old rows go
    by `serving.log_retention`. `text` is null when the server runs with `serving.log_text: false`."""

    __tablename__ = "served_predictions"
    __table_args__ = (Index("ix_served_predictions_model_name_served_at", "model_name", "served_at"),)

    # 64-bit: a busy log passes 2^31 rows in weeks (SQLite's INTEGER primary key is 64-bit already)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    model_name: Mapped[str] = mapped_column(_NAME)
    version: Mapped[int]
    served_at: Mapped[datetime]
    request_id: Mapped[str] = mapped_column(String(32))
    text: Mapped[str | None] = mapped_column(Text)
    label: Mapped[str] = mapped_column(_NAME)
    score: Mapped[float] = mapped_column(Float)
    probabilities: Mapped[dict[str, Any]]


# Added by migration 0007.


class CompressedForm(Base):
    """One compressed form of a version (`int8`, `student`) and the compression gate's verdict on it."""

    __tablename__ = "compressed_forms"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    form: Mapped[str] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # steward.scores.COMPRESSION_STATUSES
    reasons: Mapped[list[str]] = mapped_column(JSON)
    artifact_path: Mapped[str | None] = mapped_column(Text)  # null when export or quantization failed
    files: Mapped[dict[str, str]]  # relative path -> sha256
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]]  # the form's test metrics, agreement and metric_drop
    per_class_f1_delta: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
