"""The monitoring flow: drift of a current batch against what "normal" looks like for the champion.

The reference is, by default, the champion's test split (`monitoring.reference`: test, validation, train
or a file): users resample and balance training sets, while the test set is the one meant to look like
production. A split is rebuilt from its run's config snapshot and checked against the fingerprint the
registry recorded; the scored reference is kept in Prefect's task cache per champion and reference data.

A finding of drift (or of prior shift, with `monitoring.retrain_on_prior_shift`) asks for a retrain by
emitting the Prefect event the retrain deployment listens for, at most once per drift episode and
champion, and not again within `monitoring.cooldown` of the champion's last request: a retrain that gives
no new champion does not set off another on the same episode.

A causal-lm champion (its manifest's task) is checked on its own terms (`tasks.lm_drift`): batches are read as its
corpus is (a folder of .txt/.md files, a .txt of one document per line, the text column of a table); a recorded split
is rebuilt by splitting the recorded corpus by document as its run did; both batches are scored with the champion's
per-document losses (the reference from Prefect's cache, where its own run left its test split's scores); the
signals are its perplexity increase and two text descriptors (length, non-letter share), with no embeddings and no
class mix, so there is no class-mix report (`MonitorOutcome.class_mix_report` is ""). A drifted perplexity is drift on
its own. The retrain decision and its records are the same for both kinds of model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event

from core.config import SERVED, StewardConfig, parse_duration, resolve_registry_url
from core.errors import BadInputError
from core.results import DriftResult, DriftSignal
from core.vocabulary import CAUSAL_LM, CHAMPION, DriftFindingName, RetrainDecisionName
from flows import steps
from flows.artifacts import artifact_key
from flows.context import RunContext, flow_run, stage
from flows.events import DRIFT_EVENT, model_resource_id
from flows.stages import VALIDATION_SPLIT_FRACTION
from governance.prediction_log import PredictionLog
from governance.registry import DatasetRecord, DriftReportRecord, ModelVersionDetail, Registry
from tasks.data import TextTable, make_table, split_documents, split_validation
from tasks.drift import COVARIATE, PRIOR, ScoredBatch, class_mix_report_path
from tasks.lm_drift import ScoredDocuments, sample_documents
from tasks.manifest import MANIFEST_FILE, ModelManifest
from tasks.modeling import resolve_base_model


@dataclass(frozen=True)
class MonitorOutcome:
    """What `steward monitor --json` prints."""

    run_id: str
    model: str
    champion_version: int
    finding: DriftFindingName
    drift_detected: bool  # finding == "drift"
    retrain: RetrainDecisionName
    drift_share: float
    threshold: float
    drifted_signals: list[str]
    signals: list[DriftSignal]
    reference: str
    current: str
    current_rows: int
    current_scored: int
    reference_rows: int
    reference_scored: int
    covariate_reference_rows: int  # reference rows the input signals used (fewer when matched to the class mix)
    report: str  # Evidently report of the input signals
    class_mix_report: str  # Evidently report of the class-mix signals; "" for a language model, which has no classes
    seconds: float


def champion_of(registry: Registry, model_name: str) -> ModelVersionDetail:
    champion = registry.alias_version(model_name, CHAMPION)
    if champion is None:
        raise BadInputError(
            f"model '{model_name}' has no champion to monitor yet: run `steward run` first (or promote a version)"
        )
    return registry.get_version(model_name, champion.version)


def current_batch_path(config: StewardConfig, current_path: str | None) -> Path | None:
    """--current as given (relative to the working directory), else the config's monitoring.current; None
    for `served` (the prediction log)."""
    if current_path:
        return None if current_path == SERVED else Path(current_path).resolve()
    if config.monitoring.current is None:
        raise BadInputError("no batch to monitor: pass --current PATH or set monitoring.current in the config")
    return None if config.monitoring.current_is_served else config.resolve(config.monitoring.current)


@dataclass(frozen=True)
class ServedWindow:
    """Where `--current served` reads: the prediction log's database and how far back."""

    log_url: str
    since: timedelta


def served_batch(config: StewardConfig, window: ServedWindow) -> TextTable:
    """The texts model servers answered for this model in the window, from the prediction log."""
    start = datetime.now(UTC) - window.since
    source = f"served:{config.name}@{start:%Y-%m-%dT%H:%M:%SZ}"
    with PredictionLog.open(window.log_url) as log:
        rows = log.window_texts(config.name, start)
    if not rows:
        raise BadInputError(f"{source}: no predictions of {config.name} were served since {start:%Y-%m-%d %H:%M} "
                            f"UTC ({log.url}), so there is nothing to monitor")
    texts: list[str | None] = [text for text in rows if text is not None]
    if not texts:
        raise BadInputError(f"{source}: the prediction log holds no texts (serving.log_text: false); drift "
                            "needs them")
    return make_table("current", Path(source), texts, None, {"text": "object"})


