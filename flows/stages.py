"""One function per stage: run the task, record what it produced in the registry, audit it.

Both the full retraining flow and the single-stage flows (`steward validate`, `pretrain`, ...)
are built from these, so a stage behaves the same whichever command runs it.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.errors import CheckFailedError
from core.hashing import ModelFiles
from core.results import GateOutcome
from core.vocabulary import CAUSAL_LM, CHAMPION
from flows import steps
from flows.artifacts import publish_validation
from flows.context import RunContext, progress, stage
from flows.events import announce_alias_move
from governance.events import DomainAdapted, LabelIssuesFound, PersonalDataFound, ValidationFailed
from governance.registry import CompressedFormIn, EvaluationDetailIn, ModelVersionRecord, ValidationResultIn
from tasks.baseline import BaselineResult
from tasks.compress import CompressionInputs, FormResult
from tasks.data import Splits, TextTable, make_table, split_validation, without_rows
from tasks.evaluate import EvaluationResult
from tasks.finetune import FineTuneJob, FineTuneResult
from tasks.label_issues import LabelIssues
from tasks.modeling import resolve_base_model
from tasks.objectives.base import PretrainJob
from tasks.pretrain import PretrainResult, resolve_objective
from tasks.risks import RiskAnalysis
from tasks.validation import ValidationReport

VALIDATION_SPLIT_FRACTION = 0.1


@dataclass(frozen=True)
class LoadedData:
    splits: Splits
    dataset_ids: dict[str, int]  # role -> the registry's dataset id
    pii_findings: dict[str, dict[str, int]] = field(default_factory=dict)  # file -> {type -> count}
    label_issues: LabelIssues | None = None  # labelled data only
    test_columns: dict[str, list[str | None]] = field(default_factory=dict)  # data.slice_columns, every test row


@dataclass(frozen=True)
class ChampionScore:
    version: ModelVersionRecord
    metrics: dict[str, float]
    files: ModelFiles
    predictions: list[str]  # on the test set's labelled rows


def record_dataset(context: RunContext, table: TextTable) -> int:
    record = context.registry.record_dataset(
        role=table.role, source=str(table.source), fingerprint=table.fingerprint,
        rows=table.rows, schema=table.schema,
    )
    return record.id


def load_data(context: RunContext, train_override: Path | None = None) -> LoadedData:
    """Load every file named in the config, keep personal data out of them (`validation.pii`), look for label
    errors (`validation.label_issues`), then split validation off train when the config names no validation file."""
    config, data = context.config, context.config.data
    with stage(context, "load data"):
        columns = (data.text_column, data.label_column)
        files = {"train": steps.load_table(train_override or config.resolve(data.train), *columns, "train"),
                 "test": steps.load_table(config.resolve(data.test), *columns, "test")}
        if data.validation is not None:
            files["validation"] = steps.load_table(config.resolve(data.validation), *columns, "validation")
        if data.domain_corpus is not None:
            files["corpus"] = steps.load_corpus(config)
        test_columns = steps.load_slice_columns(config.resolve(data.test), data.text_column, data.slice_columns,
                                                "test") if data.slice_columns else {}
    protected, findings = protect_personal_data(context, list(files.values()))
    files = dict(zip(files, protected, strict=True))
    label_issues = None
    if config.validation.label_issues != "off":
        files, label_issues = check_labels(context, files)
    train, validation = files["train"], files.get("validation")
    if validation is None:
        train, validation = split_validation(train, VALIDATION_SPLIT_FRACTION, config.seed)
    splits = Splits(train, validation, files["test"], files.get("corpus"))
    with stage(context, "record data"):
        dataset_ids = {table.role: record_dataset(context, table) for table in splits.tables()}
    return LoadedData(splits, dataset_ids, findings, label_issues, test_columns)


def check_labels(context: RunContext, files: dict[str, TextTable]) -> tuple[dict[str, TextTable], LabelIssues]:
    """Find rows whose label looks wrong in the training, validation and test files (`tasks.label_issues`), audit
    the counts and the worst rows (never texts), and act on `validation.label_issues`: `drop` removes the training
    and validation files' suspects (a test file's stay: the gate's yardstick is not edited behind its back),
    `fail` stops the run (exit 1) when a file's share passes `max_label_issue_share`."""
    config, policy = context.config, context.config.validation
    with stage(context, "label issues"):
        held_out = [files[role] for role in ("validation", "test") if role in files]
        found = steps.find_label_issues(files["train"], held_out, base_model_dir(context),
                                        config.finetuning.max_seq_length, config.seed)
        dropped = 0
        if policy.label_issues == "drop":
            for role in ("train", "validation"):
                rows = {issue.row for issue in found.of(role)}
                if role in files and rows:
                    files[role], dropped = without_rows(files[role], rows), dropped + len(rows)
        if found.issues:
            context.registry.audit.append(context.subject, LabelIssuesFound(
                context.run.id, policy.label_issues, found.counts(), found.checked,
                {role: found.per_class(role) for role in found.checked}, [i.to_json() for i in found.issues[:20]],
                dropped))
            progress(f"· label issues: {len(found.issues)} rows whose label looks wrong ({policy.label_issues}"
                     + (f", {dropped} dropped)" if dropped else ")"))
    over = [f"{role} {len(found.of(role))} of {found.checked[role]} rows ({found.share(role):.1%})"
            for role in found.checked if found.share(role) > policy.max_label_issue_share]
    if policy.label_issues == "fail" and over:
        raise CheckFailedError(f"label issues above validation.max_label_issue_share "
                               f"{policy.max_label_issue_share:.1%}: {'; '.join(over)}")
    return files, found


