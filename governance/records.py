"""Frozen values the registry accepts and returns; none of them holds a database session."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from core.hashing import ModelFiles
from core.results import ClassScore, GateOutcome, ReliabilityBin
from core.vocabulary import CompressionStatusName, DriftFindingName, RetrainDecisionName


@dataclass(frozen=True)
class DatasetRecord:
    id: int
    role: str
    source: str
    fingerprint: str
    rows: int
    schema: dict[str, str]
    created_at: datetime


@dataclass(frozen=True)
class RunRecord:
    id: str
    kind: str
    model_name: str
    status: str
    flow_run_id: str | None
    config: dict[str, Any]
    code_version: str
    package_versions: dict[str, str]
    seed: int
    author: str
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    host: str | None = None
    pid: int | None = None


@dataclass(frozen=True)
class ModelVersionRecord:
    id: int
    model_name: str
    version: int
    artifact_path: str
    base_model: str
    parent_version: int | None
    run_id: str
    status: str
    created_at: datetime
    created_by: str


@dataclass(frozen=True)
class ArtifactFileRecord:
    relative_path: str
    sha256: str
    size_bytes: int | None


@dataclass(frozen=True)
class ModelSummary:
    name: str
    latest_version: int | None
    version_count: int
    aliases: dict[str, int]
    created_at: datetime
    require_approval: bool
    description: str


@dataclass(frozen=True)
class AliasMove:
    model_name: str
    alias: str
    version: int
    previous_version: int | None
    action: str  # promote | rollback | set
    actor: str
    reason: str
    created_at: datetime


@dataclass(frozen=True)
class ValidationResultIn:
    expectation: str
    column: str | None
    success: bool
    observed: object
    details: dict[str, Any]


@dataclass(frozen=True)
class ValidationResultRecord:
    id: int
    run_id: str
    dataset_id: int | None
    expectation: str
    column: str | None
    success: bool
    observed: object
    details: dict[str, Any]


@dataclass(frozen=True)
class GateDecisionRecord(GateOutcome):
    """A stored gate decision: the gate's own value, and which run made it about which versions."""

    id: int
    model_name: str
    run_id: str
    candidate_version_id: int
    candidate_version: int
    champion_version_id: int | None
    champion_version: int | None
    created_at: datetime


@dataclass(frozen=True)
class DriftReportRecord:
    """A stored drift check: what it found (`details` holds every signal) and what it decided about retraining."""

    id: int
    model_name: str
    drift_detected: bool
    drift_share: float
    report_path: str
    details: dict[str, Any]
    finding: DriftFindingName
    retrain: RetrainDecisionName
    run_id: str | None
    version_id: int | None
    created_at: datetime


@dataclass(frozen=True)
class CompressedFormIn:
    """A compressed form of a version as the compression stage judged it."""

    run_id: str
    version_id: int
    form: str  # core.vocabulary.FORMS
    method: str  # compression.methods entry that made it
    status: CompressionStatusName
    reasons: tuple[str, ...]
    artifact_path: str | None  # None when export or quantization failed
    files: dict[str, str]  # relative path -> sha256
    size_bytes: int | None
    metrics: dict[str, float]  # the form's test metrics, agreement and metric_drop
    per_class_f1_delta: dict[str, float]


@dataclass(frozen=True)
class CompressedFormRecord(CompressedFormIn):
    id: int = 0
    created_at: datetime | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class ModelVersionDetail:
    """A version with its lineage and evidence, for ``registry show`` and audit reports."""

    version: ModelVersionRecord
    files: list[ArtifactFileRecord]
    datasets: dict[str, DatasetRecord]  # role -> dataset
    metrics: dict[str, float]
    aliases: list[str]
    run: RunRecord
    gate_decision: GateDecisionRecord | None
    forms: list[CompressedFormRecord] = field(default_factory=list)  # the latest record of each form

    @property
    def recorded_hashes(self) -> dict[str, str]:
        """The sha256 of every artifact file as the registry recorded it at registration."""
        return {file.relative_path: file.sha256 for file in self.files}

    def model_files(self) -> ModelFiles:
        """The fp32 model's folder and its recorded hashes (what a loader verifies before it loads)."""
        return ModelFiles(Path(self.version.artifact_path), self.recorded_hashes)

    def form(self, name: str) -> CompressedFormRecord | None:
        return next((form for form in self.forms if form.form == name), None)

    def fastest_passed_form(self) -> CompressedFormRecord | None:
        """The form served by default: of the forms that passed the compression gate, the fastest (throughput on
        the test set); None (the fp32 model) when none passed. Not compared with fp32's own throughput: a form
        passes only as a compression, and a one-off timing on a small test set must not flip what is served."""
        passed = [form for form in self.forms if form.passed]
        return max(passed, key=lambda form: form.metrics.get("throughput_per_s", 0.0), default=None)


