"""What the audit report reads: reliability bins, evaluation details, alias history, run metrics and the
config's `card:` block; and the report of a version that has none of the richer records."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.config import parse_config
from core.errors import BadInputError
from core.results import GateOutcome
from governance.records import ClassScore, EvaluationDetailIn, ReliabilityBin
from governance.registry import Registry
from reports.audit import write_report
from tasks.evaluate import expected_calibration_error, reliability_bins
from tests.conftest import ActAs
from tests.test_registry import MODEL, SHA_A, event_types, register, start_run


def detail_for(version_id: int, run_id: str, **overrides: object) -> EvaluationDetailIn:
    values = {
        "run_id": run_id,
        "version_id": version_id,
        "dataset_id": None,
        "labels": ("billing", "praise"),
        "per_class": (ClassScore("billing", 0.75, 1.0, 0.857, 3), ClassScore("praise", 1.0, 0.5, 0.667, 2)),
        "confusion_matrix": ((3, 0), (1, 1)),
        "reliability": (ReliabilityBin(0.6, 0.6 + 1 / 15, 4, 0.62, 0.75), ReliabilityBin(0.8, 0.87, 1, 0.81, 1.0)),
        "adapted_checkpoint_key": SHA_A,
        "adapted_checkpoint_path": "/cache/pretrain/" + SHA_A,
    }
    return EvaluationDetailIn(**{**values, **overrides})


def test_reliability_bins_by_hand_and_consistent_with_ece() -> None:
    probabilities = torch.tensor([[0.6, 0.4], [0.6, 0.4], [0.05, 0.95], [0.05, 0.95], [0.5, 0.5]])
    truth = [0, 1, 1, 1, 1]
    bins = reliability_bins(probabilities, truth)
    assert [(round(b.lower, 4), b.count, b.accuracy) for b in bins] == [
        (0.4667, 1, 0.0), (0.6, 2, 0.5), (0.9333, 2, 1.0),
    ]
    assert [b.mean_confidence for b in bins] == pytest.approx([0.5, 0.6, 0.95])
    assert all(b.lower <= b.mean_confidence < b.upper for b in bins)
    from_bins = sum(abs(b.accuracy - b.mean_confidence) * b.count for b in bins) / len(truth)
    assert from_bins == pytest.approx(expected_calibration_error(probabilities, truth))


def test_evaluation_detail_round_trip_and_audit(registry: Registry) -> None:
    version = register(registry)
    assert registry.evaluation(version.id) is None
    stored = registry.record_evaluation(detail_for(version.id, version.run_id))

    assert registry.evaluation(version.id) == stored
    assert stored.labels == ("billing", "praise") and stored.examples == 5
    assert stored.per_class[1] == ClassScore("praise", 1.0, 0.5, 0.667, 2)
    assert stored.confusion_matrix == ((3, 0), (1, 1))
    assert stored.reliability[0] == ReliabilityBin(0.6, 0.6 + 1 / 15, 4, 0.62, 0.75)
    assert stored.adapted_checkpoint_key == SHA_A and stored.created_at.tzinfo is not None
    (event,) = [e for e in registry.audit.events(f"{MODEL}:1") if e.event_type == "evaluation_recorded"]
    assert (event.payload["examples"], event.payload["adapted_checkpoint_key"]) == (5, SHA_A)
    assert len(event.payload["sha256"]) == 64 and registry.audit.verify().ok


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"labels": ("billing", "billing")}, "distinct"),
        ({"labels": ("praise", "billing")}, "labels' order"),
        ({"confusion_matrix": ((3, 0),)}, "2x2"),
        ({"confusion_matrix": ((3, -1), (1, 1))}, "non-negative"),
        ({"adapted_checkpoint_key": "latest"}, "sha256"),
        ({"reliability": (ReliabilityBin(0.6, 0.7, 4, float("nan"), 0.75),)}, "finite"),
    ],
)
def test_bad_evaluation_details_are_refused(registry: Registry, overrides: dict, message: str) -> None:
    version = register(registry)
    with pytest.raises(BadInputError, match=message):
        registry.record_evaluation(detail_for(version.id, version.run_id, **overrides))
    assert registry.evaluation(version.id) is None
    assert "evaluation_recorded" not in event_types(registry)


def test_alias_history_and_run_metrics(registry: Registry, act_as: ActAs) -> None:
    first, second = register(registry), register(registry)
    with act_as("carol") as carol:
        carol.promote(MODEL, 1, reason="first")
    with act_as("dave") as dave:
        dave.promote(MODEL, 2)
    with act_as("erin") as erin:
        erin.rollback(MODEL, reason="regression")
    moves = registry.alias_history(MODEL)
    assert [(m.version, m.previous_version, m.action, m.actor, m.reason) for m in moves] == [
        (1, None, "promote", "carol", "first"),
        (2, 1, "promote", "dave", ""),
        (1, 2, "rollback", "erin", "regression"),
    ]
    assert moves[0].created_at <= moves[2].created_at

    run = start_run(registry)
    registry.log_metrics(run_id=run.id, metrics={"pretrain_steps": 4.0, "pretrain_cache_hit": 0.0})
    registry.log_metrics(run_id=run.id, metrics={"pretrain_steps": 6.0})
    registry.log_metrics(run_id=run.id, metrics={"macro_f1": 0.9}, version_id=second.id)
    registry.log_curve(run_id=run.id, key="pretrain_loss", points=[(1, 2.0), (2, 1.5)])
    assert registry.run_metrics(run.id) == {"pretrain_steps": 6.0, "pretrain_cache_hit": 0.0}
    assert registry.run_metrics(first.run_id) == {}


def test_card_block_is_optional_and_strict(tmp_path: Path) -> None:
    base = {"name": "m", "data": {"train": "t.csv", "test": "t.csv"}}
    assert parse_config(base, "c.yaml", tmp_path).card.intended_use == ""
    config = parse_config({**base, "card": {"intended_use": "triage", "limitations": ["English only"]}},
                          "c.yaml", tmp_path)
    assert config.snapshot()["card"] == {
        "intended_use": "triage", "limitations": ["English only"], "out_of_scope": [], "contact": None,
    }
    with pytest.raises(BadInputError, match=r"unknown key 'card.limitation' \(did you mean 'limitations'\?\)"):
        parse_config({**base, "card": {"limitation": ["x"]}}, "c.yaml", tmp_path)


def test_report_of_a_bare_version_says_what_is_missing(registry: Registry, tmp_path: Path) -> None:
    register(registry)
    page = write_report(registry, MODEL, 1, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "NOT GATED" in page
    assert page.count("No evaluation details were recorded for this version") == 2
    assert "No training curves were recorded" in page and "No validation results" in page
    assert "not stated: add card.intended_use to the config" in page
    assert "<svg" not in page


def _gated_version(registry: Registry, min_score: object, metrics: dict[str, float]) -> None:
    """A version whose run fitted the classical baseline and whose gate refused it (no champion)."""
    config = {"name": MODEL, "evaluation": {"primary_metric": "macro_f1", "min_score": min_score}}
    run = registry.start_run(kind="retrain", model_name=MODEL, seed=13, code_version="abc123", package_versions={},
                             config=config)
    version = registry.register_version(model_name=MODEL, run_id=run.id, artifact_path="/nonexistent",
                                        files={"model.safetensors": SHA_A}, base_model="minilm")
    registry.log_metrics(run_id=run.id, version_id=version.id, metrics=metrics)
    classical = {"macro_f1": 0.66, "accuracy": 0.7, "c": 10.0, "seconds": 1.3}
    registry.log_metrics(run_id=run.id, metrics={f"classical_baseline_{k}": v for k, v in classical.items()})
    floor, source = (0.66, "classical baseline") if min_score == "baseline" else (float(min_score), "min_score")
    outcome = GateOutcome(
        passed=False, outcome="rejected", primary_metric="macro_f1", candidate_score=metrics["macro_f1"],
        champion_score=None, reasons=["macro_f1 0.6100 is below the classical baseline (TF-IDF + LR) 0.6600",
                                      "no champion yet"],
        min_score=floor, floor_source=source, min_improvement=0.0,
    )
    registry.record_gate_decision(outcome, run_id=run.id, candidate_version_id=version.id, champion_version_id=None)


def test_report_shows_the_classical_baseline_beside_the_model_and_the_floor_it_set(
    registry: Registry, tmp_path: Path,
) -> None:
    _gated_version(registry, "baseline", {"macro_f1": 0.61, "accuracy": 0.75, "ece": 0.04, "ece_uncalibrated": 0.19})
    page = write_report(registry, MODEL, 1, tmp_path / "r.md", fmt="md").read_text(encoding="utf-8")
    assert ("- **Gate numbers:** macro_f1 0.6100 vs no champion to beat; floor 0.6600 = the classical baseline "
            "(TF-IDF + LR), required improvement 0.0") in page
    assert ("- **Classical baseline:** TF-IDF + LR on the same split: macro_f1 0.6600, accuracy 0.7000 "
            "(C=10, fitted in 1.3s)") in page
    assert "- macro_f1 0.6100 is below the classical baseline (TF-IDF + LR) 0.6600" in page
    assert "- classical baseline (TF-IDF + LR, same split): macro_f1 0.6600, accuracy 0.7000" in page
    assert ("| metric | this version | champion | delta | classical baseline (TF-IDF + LR) | vs baseline |"
            in page)
    assert "| macro_f1 | 0.6100 | — | — | 0.6600 | -0.0500 |" in page
    assert "| accuracy | 0.7500 | — | — | 0.7000 | +0.0500 |" in page
    assert "| ece | 0.0400 | — | — | — | — |" in page
    assert "It was the gate's floor (evaluation.min_score: baseline)." in page
    assert "*ECE before and after calibration*" in page
    assert "| before calibration (temperature 1) | 0.1900 |" in page
    assert "| after temperature scaling | 0.0400 |" in page
    assert "| change | -0.1500 |" in page
    html = write_report(registry, MODEL, 1, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<caption>ECE before and after calibration</caption>" in html and "vs baseline" in html


def test_report_without_baseline_or_uncalibrated_ece_leaves_them_out(registry: Registry, tmp_path: Path) -> None:
    register(registry)
    page = write_report(registry, MODEL, 1, tmp_path / "r.md", fmt="md").read_text(encoding="utf-8")
    assert "- **Classical baseline:** not recorded for this run" in page
    assert "vs baseline" not in page and "ECE before and after calibration" not in page


def test_a_number_floor_reads_as_the_number(registry: Registry, tmp_path: Path) -> None:
    _gated_version(registry, 0.7, {"macro_f1": 0.61, "ece": 0.04})
    page = write_report(registry, MODEL, 1, tmp_path / "r.md", fmt="md").read_text(encoding="utf-8")
    assert "vs no champion to beat; floor 0.7, required improvement 0.0" in page
    assert "The gate's floor was the configured number, not the baseline." in page
    assert "ECE before and after calibration" not in page
