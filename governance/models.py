"""ORM schema of the registry. Migrations in ``governance/migrations`` must create exactly this.

Each table converts itself beside its definition (as MLflow's ``dbmodels`` do with ``to_mlflow_entity``): a
``to_record()`` that reads its columns by name into the frozen record the registry hands out, and a ``from_*``
that builds a row from the value a task computed. Nothing outside this module copies columns field by field.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Row,
    Select,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    select,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, aliased, mapped_column

from core.results import ClassScore, DriftResult, GateOutcome, ReliabilityBin
from governance.records import (
    ArtifactFileRecord,
    CompressedFormIn,
    CompressedFormRecord,
    DatasetRecord,
    DocumentScores,
    DriftReportRecord,
    EvaluationDetailIn,
    EvaluationDetailRecord,
    GateDecisionRecord,
    LanguageModelEvaluationIn,
    LanguageModelEvaluationRecord,
    ModelVersionRecord,
    PromptAnswer,
    RunRecord,
    ValidationResultIn,
    ValidationResultRecord,
)

_R = TypeVar("_R")

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

    def _as(self, record_type: type[_R], **values: Any) -> _R:
        """The record whose fields are this row's columns of the same names, `values` given or overriding."""
        names = [f.name for f in fields(record_type) if f.name not in values]  # type: ignore[arg-type]
        return record_type(**{name: getattr(self, name) for name in names}, **values)


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

    def to_record(self) -> RunRecord:
        return self._as(RunRecord)


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

    @classmethod
    def records(cls) -> Select:
        """Versions as rows whose columns are named as `ModelVersionRecord`'s fields (`to_record(row)`): a column
        query, so that listing thousands of versions builds no ORM objects."""
        parent = aliased(cls)
        return (
            select(cls.id, RegisteredModel.name.label("model_name"), cls.version, cls.artifact_path, cls.base_model,
                   parent.version.label("parent_version"), cls.run_id, cls.status, cls.created_at, cls.created_by)
            .join(RegisteredModel, RegisteredModel.id == cls.model_id)
            .outerjoin(parent, parent.id == cls.parent_version_id)
        )

    @staticmethod
    def to_record(row: Row) -> ModelVersionRecord:
        return ModelVersionRecord(**row._mapping)


class ArtifactFile(Base):
    __tablename__ = "artifact_files"
    __table_args__ = (UniqueConstraint("version_id", "relative_path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    relative_path: Mapped[str] = mapped_column(String(1000))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)

    def to_record(self) -> ArtifactFileRecord:
        return self._as(ArtifactFileRecord)


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

    def to_record(self) -> DatasetRecord:
        return self._as(DatasetRecord)


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

    @classmethod
    def from_result(cls, result: ValidationResultIn, run_id: str, dataset_id: int | None) -> ValidationResult:
        return cls(run_id=run_id, dataset_id=dataset_id, column_name=result.column,
                   **{k: v for k, v in asdict(result).items() if k != "column"})

    def to_record(self) -> ValidationResultRecord:
        return self._as(ValidationResultRecord, column=self.column_name)


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
    reasons: Mapped[str] = mapped_column(Text, default="")  # the gate's reasons, joined by REASON_SEPARATOR
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    floor_source: Mapped[str] = mapped_column(String(32), server_default="min_score")  # added by migration 0009

    REASON_SEPARATOR = "; "  # no reason the gate writes contains it

    @classmethod
    def from_outcome(cls, outcome: GateOutcome, *, run_id: str, candidate_version_id: int,
                     champion_version_id: int | None) -> GateDecision:
        columns = {f.name: getattr(outcome, f.name) for f in fields(GateOutcome)}
        return cls(**{**columns, "reasons": cls.REASON_SEPARATOR.join(outcome.reasons)}, run_id=run_id,
                   candidate_version_id=candidate_version_id, champion_version_id=champion_version_id,
                   created_at=utcnow())

    @classmethod
    def records(cls) -> Select:
        """Decisions with the names of what they judged: rows of (decision, model_name, candidate_version,
        champion_version) for `to_record`."""
        candidate, champion = aliased(ModelVersion), aliased(ModelVersion)
        return (
            select(cls, RegisteredModel.name.label("model_name"), candidate.version.label("candidate_version"),
                   champion.version.label("champion_version"))
            .join(candidate, candidate.id == cls.candidate_version_id)
            .join(RegisteredModel, RegisteredModel.id == candidate.model_id)
            .outerjoin(champion, champion.id == cls.champion_version_id)
        )

    @staticmethod
    def to_record(row: Row) -> GateDecisionRecord:
        decision: GateDecision = row.GateDecision
        reasons = [reason for reason in decision.reasons.split(decision.REASON_SEPARATOR) if reason]
        return decision._as(GateDecisionRecord, reasons=reasons, model_name=row.model_name,
                            candidate_version=row.candidate_version, champion_version=row.champion_version)


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

    @classmethod
    def from_result(cls, result: DriftResult, *, model_name: str, retrain: str, current: str, reference: str,
                    run_id: str | None, version_id: int | None) -> DriftReport:
        """The row of a drift check: its verdict as columns, every signal and count in `details`."""
        details = {
            "current": current,
            "reference": reference,
            "threshold": result.threshold,
            "signals": [asdict(signal) for signal in result.signals],
            **{name: getattr(result, name) for name in ("reference_rows", "reference_scored", "current_rows",
                                                         "current_scored", "covariate_reference_rows")},
        }
        return cls(model_name=model_name, drift_detected=result.drift_detected, drift_share=result.drift_share,
                   report_path=str(result.report_path), details=details, finding=result.finding, retrain=retrain,
                   run_id=run_id, version_id=version_id, created_at=utcnow())

    def to_record(self) -> DriftReportRecord:
        return self._as(DriftReportRecord)


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
    risks: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # added by migration 0012

    @staticmethod
    def columns_of(detail: EvaluationDetailIn) -> dict[str, Any]:
        """The evaluation as this table's columns (plain JSON data; also what its audit event's sha256 covers)."""
        return {
            **asdict(detail),
            "labels": list(detail.labels),
            "per_class": [asdict(score) for score in detail.per_class],
            "confusion_matrix": [list(row) for row in detail.confusion_matrix],
            "reliability": [asdict(b) for b in detail.reliability],
        }

    @classmethod
    def from_detail(cls, detail: EvaluationDetailIn) -> EvaluationDetail:
        return cls(**cls.columns_of(detail), created_at=utcnow())

    def to_record(self) -> EvaluationDetailRecord:
        return self._as(
            EvaluationDetailRecord,
            labels=tuple(self.labels),
            per_class=tuple(ClassScore(**score) for score in self.per_class),
            confusion_matrix=tuple(tuple(counts) for counts in self.confusion_matrix),
            reliability=tuple(ReliabilityBin(**b) for b in self.reliability),
        )


# Added by migration 0006.


class ServedPrediction(Base):
    """One text a model server answered: what it predicted, with which version, when. Append-only; old rows go
    by `serving.log_retention`. `text` is null when the server runs with `serving.log_text: false`. A language
    model's row: `text` is the prompt, `completion` what it wrote, `label` the finish reason, `score` the
    completion's tokens."""

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
    completion: Mapped[str | None] = mapped_column(Text)  # added by migration 0011


# Added by migration 0007.


class CompressedForm(Base):
    """One compressed form of a version (`int8`, `student`) and the compression gate's verdict on it."""

    __tablename__ = "compressed_forms"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    form: Mapped[str] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # core.vocabulary.COMPRESSION_STATUSES
    reasons: Mapped[list[str]] = mapped_column(JSON)
    artifact_path: Mapped[str | None] = mapped_column(Text)  # null when export or quantization failed
    files: Mapped[dict[str, str]]  # relative path -> sha256
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]]  # the form's test metrics, agreement and metric_drop
    per_class_f1_delta: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @classmethod
    def from_form(cls, form: CompressedFormIn) -> CompressedForm:
        return cls(**{**asdict(form), "reasons": list(form.reasons)}, created_at=utcnow())

    def to_record(self) -> CompressedFormRecord:
        return self._as(CompressedFormRecord, reasons=tuple(self.reasons))


