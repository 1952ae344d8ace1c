"""The retraining flow: validate → adapt → fine-tune → evaluate (and fit the classical baseline) → register
→ compress → gate → report."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from prefect import flow

from core.hashing import ModelFiles
from core.vocabulary import CAUSAL_LM
from flows.artifacts import publish_gate_decision, publish_metrics, publish_report
from flows.context import RunContext, Workspace, audit_resumptions, opened_registry, prefect_ui_url, tracked_run
from flows.language_model import (
    champion_version,
    evaluate_language_model,
    gate_language_model,
    load_valid_corpus,
    package_candidate,
    register_language_model,
    tune_if_paired,
)
from flows.stages import (
    adapt_if_configured,
    adapt_to_domain,
    analyse_risks,
    apply_gate,
    base_model_dir,
    compress_candidate,
    evaluate_candidate,
    fit_baseline,
    load_valid_data,
    register_candidate,
    score_champion,
    train_classifier,
)
from reports.audit import build_report, save_label_issues, save_report
from reports.render import render_markdown


@dataclass(frozen=True)
class RetrainOutcome:
    """What `steward run --json` prints."""

    run_id: str
    model: str
    version: int
    promoted: bool
    decision: str
    reasons: list[str]
    metrics: dict[str, Any]  # a language model's also hold `perplexity_ci`, the interval as a pair
    baseline_metrics: dict[str, float] | None  # the champion's, on the same test set
    baseline_version: int | None
    classical_baseline_metrics: dict[str, float] | None  # TF-IDF + logistic regression on the same split
    pretraining_cache_hit: bool | None
    pretraining_resumed_from_step: int | None = None  # set when an interrupted run's checkpoint was resumed
    finetuning_resumed_from_epoch: int | None = None
    base_metrics: dict[str, float] | None = None  # a language model's base, on the same test documents
    pii_findings: dict[str, dict[str, int]] = field(default_factory=dict)  # file -> {type -> count}
    label_issues: list[dict[str, Any]] = field(default_factory=list)  # {file, line, given, suggested, confidence}
    slices: list[dict[str, Any]] = field(default_factory=list)  # `tasks.slices.SliceScore.to_json()`, a classifier's
    robustness: list[dict[str, Any]] = field(default_factory=list)  # flip rates per perturbation, the champion's beside
    explanations: list[dict[str, Any]] = field(default_factory=list)  # token attributions of chosen test texts
    report: str = ""


def retrain_once(context: RunContext) -> RetrainOutcome:
    """The whole lifecycle for one config inside one registry run."""
    if context.config.task == CAUSAL_LM:
        return retrain_language_model(context)
    config = context.config
    start_dir = base_model_dir(context)
    data = load_valid_data(context)
    pretrained = adapt_if_configured(context, data, start_dir)
    finetuned = train_classifier(context, data, pretrained.model_dir if pretrained else start_dir)
    resumed_step = pretrained.resumed_from_step if pretrained else None
    audit_resumptions(context, {"continued pretraining": ("step", resumed_step),
                                "fine-tuning": ("epoch", finetuned.resumed_from_epoch)})
    model = ModelFiles.of(finetuned.model_dir)
    evaluation = evaluate_candidate(context, data, model)
    classical = fit_baseline(context, data)
    champion = score_champion(context, data)
    risks = analyse_risks(context, data, model, evaluation, champion, classical)
    candidate = register_candidate(
        context, data, model, evaluation, champion.version if champion else None, adapted=pretrained, risks=risks,
    )
    compress_candidate(context, data, candidate, evaluation)  # before the gate: a promoted version has its forms
    metrics = evaluation.headline()
    outcome = apply_gate(context, candidate, metrics, champion, classical, risks)
    publish_metrics(config.name, metrics, champion.metrics if champion else None, classical.metrics)
    publish_gate_decision(config.name, candidate.version, outcome)
    return RetrainOutcome(
        run_id=context.run.id,
        model=config.name,
        version=candidate.version,
        promoted=outcome.outcome == "promoted",
        decision=outcome.outcome,
        reasons=outcome.reasons,
        metrics=metrics,
        baseline_metrics=champion.metrics if champion else None,
        baseline_version=champion.version.version if champion else None,
        classical_baseline_metrics=classical.metrics,
        pretraining_cache_hit=pretrained.cache_hit if pretrained else None,
        pretraining_resumed_from_step=resumed_step,
        finetuning_resumed_from_epoch=finetuned.resumed_from_epoch,
        pii_findings=data.pii_findings,
        label_issues=[issue.to_json() for issue in data.label_issues.issues] if data.label_issues else [],
        slices=[score.to_json() for score in risks.slices], robustness=risks.robustness_json(),
        explanations=risks.explanations,
    )


def retrain_language_model(context: RunContext) -> RetrainOutcome:
    """The causal-lm lifecycle (`flows.language_model`) inside one registry run."""
    config = context.config
    start_dir = base_model_dir(context)
    data = load_valid_corpus(context, start_dir)
    adapted = adapt_to_domain(context, data, start_dir)
    audit_resumptions(context, {"continued pretraining": ("step", adapted.resumed_from_step)})
    tuned, data = tune_if_paired(context, data, start_dir, adapted)
    model = package_candidate(context, tuned, start_dir)
    champion = champion_version(context)
    scores = evaluate_language_model(context, data, model, start_dir, champion)
    candidate = register_language_model(context, data, model, scores, champion)
    outcome = gate_language_model(context, candidate, scores, champion)
    metrics = scores.metrics()
    publish_metrics(config.name, metrics, scores.champion_metrics(), None)
    publish_gate_decision(config.name, candidate.version, outcome)
    return RetrainOutcome(
        run_id=context.run.id, model=config.name, version=candidate.version,
        promoted=outcome.outcome == "promoted", decision=outcome.outcome, reasons=outcome.reasons,
        metrics={**metrics, "perplexity_ci": [metrics["perplexity_ci_low"], metrics["perplexity_ci_high"]]},
        baseline_metrics=scores.champion_metrics(), baseline_version=champion.version if champion else None,
        classical_baseline_metrics=None, pretraining_cache_hit=adapted.cache_hit,
        pretraining_resumed_from_step=adapted.resumed_from_step, base_metrics=scores.base_metrics(),
        pii_findings=data.pii_findings,
    )


@flow(name="steward-retrain", log_prints=False)
def retrain(config_path: str) -> RetrainOutcome:
    """Retrain the model that `config_path` describes, once, and gate it against the champion."""
    with opened_registry(config_path) as (config, registry):
        with tracked_run(config, registry, "retrain") as context:
            outcome = retrain_once(context)
        # Built after the run is closed, so the report shows its final status.
        document = build_report(registry, config.name, outcome.version, prefect_ui_url())
    report = save_report(document, Workspace.for_config(config).reports_dir(config.name) / f"v{outcome.version}.html")
    if outcome.label_issues:
        save_label_issues(outcome.label_issues, report.with_name(f"v{outcome.version}-label-issues.csv"))
    publish_report(config.name, outcome.version, render_markdown(document))
    return replace(outcome, report=str(report))