def protect_personal_data(context: RunContext, tables: list[TextTable], scan_labels: bool = False,
                          ) -> tuple[list[TextTable], dict[str, dict[str, int]]]:
    """Scan each table for personal data (`tasks.pii`) before anything trains on it or the registry fingerprints
    it, and act on `validation.pii`: `redact` returns the tables with each finding replaced by its type (so the
    registry records the redacted data's fingerprint), `report` returns them as they are, `fail` stops the run
    (exit 1) naming each file, its types and their first rows. The audit trail gets counts, never values."""
    validation = context.config.validation
    with stage(context, "personal data"):
        scans = [steps.scan_personal_data(table, validation.phone_region, scan_labels) for table in tables]
        per_file: dict[str, Counter[str]] = {}
        for scan in scans:  # a training file split into train and validation is one file
            per_file.setdefault(scan.source, Counter()).update(scan.counts)
        findings = {source: dict(sorted(counts.items())) for source, counts in per_file.items() if counts}
        if findings:
            context.registry.audit.append(context.subject,
                                          PersonalDataFound(context.run.id, validation.pii, findings))
            progress(f"· personal data: {sum(sum(kinds.values()) for kinds in findings.values())} findings "
                     f"({validation.pii})")
    if findings and validation.pii == "fail":
        named = "; ".join(f"{scan.source}: {scan.summary()}" for scan in scans if scan.counts)
        raise CheckFailedError(f"personal data found (validation.pii is fail): {named}")
    kept = [scan.redacted if validation.pii == "redact" else table for scan, table in zip(scans, tables, strict=True)]
    return kept, findings


def validate_data(context: RunContext, data: LoadedData) -> list[ValidationReport]:
    """Run the expectation suite on train, validation and test; record and audit the outcome."""
    config, splits = context.config, data.splits
    allowed = config.validation.allowed_labels or splits.train.label_set()
    columns = (config.data.text_column, config.data.label_column)
    with stage(context, "validate"):
        reports = [steps.validate_table(table, config.validation, allowed, *columns) for table in splits.labelled()]
        record_validation(context, reports, data.dataset_ids)
    return reports


def record_validation(context: RunContext, reports: list[ValidationReport], dataset_ids: dict[str, int]) -> None:
    """Keep every expectation's outcome against its dataset; audit the failures."""
    for report in reports:
        context.registry.record_validation(
            run_id=context.run.id,
            dataset_id=dataset_ids.get(report.role),
            results=[ValidationResultIn(o.expectation, o.column, o.success, o.observed, o.details)
                     for o in report.outcomes],
        )
    failures = failed_expectations(reports)
    if failures:
        context.registry.audit.append(context.subject, ValidationFailed(context.run.id, failures))


def failed_expectations(reports: list[ValidationReport]) -> list[str]:
    return [line for report in reports for line in report.summary_lines()]


def stop_unless_valid(reports: list[ValidationReport]) -> None:
    """The gate before any training: a failed expectation ends the run (exit 1)."""
    failures = failed_expectations(reports)
    if failures:
        raise CheckFailedError("validation failed: " + "; ".join(failures))


