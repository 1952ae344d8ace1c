"""The monitoring flow: drift of a current batch against what the champion was trained on.

The reference is the champion's own training set, rebuilt from its run's config snapshot and
checked against the fingerprint the registry recorded, so drift is always measured against the
data the deployed model learned from. The scored reference is cached per champion.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event

from flows.artifacts import artifact_key
from flows.context import RunContext, flow_run, stage
from flows.stages import VALIDATION_SPLIT_FRACTION, recorded_hashes
from governance.registry import DriftReportIn, ModelVersionDetail, Registry
from steward.config import StewardConfig
from steward.errors import BadInputError
from tasks.data import TextTable, load_table, split_validation
from tasks.drift import DriftResult, DriftSignal, ScoredBatch, compare_batches, score_batch
from tasks.modeling import verify_files

DRIFT_EVENT = "steward.drift.detected"


def model_resource_id(model_name: str) -> str:
    """The Prefect event resource a model's drift events are about (retrain triggers match it)."""
    return f"steward.model.{model_name}"


@dataclass(frozen=True)
class MonitorOutcome:
    """What `steward monitor --json` prints."""

    run_id: str
    model: str
    champion_version: int
    drift_detected: bool
    drift_share: float
    threshold: float
    drifted_signals: list[str]
    signals: list[DriftSignal]
    current: str
    current_rows: int
    current_scored: int
    reference_rows: int
    reference_scored: int
    report: str
    seconds: float


def champion_of(registry: Registry, model_name: str) -> ModelVersionDetail:
    champion = registry.alias_version(model_name, "champion")
    if champion is None:
        raise BadInputError(
            f"model '{model_name}' has no champion to monitor yet: run `steward run` first (or promote a version)"
        )
    return registry.get_version(model_name, champion.version)


def current_batch_path(config: StewardConfig, current_path: str | None) -> Path:
    """--current as given (relative to the working directory), else the config's monitoring.current."""
    if current_path:
        return Path(current_path).resolve()
    if config.monitoring.current is None:
        raise BadInputError("no batch to monitor: pass --current PATH or set monitoring.current in the config")
    return config.resolve(config.monitoring.current)


def load_batch(path: Path, config: StewardConfig, role: str) -> TextTable:
    """The batch's texts, with labels when the file has the label column (production text usually has none)."""
    table = load_table.fn(path, config.data.text_column, None, role)
    if config.data.label_column in table.schema:
        return load_table.fn(path, config.data.text_column, config.data.label_column, role)
    return table


def training_reference(detail: ModelVersionDetail) -> TextTable:
    """The champion's training rows, rebuilt as its run built them and checked against the registry."""
    recorded = detail.datasets.get("train")
    if recorded is None:
        raise BadInputError(f"{detail.version.model_name} v{detail.version.version}: no training dataset recorded")
    data = detail.run.config["data"]
    table = load_table.fn(Path(recorded.source), data["text_column"], data["label_column"], "reference")
    if data.get("validation") is None:
        table, _ = split_validation(table, VALIDATION_SPLIT_FRACTION, detail.run.seed)
    if table.fingerprint != recorded.fingerprint:
        raise BadInputError(
            f"{recorded.source}: changed since {detail.version.model_name} v{detail.version.version} was trained "
            f"on it (fingerprint {table.fingerprint[:12]} ≠ recorded {recorded.fingerprint[:12]}); drift needs the "
            "champion's training data as reference"
        )
    return table


def scored_reference(context: RunContext, detail: ModelVersionDetail) -> ScoredBatch:
    """The champion's reference sample with features, from the cache when this champion was scored before."""
    config = context.config
    key = hashlib.sha256(json.dumps({
        "files": recorded_hashes(detail),
        "train": detail.datasets["train"].fingerprint,
        "sample_size": config.monitoring.sample_size,
        "seed": config.seed,
        "max_seq_length": config.finetuning.max_seq_length,
    }, sort_keys=True).encode()).hexdigest()[:24]
    cache = context.workspace.root / "cache" / "drift" / f"{key}.parquet"
    cached = ScoredBatch.load(cache)
    if cached is not None:
        return cached
    batch = score_batch(
        training_reference(detail), Path(detail.version.artifact_path), config.monitoring.sample_size,
        config.seed, config.finetuning.max_seq_length,
    )
    batch.save(cache)
    return batch


