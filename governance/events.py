"""The audit trail's vocabulary: every event type, and the typed body each one carries.

One home for the names (as MLflow's ``model_version_status.py`` is for version statuses): code appends an
``EventPayload``, never a string and a dict, so an event's type and its fields cannot drift apart. Payloads are
flat dataclasses of JSON values; ``body()`` is what is hashed and stored (with the actor's source added by
``governance.audit``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any, ClassVar, Self


class EventType(StrEnum):
    # datasets and runs
    DATASET_RECORDED = "dataset_recorded"
    RUN_STARTED = "run_started"
    RUN_COMPLETED = "run_completed"
    RUN_FAILED = "run_failed"
    STAGE_STARTED = "stage_started"
    STAGE_COMPLETED = "stage_completed"
    STAGE_FAILED = "stage_failed"
    STAGE_RESUMED = "stage_resumed"
    VALIDATION_RECORDED = "validation_recorded"
    VALIDATION_FAILED = "validation_failed"
    PERSONAL_DATA_FOUND = "personal_data_found"
    LABEL_ISSUES_FOUND = "label_issues_found"
    DOMAIN_ADAPTED = "domain_adapted"
    INPUT_REJECTED = "input_rejected"
    # versions, their numbers and their forms
    MODEL_CREATED = "model_created"
    VERSION_REGISTERED = "version_registered"
    METRICS_LOGGED = "metrics_logged"
    METRIC_CURVE_LOGGED = "metric_curve_logged"
    EVALUATION_RECORDED = "evaluation_recorded"
    LANGUAGE_MODEL_EVALUATION_RECORDED = "language_model_evaluation_recorded"
    COMPRESSION_PASSED = "compression_passed"
    COMPRESSION_REFUSED = "compression_refused"
    COMPRESSION_FAILED = "compression_failed"
    # the gate, aliases and who may move them
    GATE_DECISION = "gate_decision"
    ALIAS_SET = "alias_set"
    MODEL_PROMOTED = "model_promoted"
    PROMOTION_REFUSED = "promotion_refused"
    CHAMPION_ROLLED_BACK = "champion_rolled_back"
    ROLES_INITIALISED = "roles_initialised"
    # using the champion
    BATCH_SCORED = "batch_scored"
    MODEL_SWAPPED = "model_swapped"
    MODEL_SWAP_REFUSED = "model_swap_refused"
    MODEL_EXPORTED = "model_exported"
    # monitoring, by finding
    DRIFT_DETECTED = "drift_detected"
    PRIOR_SHIFT = "prior_shift"
    DRIFT_REPORT = "drift_report"
    # the trail itself
    AUDIT_ANCHORED = "audit_anchored"


@dataclass(frozen=True)
class EventPayload:
    """The body of one audit event. A subclass names its type in ``TYPE`` (or derives it in ``event_type``)."""

    TYPE: ClassVar[EventType]

    @property
    def event_type(self) -> EventType:
        return self.TYPE

    def body(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, record: object, **values: Any) -> Self:
        """The event of a stored record: its attributes of the same names, `values` given or overriding."""
        names = [f.name for f in fields(cls) if f.name not in values]
        return cls(**{name: getattr(record, name) for name in names}, **values)


# -- datasets and runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetRecorded(EventPayload):
    TYPE: ClassVar[EventType] = EventType.DATASET_RECORDED
    dataset_id: int
    role: str
    source: str
    rows: int


@dataclass(frozen=True)
class RunStarted(EventPayload):
    TYPE: ClassVar[EventType] = EventType.RUN_STARTED
    run_id: str
    kind: str
    seed: int
    code_version: str
    flow_run_id: str | None
    host: str
    pid: int
    config_sha256: str


@dataclass(frozen=True)
class RunFinished(EventPayload):
    """`run_completed` or `run_failed`; ``stale`` (with the host and pid) when its process was found gone."""

    run_id: str
    kind: str
    status: str
    error: str | None
    stale: bool = False
    host: str | None = None
    pid: int | None = None

    @property
    def event_type(self) -> EventType:
        return EventType(f"run_{self.status}")


@dataclass(frozen=True)
class StageStarted(EventPayload):
    TYPE: ClassVar[EventType] = EventType.STAGE_STARTED
    run_id: str
    stage: str


@dataclass(frozen=True)
class StageCompleted(EventPayload):
    TYPE: ClassVar[EventType] = EventType.STAGE_COMPLETED
    run_id: str
    stage: str
    seconds: float


@dataclass(frozen=True)
class StageFailed(EventPayload):
    TYPE: ClassVar[EventType] = EventType.STAGE_FAILED
    run_id: str
    stage: str
    error: str


@dataclass(frozen=True)
class StageResumed(EventPayload):
    """A stage continued an interrupted run's checkpoint, at a step (pretraining) or an epoch (fine-tuning)."""

    TYPE: ClassVar[EventType] = EventType.STAGE_RESUMED
    run_id: str
    stage: str
    resumed_from_step: int | None = None
    resumed_from_epoch: int | None = None