def window_of(since: str | None, config: StewardConfig) -> timedelta:
    """--since ('24h', '30m', '7d' or seconds) or serving.window."""
    if since is None:
        return config.serving.window
    window = parse_duration(since)
    if not isinstance(window, timedelta) or window <= timedelta(0):
        raise BadInputError(f"--since '{since}' is not a duration (for example 90s, 30m, 24h, 7d)")
    return window


def is_language_model(detail: ModelVersionDetail) -> bool:
    """Whether the champion is a causal language model, as its manifest says. A folder without one is left to the
    classifier's path, whose loader names what is missing once it verifies the recorded files."""
    folder = Path(detail.version.artifact_path)
    return (folder / MANIFEST_FILE).is_file() and ModelManifest.read(folder).task == CAUSAL_LM


def load_batch(path: Path, config: StewardConfig, role: str, documents: bool = False) -> TextTable:
    """The batch's texts, with labels when the file has the label column (production text usually has none); a
    language model's batch (`documents`) is read as its corpus is, unlabelled."""
    if documents:
        if not path.exists():  # said here: the corpus reader would call it corpus data
            raise BadInputError(f"{path}: file not found ({role} data)")
        return replace(steps.load_documents(path, config.data.text_column), role=role)
    table = steps.load_table(path, config.data.text_column, None, role)
    if config.data.label_column in table.schema:
        return steps.load_table(path, config.data.text_column, config.data.label_column, role)
    return table


def recorded_dataset(detail: ModelVersionDetail, role: str) -> DatasetRecord:
    recorded = detail.datasets.get(role)
    if recorded is None:
        raise BadInputError(f"{detail.version.model_name} v{detail.version.version}: no {role} dataset recorded "
                            f"(monitoring.reference: {role})")
    return recorded


def recorded_split(detail: ModelVersionDetail, role: str) -> TextTable:
    """The champion's `role` split (train, validation or test), rebuilt as its run built it and checked
    against the fingerprint the registry recorded."""
    recorded = recorded_dataset(detail, role)
    name = f"{detail.version.model_name} v{detail.version.version}"
    table = rebuilt_split(detail, Path(recorded.source), role)
    if table.fingerprint != recorded.fingerprint:
        raise BadInputError(
            f"{recorded.source}: changed since {name} was trained on it (fingerprint {table.fingerprint[:12]} ≠ "
            f"recorded {recorded.fingerprint[:12]}); drift needs the champion's {role} data as reference"
        )
    return table


def rebuilt_split(detail: ModelVersionDetail, source: Path, role: str) -> TextTable:
    """The split from its recorded source, by the champion's run's config snapshot: a causal-lm corpus split by
    document; a classifier's split file, its train or validation split off the train file when the run named no
    validation file."""
    config, seed = detail.run.config, detail.run.seed
    data = config["data"]
    if config.get("task") == CAUSAL_LM:
        corpus = steps.load_documents(source, data["text_column"])
        splits = split_documents(corpus, data["corpus_validation"], data["corpus_test"], seed)
        return {"train": splits.train, "validation": splits.validation, "test": splits.test}[role]
    table = steps.load_table(source, data["text_column"], data["label_column"], "reference")
    if role in ("train", "validation") and data.get("validation") is None:
        train, validation = split_validation(table, VALIDATION_SPLIT_FRACTION, seed)
        return train if role == "train" else validation
    return table


def reference_table(config: StewardConfig, detail: ModelVersionDetail, documents: bool = False) -> TextTable:
    """What normal looks like (`monitoring.reference`): a recorded split of the champion, or a file (read as
    documents for a language model)."""
    split = config.monitoring.reference_split
    if split is not None:
        return recorded_split(detail, split)
    return load_batch(config.resolve(Path(config.monitoring.reference)), config, "reference", documents)


def scored_reference(context: RunContext, detail: ModelVersionDetail) -> ScoredBatch:
    """The reference sample with features, from Prefect's cache when this champion scored this data before."""
    monitoring = context.config.monitoring
    score = steps.cached(steps.score_reference, context.workspace.results)
    return score(reference_table(context.config, detail), detail.model_files(), monitoring.sample_size,
                 context.config.seed)


