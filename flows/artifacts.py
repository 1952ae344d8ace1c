"""What a run shows in the Prefect UI: markdown and table artifacts keyed by model name."""

from __future__ import annotations

import re

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from core.results import GateOutcome
from core.vocabulary import CLASSICAL_BASELINE_NAME
from tasks.validation import ValidationReport


def artifact_key(model_name: str, kind: str) -> str:
    """Prefect keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{model_name}-{kind}".lower()).strip("-")


def publish_validation(model_name: str, reports: list[ValidationReport]) -> None:
    rows = [
        {
            "dataset": report.role,
            "expectation": outcome.expectation,
            "column": outcome.column or "",
            "success": outcome.success,
            "observed": str(outcome.observed),
        }
        for report in reports
        for outcome in report.outcomes
    ]
    create_table_artifact(
        table=rows, key=artifact_key(model_name, "validation"),
        description=f"Great Expectations results for {model_name}",
    )


def publish_metrics(
    model_name: str, metrics: dict[str, float], champion: dict[str, float] | None,
    classical_baseline: dict[str, float] | None = None,
) -> None:
    classical = classical_baseline or {}
    rows = [
        {
            "metric": name,
            "candidate": round(value, 4),
            "champion": round(champion[name], 4) if champion and name in champion else None,
            "delta": round(value - champion[name], 4) if champion and name in champion else None,
            "classical baseline": round(classical[name], 4) if name in classical else None,
        }
        for name, value in sorted(metrics.items())
    ]
    create_table_artifact(
        table=rows, key=artifact_key(model_name, "metrics"),
        description=f"Test metrics of the {model_name} candidate against the champion and the classical "
                    f"baseline ({CLASSICAL_BASELINE_NAME})",
    )


def publish_gate_decision(model_name: str, version: int, outcome: GateOutcome) -> None:
    champion = "none" if outcome.champion_score is None else f"{outcome.champion_score:.4f}"
    lines = [
        f"# Gate decision for {model_name} v{version}: **{outcome.outcome}**",
        "",
        "| primary metric | candidate | champion | floor |",
        "|---|---|---|---|",
        f"| {outcome.primary_metric} | {outcome.candidate_score:.4f} | {champion} | "
        f"{outcome.min_score:.4f} ({outcome.floor_source}) |",
        "",
        *[f"- {reason}" for reason in outcome.reasons],
    ]
    create_markdown_artifact(
        markdown="\n".join(lines), key=artifact_key(model_name, "gate"),
        description=f"Promotion gate for {model_name} v{version}",
    )


def publish_report(model_name: str, version: int, markdown: str) -> None:
    """The audit report in markdown, so the Prefect UI shows it beside the run."""
    create_markdown_artifact(
        markdown=markdown, key=artifact_key(model_name, "audit-report"),
        description=f"Audit report of {model_name} v{version}",
    )