def check_drift(context: RunContext, detail: ModelVersionDetail, current_path: Path) -> DriftResult:
    config = context.config
    with stage(context, "load current batch"):
        current = load_batch(current_path, config, "current")
    with stage(context, "score batches"):
        verify_files(Path(detail.version.artifact_path), recorded_hashes(detail))
        reference = scored_reference(context, detail)
        scored = score_batch(
            current, Path(detail.version.artifact_path), config.monitoring.sample_size, config.seed,
            config.finetuning.max_seq_length,
        )
    with stage(context, "drift report"):
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        report_path = context.workspace.reports_dir(config.name) / f"drift-{stamp}-{context.run.id[:8]}.html"
        result = compare_batches(reference, scored, config.monitoring.drift_share_threshold, report_path)
        context.registry.record_drift_report(DriftReportIn(
            model_name=config.name,
            drift_detected=result.drift_detected,
            drift_share=result.drift_share,
            report_path=str(result.report_path),
            details=_details(result, current_path),
            run_id=context.run.id,
            version_id=detail.version.id,
        ))
    return result


def _details(result: DriftResult, current_path: Path) -> dict[str, object]:
    return {
        "current": str(current_path),
        "threshold": result.threshold,
        "signals": [asdict(signal) for signal in result.signals],
        "reference_rows": result.reference_rows,
        "reference_scored": result.reference_scored,
        "current_rows": result.current_rows,
        "current_scored": result.current_scored,
    }


def publish_drift(model_name: str, champion_version: int, result: DriftResult) -> None:
    verdict = "**drift detected**" if result.drift_detected else "no drift"
    lines = [
        f"# Drift check of {model_name} (champion v{champion_version}): {verdict}",
        "",
        f"{sum(s.drifted for s in result.signals)} of {len(result.signals)} signals drifted "
        f"(share {result.drift_share:.2f}, threshold {result.threshold:.2f}); "
        f"current batch {result.current_scored:,} of {result.current_rows:,} rows scored, "
        f"reference {result.reference_scored:,} of {result.reference_rows:,}.",
        "",
        f"Evidently report: `{result.report_path}`",
    ]
    create_markdown_artifact(markdown="\n".join(lines), key=artifact_key(model_name, "drift"),
                             description=f"Drift check of {model_name}")
    create_table_artifact(
        table=[
            {"signal": s.name, "method": s.method, "score": round(s.score, 6), "drifted": s.drifted}
            for s in result.signals
        ],
        key=artifact_key(model_name, "drift-signals"), description=f"Drift signals of {model_name}",
    )


def announce_drift(model_name: str, result: DriftResult) -> None:
    """The Prefect event that drift-triggered retraining listens for."""
    emit_event(
        event=DRIFT_EVENT,
        resource={"prefect.resource.id": model_resource_id(model_name), "prefect.resource.name": model_name},
        payload={"model": model_name, "drift_share": result.drift_share, "report": str(result.report_path)},
    )


@flow(name="steward-monitor", log_prints=False)
def monitor(config_path: str, current_path: str | None = None, registry_url: str | None = None) -> MonitorOutcome:
    """Check a batch of current text for drift against the champion's training data."""
    started = time.perf_counter()
    with flow_run(config_path, registry_url, "monitor") as context:
        config = context.config
        batch_path = current_batch_path(config, current_path)
        detail = champion_of(context.registry, config.name)
        result = check_drift(context, detail, batch_path)
    publish_drift(config.name, detail.version.version, result)
    if result.drift_detected:
        announce_drift(config.name, result)
    return MonitorOutcome(
        run_id=context.run.id,
        model=config.name,
        champion_version=detail.version.version,
        drift_detected=result.drift_detected,
        drift_share=result.drift_share,
        threshold=result.threshold,
        drifted_signals=result.drifted_signals,
        signals=result.signals,
        current=str(batch_path),
        current_rows=result.current_rows,
        current_scored=result.current_scored,
        reference_rows=result.reference_rows,
        reference_scored=result.reference_scored,
        report=str(result.report_path),
        seconds=round(time.perf_counter() - started, 3),
    )