@dataclass(frozen=True)
class EvaluationDetailIn:
    """How a version did on its test set, class by class, plus the adapted checkpoint it grew from."""

    run_id: str
    version_id: int
    dataset_id: int | None
    labels: tuple[str, ...]
    per_class: tuple[ClassScore, ...]
    confusion_matrix: tuple[tuple[int, ...], ...]  # [true class][predicted class], in `labels` order
    reliability: tuple[ReliabilityBin, ...]  # non-empty confidence bins, in confidence order
    adapted_checkpoint_key: str | None = None  # the continued-pretraining cache key
    adapted_checkpoint_path: str | None = None
    risks: dict[str, Any] | None = None  # `tasks.risks.RiskAnalysis.to_json()`: slices, robustness, explanations


@dataclass(frozen=True)
class EvaluationDetailRecord:
    id: int
    run_id: str
    version_id: int
    dataset_id: int | None
    labels: tuple[str, ...]
    per_class: tuple[ClassScore, ...]
    confusion_matrix: tuple[tuple[int, ...], ...]
    reliability: tuple[ReliabilityBin, ...]
    adapted_checkpoint_key: str | None
    adapted_checkpoint_path: str | None
    created_at: datetime
    risks: dict[str, Any] | None = None

    @property
    def examples(self) -> int:
        return sum(score.support for score in self.per_class)


@dataclass(frozen=True)
class ServedPredictionIn:
    """One answered text, as the model server hands it to the prediction log."""

    model_name: str
    version: int
    served_at: datetime
    request_id: str
    text: str | None  # None when the server logs no raw text
    label: str
    score: float
    probabilities: dict[str, float]
    completion: str | None = None  # a language model's answer (None for a classifier, or without log_text)


@dataclass(frozen=True)
class ServedPredictionRecord(ServedPredictionIn):
    id: int = 0


# -- a causal language model's evaluation ---------------------------------------------------------------

REFERENCE_SAMPLED_FROM_BASE = "sampled from the base"  # reference_source when no evaluation.reference_text is set


@dataclass(frozen=True)
class DocumentScores:
    """One model on one set of documents: each document's summed next-token loss (nats) and predicted tokens, and
    the perplexity with its 95% bootstrap interval as the run computed them (the report cannot redo the bootstrap:
    it reads the registry alone)."""

    losses: tuple[tuple[float, int], ...]  # (nll, tokens) per document, in the set's order
    perplexity: float
    ci_low: float
    ci_high: float
    cross_entropy: float  # nats per predicted token over the whole set (token-weighted)

    @property
    def documents(self) -> int:
        return len(self.losses)

    @property
    def tokens(self) -> int:
        return sum(tokens for _, tokens in self.losses)

    def per_token(self) -> list[float]:
        """Each document's loss in nats per token (documents with nothing to predict left out)."""
        return [nll / tokens for nll, tokens in self.losses if tokens]


@dataclass(frozen=True)
class PromptAnswer:
    """One fixed prompt and the greedy continuations of the base and the candidate."""

    prompt: str
    base: str
    candidate: str


@dataclass(frozen=True)
class LanguageModelEvaluationIn:
    """How a causal-lm version did against its base (and the champion) on the same test documents and reference
    texts, document by document, plus the fixed prompts answered by both: what its audit report shows."""

    run_id: str
    version_id: int
    dataset_id: int | None  # the test documents
    base_test: DocumentScores
    champion_test: DocumentScores | None  # None when there was no champion to score
    candidate_test: DocumentScores
    base_reference: DocumentScores
    candidate_reference: DocumentScores
    reference_source: str  # the evaluation.reference_text file, or REFERENCE_SAMPLED_FROM_BASE
    corpus_tokens: int | None  # the whole corpus under the base's tokenizer, as validation counted it
    samples: tuple[PromptAnswer, ...]


@dataclass(frozen=True)
class LanguageModelEvaluationRecord(LanguageModelEvaluationIn):
    id: int = 0
    created_at: datetime | None = None
