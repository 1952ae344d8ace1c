"""The promotion gate's decisions: floor, improvement over the champion, approval."""

from __future__ import annotations

import pytest

from steward.config import EvaluationConfig
from steward.errors import BadInputError
from tasks.gate import decide_promotion


def policy(**overrides: object) -> EvaluationConfig:
    return EvaluationConfig(
        **{"primary_metric": "macro_f1", "min_score": 0.6, "min_improvement": 0.02, **overrides}
    )


def test_first_model_above_the_floor_is_promoted() -> None:
    outcome = decide_promotion.fn({"macro_f1": 0.7, "accuracy": 0.8}, None, policy())
    assert (outcome.passed, outcome.outcome) == (True, "promoted")
    assert (outcome.primary_metric, outcome.candidate_score, outcome.champion_score) == (
        "macro_f1",
        0.7,
        None,
    )
    assert outcome.reasons[0] == "macro_f1 0.7000 meets the floor min_score 0.6000"


def test_below_the_floor_is_rejected_even_without_a_champion() -> None:
    outcome = decide_promotion.fn({"macro_f1": 0.55}, None, policy())
    assert (outcome.passed, outcome.outcome) == (False, "rejected")
    assert "macro_f1 0.5500 is below the floor min_score 0.6000" in outcome.reasons


def test_a_candidate_must_beat_the_champion_by_the_margin() -> None:
    outcome = decide_promotion.fn({"macro_f1": 0.81}, {"macro_f1": 0.80}, policy())
    assert (outcome.passed, outcome.outcome, outcome.champion_score) == (False, "rejected", 0.80)
    assert outcome.reasons[1] == (
        "macro_f1 0.8100 vs champion 0.8000: change +0.0100 falls short of "
        "the required min_improvement +0.0200"
    )
    assert decide_promotion.fn({"macro_f1": 0.83}, {"macro_f1": 0.80}, policy()).outcome == "promoted"


def test_exactly_the_required_improvement_passes() -> None:
    assert decide_promotion.fn(
        {"macro_f1": 0.3}, {"macro_f1": 0.1}, policy(min_score=0, min_improvement=0.2)
    ).passed
    assert decide_promotion.fn({"macro_f1": 0.8}, {"macro_f1": 0.8}, policy(min_improvement=0.0)).passed


def test_a_passing_candidate_waits_as_challenger_when_approval_is_required() -> None:
    outcome = decide_promotion.fn({"macro_f1": 0.9}, {"macro_f1": 0.7}, policy(require_approval=True))
    assert (outcome.passed, outcome.outcome) == (True, "challenger")
    assert outcome.reasons[-1].startswith("approval required")
    failing = decide_promotion.fn({"macro_f1": 0.5}, None, policy(require_approval=True))
    assert failing.outcome == "rejected"


def test_the_primary_metric_chooses_the_score() -> None:
    metrics = {"macro_f1": 0.5, "accuracy": 0.9}
    assert decide_promotion.fn(metrics, None, policy(primary_metric="accuracy")).outcome == "promoted"
    assert decide_promotion.fn(metrics, None, policy(primary_metric="macro_f1")).outcome == "rejected"


def test_a_missing_primary_metric_is_named() -> None:
    with pytest.raises(BadInputError, match=r"the champion has no 'macro_f1' metric \(has: accuracy\)"):
        decide_promotion.fn({"macro_f1": 0.9}, {"accuracy": 0.9}, policy())
