"""Flows that run one stage alone: `steward validate`, `pretrain`, `finetune`, `evaluate`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow

from core.hashing import ModelFiles
from core.vocabulary import CAUSAL_LM
from flows.artifacts import publish_validation
from flows.context import flow_run, stage
from flows.language_model import load_valid_corpus
from flows.stages import (
    adapt_if_configured,
    adapt_to_domain,
    analyse_risks,
    base_model_dir,
    compress_candidate,
    evaluate,
    evaluate_candidate,
    failed_expectations,
    fit_baseline,
    load_data,
    load_valid_data,
    register_candidate,
    score_champion,
    train_classifier,
    validate_data,
)
from tasks.pretrain import PretrainResult


@dataclass(frozen=True)
class ValidationOutcome:
    run_id: str
    success: bool
    failed_expectations: list[str]
    checked: dict[str, int]
    pii_findings: dict[str, dict[str, int]]  # file -> {type -> count}
    label_issues: list[dict[str, Any]]  # {file, line, given, suggested, confidence}, worst first per file


@dataclass(frozen=True)
class FineTuneOutcome:
    run_id: str
    model: str
    version: int
    metrics: dict[str, float]
    artifact_path: str
    classical_baseline_metrics: dict[str, float]  # TF-IDF + LR on the same split (recorded; no gate here)


@dataclass(frozen=True)
class EvaluationOutcome:
    run_id: str
    model: str
    version: int
    metrics: dict[str, float]
    slices: list[dict[str, Any]]  # beside the champion's, or the classical baseline's when this is the champion
    robustness: list[dict[str, Any]]
    explanations: list[dict[str, Any]]


@flow(name="steward-validate", log_prints=False)
def validate_only(config_path: str, data_path: str | None = None) -> ValidationOutcome:
    """The expectation suite alone; `data_path` replaces the config's training file."""
    with flow_run(config_path, "validate") as context:
        data = load_data(context, Path(data_path).resolve() if data_path else None)
        reports = validate_data(context, data)
        publish_validation(context.config.name, reports)
        return ValidationOutcome(
            run_id=context.run.id,
            success=all(report.success for report in reports),
            failed_expectations=failed_expectations(reports),
            checked={report.role: len(report.outcomes) for report in reports},
            pii_findings=data.pii_findings,
            label_issues=[issue.to_json() for issue in data.label_issues.issues] if data.label_issues else [],
        )


@flow(name="steward-pretrain", log_prints=False)
def pretrain_only(config_path: str, nproc: int = 1) -> PretrainResult:
    """Continued pretraining alone (cached: an unchanged corpus returns the adapted checkpoint);
    `nproc` > 1 trains in that many torchrun workers."""
    with flow_run(config_path, "pretrain") as context:
        start_dir = base_model_dir(context)
        causal = context.config.task == CAUSAL_LM
        data = load_valid_corpus(context, start_dir) if causal else load_valid_data(context)
        return adapt_to_domain(context, data, start_dir, nproc)


@flow(name="steward-finetune", log_prints=False)
def finetune_only(config_path: str, nproc: int = 1) -> FineTuneOutcome:
    """Fine-tune (on the adapted checkpoint when pretraining is enabled), fit the classical baseline for
    comparison, register and compress, without a promotion gate;
    `nproc` > 1 trains (both stages) in that many torchrun workers."""
    with flow_run(config_path, "finetune") as context:
        start_dir = base_model_dir(context)
        data = load_valid_data(context)
        adapted = adapt_if_configured(context, data, start_dir, nproc)
        finetuned = train_classifier(context, data, adapted.model_dir if adapted else start_dir, nproc)
        model = ModelFiles.of(finetuned.model_dir)
        evaluation = evaluate_candidate(context, data, model)
        classical = fit_baseline(context, data)
        version = register_candidate(context, data, model, evaluation, None, adapted)
        compress_candidate(context, data, version, evaluation)
        return FineTuneOutcome(
            context.run.id, context.config.name, version.version, evaluation.headline(), str(finetuned.model_dir),
            classical.metrics,
        )


@flow(name="steward-evaluate", log_prints=False)
def evaluate_version(config_path: str, model_name: str, version: int) -> EvaluationOutcome:
    """Score a registered version on the config's test set after checking its weights' sha256, with its defects
    and risks beside the champion's (the classical baseline's when the version is the champion)."""
    with flow_run(config_path, "evaluate") as context:
        registry = context.registry
        detail = registry.get_version(model_name, version)
        data = load_data(context)
        with stage(context, "evaluate"):
            evaluation = evaluate(context, detail.model_files(), data.splits.test)
            registry.log_metrics(
                run_id=context.run.id, version_id=detail.version.id,
                dataset_id=data.dataset_ids["test"], metrics=evaluation.headline(),
            )
        champion = score_champion(context, data) if model_name == context.config.name else None
        champion = None if champion is None or champion.version.version == version else champion
        risks = analyse_risks(context, data, detail.model_files(), evaluation, champion, fit_baseline(context, data))
        return EvaluationOutcome(context.run.id, model_name, version, evaluation.headline(),
                                 [score.to_json() for score in risks.slices], risks.robustness_json(),
                                 risks.explanations)
