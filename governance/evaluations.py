"""Metrics and curves, evaluation details, validation results and the gate's decisions."""

from __future__ import annotations

import hashlib
import math

from sqlalchemy import select

from core.errors import BadInputError
from core.results import GateOutcome
from core.vocabulary import GATE_OUTCOMES
from governance.audit import canonical_json
from governance.events import (
    EvaluationRecorded,
    GateDecided,
    LanguageModelEvaluationRecorded,
    MetricCurveLogged,
    MetricsLogged,
    ValidationRecorded,
)
from governance.models import (
    EvaluationDetail,
    GateDecision,
    LanguageModelEvaluation,
    Metric,
    RegisteredModel,
    ValidationResult,
)
from governance.records import (
    DocumentScores,
    EvaluationDetailIn,
    EvaluationDetailRecord,
    GateDecisionRecord,
    LanguageModelEvaluationIn,
    LanguageModelEvaluationRecord,
    ValidationResultIn,
    ValidationResultRecord,
)
from governance.store import _SHA256, RegistryStore, finite_metrics, subject_of


class EvaluationStore(RegistryStore):
    def log_metrics(
        self,
        *,
        run_id: str,
        metrics: dict[str, float],
        version_id: int | None = None,
        dataset_id: int | None = None,
        step: int | None = None,
    ) -> None:
        values = finite_metrics(metrics)
        with self._write() as session:
            run = self._run(session, run_id)
            subject = run.model_name
            if version_id is not None:
                record = self._version_by_id(session, version_id)
                subject = subject_of(record.model_name, record.version)
            if dataset_id is not None:
                self._dataset(session, dataset_id)
            session.add_all(
                Metric(run_id=run_id, version_id=version_id, dataset_id=dataset_id, key=k, value=v, step=step)
                for k, v in values.items()
            )
            self._event(session, subject, MetricsLogged(run_id, dataset_id, step, values))

    def log_curve(self, *, run_id: str, key: str, points: list[tuple[int, float]]) -> None:
        """A per-step series (a loss curve) in one transaction and one audit event.

        The event carries the series' sha256 rather than every point, so the chain still covers it.
        """
        values = [(int(step), value) for step, value in points]
        finite_metrics({f"{key}@{step}": value for step, value in values})
        with self._write() as session:
            run = self._run(session, run_id)
            session.add_all(Metric(run_id=run_id, key=key, value=value, step=step) for step, value in values)
            payload = MetricCurveLogged(
                run_id=run_id,
                key=key,
                points=len(values),
                last=values[-1][1] if values else None,
                sha256=hashlib.sha256(canonical_json(values).encode()).hexdigest(),
            )
            self._event(session, run.model_name, payload)

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
            row = EvaluationDetail.from_detail(detail)
            session.add(row)
            session.flush()
            payload = EvaluationRecorded(
                run_id=detail.run_id,
                version_id=detail.version_id,
                dataset_id=detail.dataset_id,
                labels=list(detail.labels),
                examples=sum(score.support for score in detail.per_class),
                adapted_checkpoint_key=detail.adapted_checkpoint_key,
                sha256=hashlib.sha256(canonical_json(EvaluationDetail.columns_of(detail)).encode()).hexdigest(),
            )
            self._event(session, subject_of(version.model_name, version.version), payload)
            return row.to_record()

    def evaluation(self, version_id: int) -> EvaluationDetailRecord | None:
        """The latest evaluation detail recorded for the version; None when there is none."""
        with self._read() as session:
            row = session.scalars(
                select(EvaluationDetail)
                .where(EvaluationDetail.version_id == version_id)
                .order_by(EvaluationDetail.id.desc())
                .limit(1)
            ).first()
            return None if row is None else row.to_record()

    def record_language_model_evaluation(self, evaluation: LanguageModelEvaluationIn) -> LanguageModelEvaluationRecord:
        """Store a causal-lm version's per-document losses and prompt answers (one audit event).

        The event carries the sha256 of the whole record, so the chain covers every loss and every answer.
        """
        _check_language_model_evaluation(evaluation)
        with self._write() as session:
            self._run(session, evaluation.run_id)
            version = self._version_by_id(session, evaluation.version_id)
            if evaluation.dataset_id is not None:
                self._dataset(session, evaluation.dataset_id)
            row = LanguageModelEvaluation.from_evaluation(evaluation)
            session.add(row)
            session.flush()
            columns = LanguageModelEvaluation.columns_of(evaluation)
            payload = LanguageModelEvaluationRecorded(
                run_id=evaluation.run_id,
                version_id=evaluation.version_id,
                dataset_id=evaluation.dataset_id,
                test_documents=evaluation.candidate_test.documents,
                reference_texts=evaluation.candidate_reference.documents,
                reference_source=evaluation.reference_source,
                champion_scored=evaluation.champion_test is not None,
                prompts=len(evaluation.samples),
                sha256=hashlib.sha256(canonical_json(columns).encode()).hexdigest(),
            )
            self._event(session, subject_of(version.model_name, version.version), payload)
            return row.to_record()

    def language_model_evaluation(self, version_id: int) -> LanguageModelEvaluationRecord | None:
        """The latest causal-lm evaluation recorded for the version; None when there is none (a classifier)."""
        with self._read() as session:
            row = session.scalars(
                select(LanguageModelEvaluation)
                .where(LanguageModelEvaluation.version_id == version_id)
                .order_by(LanguageModelEvaluation.id.desc())
                .limit(1)
            ).first()
            return None if row is None else row.to_record()

    def record_validation(self, *, run_id: str, dataset_id: int | None, results: list[ValidationResultIn]) -> None:
        with self._write() as session:
            run = self._run(session, run_id)
            if dataset_id is not None:
                self._dataset(session, dataset_id)
            session.add_all(ValidationResult.from_result(result, run_id, dataset_id) for result in results)
            failed = [f"{r.expectation}({r.column})" if r.column else r.expectation for r in results if not r.success]
            self._event(session, run.model_name, ValidationRecorded(run_id, dataset_id, len(results), failed))

    def validation_results(self, run_id: str) -> list[ValidationResultRecord]:
        with self._read() as session:
            rows = session.scalars(
                select(ValidationResult).where(ValidationResult.run_id == run_id).order_by(ValidationResult.id)
            )
            return [row.to_record() for row in rows]

    def record_gate_decision(self, outcome: GateOutcome, *, run_id: str, candidate_version_id: int,
                             champion_version_id: int | None) -> GateDecisionRecord:
        """Store the gate's decision on a candidate (against the champion it was compared with, if any)."""
        if outcome.outcome not in GATE_OUTCOMES:
            raise BadInputError(f"gate outcome must be one of {', '.join(GATE_OUTCOMES)}, not {outcome.outcome!r}")
        with self._write() as session:
            self._run(session, run_id)
            candidate = self._version_by_id(session, candidate_version_id)
            if champion_version_id is not None:
                self._version_by_id(session, champion_version_id)
            row = GateDecision.from_outcome(outcome, run_id=run_id, candidate_version_id=candidate_version_id,
                                            champion_version_id=champion_version_id)
            session.add(row)
            session.flush()
            stored = session.execute(GateDecision.records().where(GateDecision.id == row.id)).one()
            record = GateDecision.to_record(stored)
            self._event(session, subject_of(candidate.model_name, candidate.version),
                        GateDecided.of(record, reasons=GateDecision.REASON_SEPARATOR.join(record.reasons)))
            return record

    def gate_decisions(self, model_name: str) -> list[GateDecisionRecord]:
        with self._read() as session:
            rows = session.execute(
                GateDecision.records().where(RegisteredModel.name == model_name).order_by(GateDecision.id)
            ).all()
            return [GateDecision.to_record(row) for row in rows]


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
    finite_metrics({**scores, **bins})