# Scored batches, ready to compare: the drift check that writes its Evidently report to the path it is given.
Comparison = Callable[[Path], DriftResult]


def classifier_comparison(context: RunContext, detail: ModelVersionDetail, current: TextTable) -> Comparison:
    """A classifier's batches with descriptors, embeddings and predictions (`tasks.drift`)."""
    config = context.config
    reference = scored_reference(context, detail)
    scored = steps.score_current(current, detail.model_files(), config.monitoring.sample_size, config.seed)
    return lambda report_path: steps.compare_batches(reference, scored, config.monitoring.drift_share_threshold,
                                                     report_path)


def language_model_comparison(context: RunContext, detail: ModelVersionDetail, current: TextTable) -> Comparison:
    """A language model's batches with the champion's per-document losses (`tasks.lm_drift`), each batch sampled
    as a classifier's is. The reference's losses come from Prefect's cache when this champion scored this sample
    before (keyed by its recorded file hashes and the sample's fingerprint): the default reference, the whole test
    split, was scored by the champion's own run, with the same length and base."""
    config, monitoring = context.config, context.config.monitoring
    champion = detail.model_files()
    champion.verified()  # cached scores are keyed by the recorded hashes: the files must still be those
    manifest = ModelManifest.read(champion.folder)
    base_dir = (str(resolve_base_model(manifest.base_model, config.workdir, config.allow_pickle))
                if manifest.adapter and manifest.base_model else None)
    score_cached = steps.cached(steps.score_documents, context.workspace.results)
    reference = reference_table(config, detail, documents=True)
    reference_sample = sample_documents(reference, monitoring.sample_size, config.seed)
    current_sample = sample_documents(current, monitoring.sample_size, config.seed)
    reference_scores = ScoredDocuments.of(
        reference, reference_sample, score_cached(champion, reference_sample, manifest.max_length, base_dir))
    current_scores = ScoredDocuments.of(
        current, current_sample, steps.score_current_documents(champion, current_sample, manifest.max_length, base_dir))
    return lambda report_path: steps.compare_documents(reference_scores, current_scores,
                                                       monitoring.max_perplexity_increase,
                                                       monitoring.drift_share_threshold, report_path)


def retrain_decision(
    history: list[DriftReportRecord], version_id: int, wants_retrain: bool, cooldown: timedelta, now: datetime,
) -> RetrainDecisionName:
    """Whether this check asks for a retrain: not when the finding does not call for one, not twice in one
    episode (the champion's checks since its last clean one), not within `cooldown` of the last request."""
    if not wants_retrain:
        return "not_needed"
    clean_check_since = False
    for report in reversed([report for report in history if report.version_id == version_id]):
        if report.retrain == "requested":
            if not clean_check_since:
                return "same_episode"
            requested_at = report.created_at.replace(tzinfo=report.created_at.tzinfo or UTC)
            return "cooldown" if now - requested_at < cooldown else "requested"
        clean_check_since = clean_check_since or report.finding == "none"
    return "requested"


@dataclass(frozen=True)
class DriftCheck:
    result: DriftResult
    retrain: RetrainDecisionName
    current_source: Path  # the batch's file, or `served:NAME@SINCE` for the prediction log's window


def check_drift(context: RunContext, detail: ModelVersionDetail, current_path: Path | None,
                window: ServedWindow) -> DriftCheck:
    """Score both batches, compare them, decide on a retrain, and record it all."""
    config = context.config
    language_model = is_language_model(detail)
    with stage(context, "load current batch"):
        current = (load_batch(current_path, config, "current", language_model) if current_path is not None else
                   served_batch(config, window))
    with stage(context, "score batches"):
        comparison = language_model_comparison if language_model else classifier_comparison
        compare = comparison(context, detail, current)
    with stage(context, "drift report"):
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        report_path = context.workspace.reports_dir(config.name) / f"drift-{stamp}-{context.run.id[:8]}.html"
        result = compare(report_path)
        wants_retrain = result.drift_detected or (result.prior_shift and config.monitoring.retrain_on_prior_shift)
        retrain = retrain_decision(context.registry.drift_reports(config.name), detail.version.id, wants_retrain,
                                   config.monitoring.cooldown, datetime.now(UTC))
        context.registry.record_drift_report(
            result, model_name=config.name, retrain=retrain, current=str(current.source),
            reference=config.monitoring.reference, run_id=context.run.id, version_id=detail.version.id,
        )
    return DriftCheck(result, retrain, current.source)


FINDING_HEADLINES = {"drift": "**drift detected**", "prior_shift": "**prior shift** (the class mix changed)",
                     "none": "no drift"}