def load_valid_data(context: RunContext) -> LoadedData:
    """Load, validate, show the results in Prefect, and stop the run on any failed expectation."""
    data = load_data(context)
    reports = validate_data(context, data)
    publish_validation(context.config.name, reports)
    stop_unless_valid(reports)
    return data


def adaptation_corpus(splits: Splits, task: str) -> TextTable:
    """A causal language model's training documents; for a classifier the domain corpus and the labelled training
    texts together (task-adaptive pretraining, Gururangan et al. 2020: the task's own texts are the most in-domain
    text there is), or the training texts alone when there is no corpus."""
    if task == CAUSAL_LM or splits.corpus is None:
        return splits.train
    texts = splits.corpus.texts + splits.train.texts
    return make_table(splits.corpus.role, splits.corpus.source, texts, None, splits.corpus.schema)


def adapt_if_configured(context: RunContext, data: LoadedData, base_model_dir: Path,
                        nproc: int = 1) -> PretrainResult | None:
    """Continued pretraining when it is enabled and its objective (what `auto` picks for this base) is one:
    `auto` picks none for a sentence encoder, whose domain corpus feeds self-training instead."""
    pretraining = context.config.pretraining
    if not pretraining.enabled:
        return None
    if resolve_objective(pretraining.objective, base_model_dir) is None:
        feeds_self_training = data.splits.corpus is not None and context.config.finetuning.self_training.enabled
        progress("· continued pretraining: none for a sentence encoder (pretraining.objective auto)"
                 + ("; the domain corpus feeds self-training" if feeds_self_training else ""))
        return None
    return adapt_to_domain(context, data, base_model_dir, nproc)


def adapt_to_domain(context: RunContext, data: LoadedData, base_model_dir: Path, nproc: int = 1) -> PretrainResult:
    """Continued pretraining on the adaptation corpus (`nproc` > 1: in that many torchrun workers; this
    process keeps the registry)."""
    config = context.config
    corpus = adaptation_corpus(data.splits, config.task)
    # A language model stops early on its own validation documents; a classifier's are labelled sentences.
    validation = data.splits.validation if config.task == CAUSAL_LM else None
    with stage(context, "continued pretraining"):
        with context.workspace.claimed_work_dir("pretrain", context.run.id) as work_dir:
            job = PretrainJob(base_model_dir, corpus, config.pretraining, config.seed, work_dir,
                              context.workspace.pretrain_cache, validation)
            result = steps.continue_pretraining(job, nproc)
        metrics = {
            "pretrain_heldout_loss_before": result.heldout_loss_before,
            "pretrain_heldout_loss_after": result.heldout_loss_after,
            "pretrain_steps": float(result.steps),
            "pretrain_cache_hit": float(result.cache_hit),
        }
        if result.perplexity_before is not None and result.perplexity_after is not None:
            metrics |= {"pretrain_perplexity_before": result.perplexity_before,
                        "pretrain_perplexity_after": result.perplexity_after}
        corpus_role = corpus.role
        context.registry.log_metrics(run_id=context.run.id, dataset_id=data.dataset_ids.get(corpus_role),
                                     metrics=metrics)
        context.registry.log_curve(run_id=context.run.id, key="pretrain_loss", points=result.loss_curve)
        context.registry.audit.append(context.subject, DomainAdapted(
            run_id=context.run.id, objective=result.objective, steps=result.steps,
            cache_key=result.cache_key, cache_hit=result.cache_hit, corpus_rows=corpus.rows,
        ))
    return result


def base_model_dir(context: RunContext) -> Path:
    return resolve_base_model(context.config.base_model, context.config.workdir, context.config.allow_pickle)


def train_classifier(context: RunContext, data: LoadedData, start_dir: Path, nproc: int = 1) -> FineTuneResult:
    """Fine-tune into the run's model folder (`nproc` > 1: in that many torchrun workers)."""
    config, splits = context.config, data.splits
    with stage(context, "fine-tuning"):
        with context.workspace.claimed_work_dir("finetune", context.run.id) as work_dir:
            job = FineTuneJob(start_dir, splits.train, splits.validation, config.finetuning, config.seed, work_dir,
                              config.evaluation.primary_metric)
            result = steps.fine_tune(job, nproc)
            if config.finetuning.self_training.enabled and splits.corpus is not None:
                result = self_training_round(context, data, job, result, nproc)
            final_dir = context.workspace.model_dir(config.name, context.run.id)
            final_dir.parent.mkdir(parents=True, exist_ok=True)
            result = replace(result, model_dir=Path(shutil.move(result.model_dir, final_dir)))
        validation_curve = list(enumerate(result.validation_scores, start=1))
        context.registry.log_curve(
            run_id=context.run.id, key=f"validation_{config.evaluation.primary_metric}", points=validation_curve,
        )
        context.registry.log_curve(run_id=context.run.id, key="finetune_loss", points=result.loss_curve)
    return result