def _check_language_model_evaluation(evaluation: LanguageModelEvaluationIn) -> None:
    """Every model on a set scored on the same non-empty documents, every number finite, no negative token count,
    a prompt for each pair of answers: what the report's table, histogram and side-by-side answers rely on."""
    sets = {
        "test": {"base": evaluation.base_test, "champion": evaluation.champion_test,
                 "candidate": evaluation.candidate_test},
        "reference": {"base": evaluation.base_reference, "candidate": evaluation.candidate_reference},
    }
    for documents, models in sets.items():
        scored = {model: scores for model, scores in models.items() if scores is not None}
        counts = {model: scores.documents for model, scores in scored.items()}
        if len(set(counts.values())) != 1 or 0 in counts.values():
            raise BadInputError(f"every model must be scored on the same non-empty {documents} documents, got {counts}")
        for model, scores in scored.items():
            _check_scores(f"{model} on the {documents} documents", scores)
    if not evaluation.reference_source:
        raise BadInputError("a language-model evaluation must name the source of its reference texts")
    if any(not sample.prompt for sample in evaluation.samples):
        raise BadInputError("every answered prompt must be a non-empty text")


def _check_scores(what: str, scores: DocumentScores) -> None:
    summary = [scores.perplexity, scores.ci_low, scores.ci_high, scores.cross_entropy]
    if not all(math.isfinite(value) for value in summary + [nll for nll, _ in scores.losses]):
        raise BadInputError(f"{what}: losses, perplexity and interval must be finite numbers")
    if any(tokens < 0 for _, tokens in scores.losses):
        raise BadInputError(f"{what}: predicted token counts must not be negative")
