"""What an audit report shows about one version, read from the registry in one go (`gather`)."""

from __future__ import annotations

from dataclasses import dataclass

from core.vocabulary import CAUSAL_LM, CLASSICAL_BASELINE_PREFIX
from governance.audit import AuditEventRecord, ChainVerification
from governance.records import (
    AliasMove,
    DriftReportRecord,
    EvaluationDetailRecord,
    GateDecisionRecord,
    LanguageModelEvaluationRecord,
    ModelVersionDetail,
    RunRecord,
    ValidationResultRecord,
)
from governance.registry import Registry

CLASSICAL_METRICS = ("macro_f1", "accuracy")
LANGUAGE_MODEL_METRIC = "perplexity"  # what a causal-lm gate judges (tasks.gate.PERPLEXITY), lower is better


@dataclass(frozen=True)
class Evidence:
    """Everything the report shows about one version, read from the registry in one go."""

    detail: ModelVersionDetail
    evaluation: EvaluationDetailRecord | None
    language_model: LanguageModelEvaluationRecord | None  # a causal-lm version's losses and prompt answers
    champion_metrics: dict[str, float] | None
    moves: list[AliasMove]  # alias moves to or away from this version
    run_metrics: dict[str, float]
    curves: dict[str, list[tuple[int, float]]]
    validation: list[ValidationResultRecord]
    drift: list[DriftReportRecord]
    version_numbers: dict[int, int]  # version id -> version number, for drift rows
    events: list[AuditEventRecord]
    chain: ChainVerification
    parent_run: RunRecord | None
    ui_url: str | None

    @property
    def name(self) -> str:
        return self.detail.version.model_name

    @property
    def number(self) -> int:
        return self.detail.version.version

    @property
    def is_language_model(self) -> bool:
        return self.detail.run.config.get("task") == CAUSAL_LM

    @property
    def gate(self) -> GateDecisionRecord | None:
        return self.detail.gate_decision

    @property
    def primary_metric(self) -> str:
        return _primary_metric(self.detail)

    @property
    def card(self) -> dict:
        return self.detail.run.config.get("card") or {}

    @property
    def classical_baseline(self) -> dict[str, float]:
        """The classical baseline's test metrics from this version's run (empty when it predates them)."""
        metrics = self.run_metrics
        return {name: metrics[CLASSICAL_BASELINE_PREFIX + name] for name in CLASSICAL_METRICS
                if CLASSICAL_BASELINE_PREFIX + name in metrics}

    @property
    def floor_is_classical_baseline(self) -> bool:
        """Whether the gate's floor was the classical baseline (`evaluation.min_score: baseline`)."""
        if self.gate is not None:
            return self.gate.floor_source == "classical baseline"
        return self.detail.run.config.get("evaluation", {}).get("min_score") == "baseline"


# -- reading the registry ----------------------------------------------------------------------------


def _primary_metric(detail: ModelVersionDetail) -> str:
    """The metric the gate judged: a causal-lm config still carries the classifiers' `primary_metric` default."""
    configured = detail.run.config.get("evaluation", {}).get("primary_metric")
    gate = detail.gate_decision
    if detail.run.config.get("task") == CAUSAL_LM:
        return LANGUAGE_MODEL_METRIC
    return configured or (gate.primary_metric if gate else "macro_f1")


def gather(registry: Registry, model_name: str, version: int, ui_url: str | None) -> Evidence:
    detail = registry.get_version(model_name, version)
    run, gate = detail.run, detail.gate_decision
    subject = f"{model_name}:{version}"
    parent = detail.version.parent_version
    curve_keys = ("pretrain_loss", "finetune_loss", f"validation_{_primary_metric(detail)}")
    return Evidence(
        detail=detail,
        evaluation=registry.evaluation(detail.version.id),
        language_model=registry.language_model_evaluation(detail.version.id),
        champion_metrics=registry.metrics_for_version(gate.champion_version_id)
        if gate and gate.champion_version_id else None,
        moves=[m for m in registry.alias_history(model_name) if version in (m.version, m.previous_version)],
        run_metrics=registry.run_metrics(run.id),
        curves={key: registry.curve(run.id, key) for key in curve_keys},
        validation=registry.validation_results(run.id),
        drift=registry.drift_reports(model_name),
        version_numbers={v.id: v.version for v in registry.list_versions(model_name)},
        events=[e for e in registry.audit.events(model_name)
                if e.subject == subject or e.payload.get("run_id") == run.id],
        chain=registry.audit.verify(),
        parent_run=registry.get_version(model_name, parent).run if parent is not None else None,
        ui_url=ui_url,
    )