def self_training_round(context: RunContext, data: LoadedData, first_job: FineTuneJob, first: FineTuneResult,
                        nproc: int) -> FineTuneResult:
    """Fine-tune again with pseudo-labelled corpus rows; record what it added and which model it kept."""
    with context.workspace.claimed_work_dir("self-training", context.run.id) as work_dir:
        outcome = steps.self_train(first, replace(first_job, output_dir=work_dir), data.splits, nproc)
        result = outcome.result
        if outcome.skipped_because is not None:
            progress(f"· self-training skipped: {outcome.skipped_because}")
        if first.resumed_from_epoch is not None:  # a resumed first fine-tuning stays reported, whichever is kept
            result = replace(result, resumed_from_epoch=first.resumed_from_epoch)
        if outcome.kept_candidate:  # out of the work folder before it is released; the first model is not needed
            held = work_dir.with_name(f"{work_dir.name}-{context.run.id}.kept")
            result = replace(result, model_dir=Path(shutil.move(result.model_dir, held)))
            shutil.rmtree(first.model_dir, ignore_errors=True)
    context.registry.log_metrics(run_id=context.run.id, dataset_id=data.dataset_ids["validation"], metrics={
        "self_training_pseudo_labels": float(outcome.pseudo_labels),
        "self_training_validation_before": outcome.first_score,
        "self_training_validation_after": outcome.candidate_score,
        "self_training_kept": float(outcome.kept_candidate),
    })
    return result


def evaluate(context: RunContext, model: ModelFiles, test: TextTable) -> EvaluationResult:
    """A model's test evaluation, from Prefect's cache when this model was scored on this test set before. The
    files are verified first either way: the cache is keyed by the recorded hashes, so a cached score must not
    stand in for files that were changed since."""
    model.verified()
    return steps.cached(steps.evaluate_model, context.workspace.results)(model, test)


def evaluate_candidate(context: RunContext, data: LoadedData, model: ModelFiles) -> EvaluationResult:
    with stage(context, "evaluate candidate"):
        return evaluate(context, model, data.splits.test)


def fit_baseline(context: RunContext, data: LoadedData) -> BaselineResult:
    """The classical baseline (TF-IDF + LR) on the same split; its test metrics are recorded against the
    run and the test set (`classical_baseline_macro_f1`, ...), the floor of `min_score: baseline`."""
    config = context.config
    with stage(context, "classical baseline"):
        result = steps.fit_classical_baseline(data.splits, config.evaluation.primary_metric)
        context.registry.log_metrics(
            run_id=context.run.id, dataset_id=data.dataset_ids["test"], metrics=result.registry_metrics(),
        )
    return result


def register_candidate(
    context: RunContext, data: LoadedData, model: ModelFiles, evaluation: EvaluationResult,
    parent: ModelVersionRecord | None, adapted: PretrainResult | None = None, risks: RiskAnalysis | None = None,
) -> ModelVersionRecord:
    """Register the fine-tuned weights with their lineage, test metrics and evaluation details
    (`adapted`: the continued-pretraining checkpoint it was fine-tuned from, if any; `risks`: its defects and
    risks)."""
    config = context.config
    with stage(context, "register"):
        version = context.registry.register_version(
            model_name=config.name,
            run_id=context.run.id,
            artifact_path=str(model.folder),
            files=model.sha256,
            base_model=config.base_model,
            parent_version=parent.version if parent is not None else None,
            datasets=data.dataset_ids,
            require_approval=config.evaluation.require_approval,
        )
        context.registry.log_metrics(
            run_id=context.run.id, version_id=version.id, dataset_id=data.dataset_ids["test"],
            metrics=evaluation.headline(),
        )
        context.registry.record_evaluation(
            _evaluation_detail(context.run.id, version.id, data.dataset_ids["test"], evaluation, adapted, risks)
        )
    return version