RETRAIN_SENTENCES = {
    "requested": "A retrain was requested (`steward.drift.detected`).",
    "cooldown": "No retrain: this champion asked for one less than `monitoring.cooldown` ago.",
    "same_episode": "No retrain: this drift episode already asked this champion for one.",
    "not_needed": "No retrain needed.",
}


def class_mix_report_of(result: DriftResult) -> Path | None:
    """The Evidently report of the class-mix signals, beside the inputs' one; None for a check without them (a
    language model's)."""
    has_class_mix = any(signal.kind == PRIOR for signal in result.signals)
    return class_mix_report_path(result.report_path) if has_class_mix else None


def publish_drift(model_name: str, champion_version: int, check: DriftCheck) -> None:
    result = check.result
    covariate = [signal for signal in result.signals if signal.kind == COVARIATE]
    class_mix = [signal.name for signal in result.signals if signal.kind == PRIOR and signal.drifted]
    class_mix_report = class_mix_report_of(result)
    class_mix_line = f"; class-mix signals drifted: {', '.join(class_mix) or 'none'}" if class_mix_report else ""
    lines = [
        f"# Drift check of {model_name} (champion v{champion_version}): {FINDING_HEADLINES[result.finding]}",
        "",
        f"{sum(s.drifted for s in covariate)} of {len(covariate)} input signals drifted "
        f"(share {result.drift_share:.2f}, threshold {result.threshold:.2f}){class_mix_line}. "
        f"Current batch {result.current_scored:,} of {result.current_rows:,} rows scored, "
        f"reference {result.reference_scored:,} of {result.reference_rows:,}{_matched_note(result)}.",
        "",
        RETRAIN_SENTENCES[check.retrain],
        "",
        f"Evidently reports: `{result.report_path}` (inputs)"
        + (f", `{class_mix_report}` (class mix)" if class_mix_report else ""),
    ]
    create_markdown_artifact(markdown="\n".join(lines), key=artifact_key(model_name, "drift"),
                             description=f"Drift check of {model_name}")
    create_table_artifact(
        table=[
            {"signal": s.name, "kind": s.kind, "method": s.method, "effect": round(s.effect, 6),
             "threshold": s.effect_threshold, "significant": s.significant, "drifted": s.drifted}
            for s in result.signals
        ],
        key=artifact_key(model_name, "drift-signals"), description=f"Drift signals of {model_name}",
    )


def _matched_note(result: DriftResult) -> str:
    if result.covariate_reference_rows == result.reference_scored:
        return ""
    return (f"; the input signals compared with {result.covariate_reference_rows:,} reference rows resampled to "
            "the current predicted class mix")


def announce_drift(model_name: str, result: DriftResult) -> None:
    """The Prefect event that drift-triggered retraining listens for."""
    emit_event(
        event=DRIFT_EVENT,
        resource={"prefect.resource.id": model_resource_id(model_name), "prefect.resource.name": model_name},
        payload={"model": model_name, "finding": result.finding, "drift_share": result.drift_share,
                 "report": str(result.report_path)},
    )


@flow(name="steward-monitor", log_prints=False)
def monitor(config_path: str, current_path: str | None = None, since: str | None = None) -> MonitorOutcome:
    """Check a batch of current text for drift against the champion's reference data."""
    started = time.perf_counter()
    with flow_run(config_path, "monitor") as context:
        config = context.config
        batch_path = current_batch_path(config, current_path)
        detail = champion_of(context.registry, config.name)
        window = ServedWindow(config.serving.log_url or resolve_registry_url(config), window_of(since, config))
        check = check_drift(context, detail, batch_path, window)
    publish_drift(config.name, detail.version.version, check)
    result = check.result
    if check.retrain == "requested":
        announce_drift(config.name, result)
    return MonitorOutcome(
        run_id=context.run.id,
        model=config.name,
        champion_version=detail.version.version,
        finding=result.finding,
        drift_detected=result.drift_detected,
        retrain=check.retrain,
        drift_share=result.drift_share,
        threshold=result.threshold,
        drifted_signals=result.drifted_signals,
        signals=result.signals,
        reference=config.monitoring.reference,
        current=str(check.current_source),
        current_rows=result.current_rows,
        current_scored=result.current_scored,
        reference_rows=result.reference_rows,
        reference_scored=result.reference_scored,
        covariate_reference_rows=result.covariate_reference_rows,
        report=str(result.report_path),
        class_mix_report=str(class_mix_report_of(result) or ""),
        seconds=round(time.perf_counter() - started, 3),
    )