# Added by migration 0010.


class LanguageModelEvaluation(Base):
    """A causal-lm version's evaluation beyond the scalar metrics: per-document losses of the base, the champion
    and the candidate on the test documents and of the base and the candidate on the reference texts (each with its
    perplexity and interval), and the fixed prompts answered by the base and the candidate."""

    __tablename__ = "language_model_evaluations"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    base_test: Mapped[dict[str, Any]]  # each: {"losses": [[nll, tokens], ...], "perplexity", "ci_low", ...}
    champion_test: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    candidate_test: Mapped[dict[str, Any]]
    base_reference: Mapped[dict[str, Any]]
    candidate_reference: Mapped[dict[str, Any]]
    reference_source: Mapped[str] = mapped_column(Text)
    corpus_tokens: Mapped[int | None] = mapped_column(BigInteger)
    samples: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # [{prompt, base, candidate}]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    SCORES = ("base_test", "champion_test", "candidate_test", "base_reference", "candidate_reference")

    @classmethod
    def columns_of(cls, evaluation: LanguageModelEvaluationIn) -> dict[str, Any]:
        """The evaluation as this table's columns (plain JSON data; also what its audit event's sha256 covers)."""
        # The input fields only: a stored record (re-recorded, say) brings an id and created_at of its own.
        columns = {f.name: getattr(evaluation, f.name) for f in fields(LanguageModelEvaluationIn)}
        for name in cls.SCORES:
            scores: DocumentScores | None = columns[name]
            if scores is not None:
                columns[name] = {**asdict(scores), "losses": [[nll, tokens] for nll, tokens in scores.losses]}
        return {**columns, "samples": [asdict(sample) for sample in evaluation.samples]}

    @classmethod
    def from_evaluation(cls, evaluation: LanguageModelEvaluationIn) -> LanguageModelEvaluation:
        return cls(**cls.columns_of(evaluation), created_at=utcnow())

    def to_record(self) -> LanguageModelEvaluationRecord:
        scores = {name: _document_scores(getattr(self, name)) for name in self.SCORES}
        return self._as(LanguageModelEvaluationRecord, **scores,
                        samples=tuple(PromptAnswer(**sample) for sample in self.samples))


def _document_scores(column: dict[str, Any] | None) -> DocumentScores | None:
    if column is None:
        return None
    losses = tuple((float(nll), int(tokens)) for nll, tokens in column["losses"])
    return DocumentScores(**{**column, "losses": losses})