@dataclass(frozen=True)
class ValidationRecorded(EventPayload):
    TYPE: ClassVar[EventType] = EventType.VALIDATION_RECORDED
    run_id: str
    dataset_id: int | None
    checked: int
    failed: list[str]


@dataclass(frozen=True)
class ValidationFailed(EventPayload):
    TYPE: ClassVar[EventType] = EventType.VALIDATION_FAILED
    run_id: str
    failed_expectations: list[str]


@dataclass(frozen=True)
class PersonalDataFound(EventPayload):
    """Counts of personal data per file and type, and what validation.pii did about it; never the values."""

    TYPE: ClassVar[EventType] = EventType.PERSONAL_DATA_FOUND
    run_id: str
    policy: str
    findings: dict[str, dict[str, int]]


@dataclass(frozen=True)
class LabelIssuesFound(EventPayload):
    """Rows whose label looks wrong: counts per file and per given label, the worst rows (file, line, given,
    suggested, confidence; never texts), what validation.label_issues did, and the rows it dropped."""

    TYPE: ClassVar[EventType] = EventType.LABEL_ISSUES_FOUND
    run_id: str
    policy: str
    counts: dict[str, int]  # file -> issues
    checked: dict[str, int]  # role -> labelled rows checked
    per_class: dict[str, dict[str, int]]  # role -> {given label -> issues}
    worst: list[dict[str, Any]]
    dropped: int


@dataclass(frozen=True)
class DomainAdapted(EventPayload):
    TYPE: ClassVar[EventType] = EventType.DOMAIN_ADAPTED
    run_id: str
    objective: str
    steps: int
    cache_key: str
    cache_hit: bool
    corpus_rows: int


@dataclass(frozen=True)
class InputRejected(EventPayload):
    TYPE: ClassVar[EventType] = EventType.INPUT_REJECTED
    command: str
    config: str | None
    error: str
    exit_code: int


# -- versions ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCreated(EventPayload):
    TYPE: ClassVar[EventType] = EventType.MODEL_CREATED
    require_approval: bool


@dataclass(frozen=True)
class VersionRegistered(EventPayload):
    TYPE: ClassVar[EventType] = EventType.VERSION_REGISTERED
    version_id: int
    run_id: str
    artifact_path: str
    base_model: str
    parent_version: int | None
    files: dict[str, str]  # relative path → sha256
    datasets: dict[str, str]  # role → fingerprint
    require_approval: bool


@dataclass(frozen=True)
class MetricsLogged(EventPayload):
    TYPE: ClassVar[EventType] = EventType.METRICS_LOGGED
    run_id: str
    dataset_id: int | None
    step: int | None
    metrics: dict[str, float]


@dataclass(frozen=True)
class MetricCurveLogged(EventPayload):
    """A per-step series: its sha256 instead of every point, so the chain still covers it."""

    TYPE: ClassVar[EventType] = EventType.METRIC_CURVE_LOGGED
    run_id: str
    key: str
    points: int
    last: float | None
    sha256: str


@dataclass(frozen=True)
class EvaluationRecorded(EventPayload):
    """A version's evaluation detail: the sha256 of the whole record, so the chain covers every number."""

    TYPE: ClassVar[EventType] = EventType.EVALUATION_RECORDED
    run_id: str
    version_id: int
    dataset_id: int | None
    labels: list[str]
    examples: int
    adapted_checkpoint_key: str | None
    sha256: str