def compress_candidate(
    context: RunContext, data: LoadedData, candidate: ModelVersionRecord, evaluation: EvaluationResult,
) -> list[FormResult]:
    """Each `compression.methods` form of the registered candidate, evaluated on the same test set and judged;
    every form is recorded (passed, refused or failed) and none of them can fail the run."""
    config = context.config
    if not config.compression.enabled:
        return []
    with stage(context, "compression"):
        inputs = CompressionInputs(Path(candidate.artifact_path), config.base_model, evaluation, data.splits,
                                   config.evaluation.primary_metric, config.seed)
        results = steps.compress_model(inputs, config.compression)
        for result in results:
            context.registry.record_compressed_form(CompressedFormIn(
                run_id=context.run.id, version_id=candidate.id, form=result.form, method=result.method,
                status=result.status, reasons=tuple(result.reasons),
                artifact_path=str(result.folder) if result.folder else None, files=result.files,
                size_bytes=result.size_bytes, metrics=result.metrics(), per_class_f1_delta=result.per_class_f1_delta,
            ))
    return results


def _evaluation_detail(
    run_id: str, version_id: int, dataset_id: int, evaluation: EvaluationResult, adapted: PretrainResult | None,
    risks: RiskAnalysis | None,
) -> EvaluationDetailIn:
    """The registry's record of an evaluation beyond its headline metrics."""
    return EvaluationDetailIn(
        run_id=run_id,
        version_id=version_id,
        dataset_id=dataset_id,
        labels=tuple(evaluation.labels),
        per_class=tuple(evaluation.per_class),
        confusion_matrix=tuple(tuple(row) for row in evaluation.confusion_matrix),
        reliability=tuple(evaluation.reliability),
        adapted_checkpoint_key=adapted.cache_key if adapted else None,
        adapted_checkpoint_path=str(adapted.model_dir) if adapted else None,
        risks=risks.to_json() if risks else None,
    )


def score_champion(context: RunContext, data: LoadedData) -> ChampionScore | None:
    """The champion's metrics on this test set (Prefect's cache has them when the champion was scored on it)."""
    registry, config = context.registry, context.config
    champion = registry.alias_version(config.name, CHAMPION)
    if champion is None:
        return None
    with stage(context, "score champion"):
        files = registry.get_version(config.name, champion.version).model_files()
        evaluation = evaluate(context, files, data.splits.test)
        return ChampionScore(champion, evaluation.headline(), files, evaluation.predictions)


def analyse_risks(context: RunContext, data: LoadedData, model: ModelFiles, evaluation: EvaluationResult,
                  champion: ChampionScore | None, classical: BaselineResult) -> RiskAnalysis:
    """The candidate's defects and risks on the test set (`tasks.risks`): slices beside the champion's (a first
    champion: the classical baseline's), flip rates under perturbation beside the champion's (cached by its files),
    and token attributions of its most confident errors and of one correct text per class."""
    config, test = context.config, data.splits.test
    with stage(context, "defects and risks"):
        started = time.perf_counter()
        flips = steps.cached(steps.flip_rates, context.workspace.results)
        champion_flips = flips(champion.files, test, config.seed) if champion else None
        reference, reference_name = ((champion.predictions, "champion") if champion
                                     else (classical.predictions, "classical baseline"))
        analysis = steps.analyse_risks(test, evaluation.predictions, data.test_columns, reference, reference_name,
                                       flips(model, test, config.seed), champion_flips, config.seed)
        analysis = replace(analysis, explanations=steps.explain_test_examples(model, test))
        return replace(analysis, seconds=round(time.perf_counter() - started, 3))


def apply_gate(
    context: RunContext, candidate: ModelVersionRecord, metrics: dict[str, float],
    champion: ChampionScore | None, classical: BaselineResult, risks: RiskAnalysis | None = None,
) -> GateOutcome:
    """Decide (with the slices and the flip rate of `risks`), record the decision with its numbers, and move the
    alias it calls for."""
    config, registry = context.config, context.registry
    with stage(context, "promotion gate"):
        # The registry's policy outranks the config: a model once made to need approval keeps needing it.
        policy = config.evaluation.model_copy(update={"require_approval": registry.requires_approval(config.name)})
        outcome = steps.decide_promotion(metrics, champion.metrics if champion else None, policy, classical.metrics,
                                         risks.slices if risks else (), risks.flip_rate if risks else None)
        registry.record_gate_decision(outcome, run_id=context.run.id, candidate_version_id=candidate.id,
                                      champion_version_id=champion.version.id if champion else None)
        if outcome.alias is not None:
            announce_alias_move(registry.set_alias(config.name, candidate.version, outcome.alias,
                                                   reason="; ".join(outcome.reasons)))
    return outcome