@dataclass(frozen=True)
class LanguageModelEvaluationRecorded(EventPayload):
    """A causal-lm version's per-document losses and prompt answers: the sha256 of the whole record, so the chain
    covers every loss and every answer."""

    TYPE: ClassVar[EventType] = EventType.LANGUAGE_MODEL_EVALUATION_RECORDED
    run_id: str
    version_id: int
    dataset_id: int | None
    test_documents: int
    reference_texts: int
    reference_source: str
    champion_scored: bool
    prompts: int
    sha256: str


@dataclass(frozen=True)
class CompressionJudged(EventPayload):
    """`compression_passed`, `_refused` or `_failed`, by the form's status, with the sha256 of its files."""

    run_id: str
    form: str
    method: str
    status: str
    reasons: list[str]
    size_bytes: int | None
    sha256: dict[str, str]
    agreement: float | None
    metric_drop: float | None

    @property
    def event_type(self) -> EventType:
        return EventType(f"compression_{self.status}")


# -- the gate and aliases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateDecided(EventPayload):
    TYPE: ClassVar[EventType] = EventType.GATE_DECISION
    run_id: str
    champion_version: int | None
    primary_metric: str
    candidate_score: float
    champion_score: float | None
    min_score: float
    min_improvement: float
    passed: bool
    outcome: str
    reasons: str


@dataclass(frozen=True)
class AliasMoved(EventPayload):
    """`alias_set` (by the gate or by hand) or `champion_rolled_back`, by the move's action."""

    alias: str
    version: int
    previous_version: int | None
    action: str
    reason: str

    @property
    def event_type(self) -> EventType:
        return EventType.CHAMPION_ROLLED_BACK if self.action == "rollback" else EventType.ALIAS_SET


@dataclass(frozen=True)
class ModelPromoted(EventPayload):
    TYPE: ClassVar[EventType] = EventType.MODEL_PROMOTED
    alias: str
    version: int
    previous_version: int | None
    action: str
    reason: str
    approver: str
    author: str


@dataclass(frozen=True)
class PromotionRefused(EventPayload):
    TYPE: ClassVar[EventType] = EventType.PROMOTION_REFUSED
    alias: str
    version: int
    reason: str
    approver: str
    author: str


@dataclass(frozen=True)
class RolesInitialised(EventPayload):
    TYPE: ClassVar[EventType] = EventType.ROLES_INITIALISED
    roles: list[str]


# -- using the champion --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchScored(EventPayload):
    TYPE: ClassVar[EventType] = EventType.BATCH_SCORED
    model: str
    version: int
    form: str
    alias: str | None
    input: str
    input_fingerprint: str
    rows: int
    output: str
    label_counts: dict[str, int]


@dataclass(frozen=True)
class ModelSwapped(EventPayload):
    TYPE: ClassVar[EventType] = EventType.MODEL_SWAPPED
    alias: str
    from_version: int
    to_version: int
    form: str


@dataclass(frozen=True)
class ModelSwapRefused(EventPayload):
    TYPE: ClassVar[EventType] = EventType.MODEL_SWAP_REFUSED
    alias: str
    serving_version: int
    reason: str


@dataclass(frozen=True)
class ModelExported(EventPayload):
    """A version's fp32 files written out in another format (`steward export`): every exported model file with its
    sha256, each checked against the registry's after the copy."""

    TYPE: ClassVar[EventType] = EventType.MODEL_EXPORTED
    model: str
    version: int
    alias: str | None  # the alias the version was resolved through, if any
    format: str
    path: str
    files: dict[str, str]  # path relative to `path` -> sha256


# -- the trail itself ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditAnchored(EventPayload):
    """The audit event of an anchor: the head it vouches for is the one before this event."""

    TYPE: ClassVar[EventType] = EventType.AUDIT_ANCHORED
    head_seq: int
    head_hash: str
    digest: str  # file name in the anchor directory
    key_fingerprint: str


# -- monitoring ------------------------------------------------------------------------------------------


DRIFT_EVENT_TYPES = {"drift": EventType.DRIFT_DETECTED, "prior_shift": EventType.PRIOR_SHIFT,
                     "none": EventType.DRIFT_REPORT}


@dataclass(frozen=True)
class DriftChecked(EventPayload):
    """`drift_detected`, `prior_shift` or `drift_report` (nothing found), by the check's finding."""

    drift_detected: bool
    drift_share: float
    finding: str
    retrain: str
    report_path: str | None
    run_id: str | None
    version_id: int | None

    @property
    def event_type(self) -> EventType:
        return DRIFT_EVENT_TYPES[self.finding]
