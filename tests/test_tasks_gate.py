"""The promotion gate's decisions: floor, improvement over the champion, approval; the perplexity gate."""

from __future__ import annotations

import pytest

from core.config import EvaluationConfig
from core.errors import BadInputError
from tasks.gate import decide_language_model, decide_promotion


def policy(**overrides: object) -> EvaluationConfig:
    return EvaluationConfig(
        **{"primary_metric": "macro_f1", "min_score": 0.6, "min_improvement": 0.02, **overrides}
    )


def test_first_model_above_the_floor_is_promoted() -> None:
    outcome = decide_promotion({"macro_f1": 0.7, "accuracy": 0.8}, None, policy())
    assert (outcome.passed, outcome.outcome) == (True, "promoted")
    assert (outcome.primary_metric, outcome.candidate_score, outcome.champion_score) == (
        "macro_f1",
        0.7,
        None,
    )
    assert outcome.reasons[0] == "macro_f1 0.7000 meets the floor min_score 0.6000"


def test_below_the_floor_is_rejected_even_without_a_champion() -> None:
    outcome = decide_promotion({"macro_f1": 0.55}, None, policy())
    assert (outcome.passed, outcome.outcome) == (False, "rejected")
    assert "macro_f1 0.5500 is below the floor min_score 0.6000" in outcome.reasons


def test_a_candidate_must_beat_the_champion_by_the_margin() -> None:
    outcome = decide_promotion({"macro_f1": 0.81}, {"macro_f1": 0.80}, policy())
    assert (outcome.passed, outcome.outcome, outcome.champion_score) == (False, "rejected", 0.80)
    assert outcome.reasons[1] == (
        "macro_f1 0.8100 vs champion 0.8000: change +0.0100 falls short of "
        "the required min_improvement +0.0200"
    )
    assert decide_promotion({"macro_f1": 0.83}, {"macro_f1": 0.80}, policy()).outcome == "promoted"


def test_exactly_the_required_improvement_passes() -> None:
    assert decide_promotion(
        {"macro_f1": 0.3}, {"macro_f1": 0.1}, policy(min_score=0, min_improvement=0.2)
    ).passed
    assert decide_promotion({"macro_f1": 0.8}, {"macro_f1": 0.8}, policy(min_improvement=0.0)).passed


def test_a_passing_candidate_waits_as_challenger_when_approval_is_required() -> None:
    outcome = decide_promotion({"macro_f1": 0.9}, {"macro_f1": 0.7}, policy(require_approval=True))
    assert (outcome.passed, outcome.outcome) == (True, "challenger")
    assert outcome.reasons[-1].startswith("approval required")
    failing = decide_promotion({"macro_f1": 0.5}, None, policy(require_approval=True))
    assert failing.outcome == "rejected"


def test_the_primary_metric_chooses_the_score() -> None:
    metrics = {"macro_f1": 0.5, "accuracy": 0.9}
    assert decide_promotion(metrics, None, policy(primary_metric="accuracy")).outcome == "promoted"
    assert decide_promotion(metrics, None, policy(primary_metric="macro_f1")).outcome == "rejected"


def test_a_missing_primary_metric_is_named() -> None:
    with pytest.raises(BadInputError, match=r"the champion has no 'macro_f1' metric \(has: accuracy\)"):
        decide_promotion({"macro_f1": 0.9}, {"accuracy": 0.9}, policy())


CLASSICAL = {"macro_f1": 0.66, "accuracy": 0.70}


def test_the_default_floor_is_the_classical_baseline() -> None:
    assert EvaluationConfig().min_score == "baseline"
    below = decide_promotion({"macro_f1": 0.61}, None, policy(min_score="baseline"), CLASSICAL)
    assert (below.passed, below.outcome, below.min_score, below.floor_source) == (
        False, "rejected", 0.66, "classical baseline",
    )
    assert below.reasons[0] == "macro_f1 0.6100 is below the classical baseline (TF-IDF + LR) 0.6600"
    reached = decide_promotion({"macro_f1": 0.66}, None, policy(min_score="baseline"), CLASSICAL)
    assert (reached.passed, reached.outcome) == (True, "promoted")
    assert reached.reasons[0] == "macro_f1 0.6600 meets the classical baseline (TF-IDF + LR) 0.6600"


def test_the_baseline_floor_applies_with_a_champion_too() -> None:
    """A candidate that beats a weak champion by far is still refused below the classical baseline."""
    outcome = decide_promotion({"macro_f1": 0.62}, {"macro_f1": 0.40}, policy(min_score="baseline"), CLASSICAL)
    assert (outcome.passed, outcome.outcome) == (False, "rejected")
    assert outcome.reasons[0].endswith("is below the classical baseline (TF-IDF + LR) 0.6600")
    assert "meets the required min_improvement" in outcome.reasons[1]


def test_the_baseline_floor_follows_the_primary_metric() -> None:
    candidate = {"macro_f1": 0.5, "accuracy": 0.72}
    outcome = decide_promotion(candidate, None, policy(min_score="baseline", primary_metric="accuracy"), CLASSICAL)
    assert (outcome.passed, outcome.min_score) == (True, 0.70)


def test_a_number_floor_ignores_the_classical_baseline() -> None:
    outcome = decide_promotion({"macro_f1": 0.61}, None, policy(min_score=0.6), CLASSICAL)
    assert (outcome.passed, outcome.min_score, outcome.floor_source) == (True, 0.6, "min_score")
    assert outcome.reasons[0] == "macro_f1 0.6100 meets the floor min_score 0.6000"


def test_the_baseline_floor_needs_the_baseline() -> None:
    with pytest.raises(ValueError, match="needs the classical baseline's metrics"):
        decide_promotion({"macro_f1": 0.9}, None, policy(min_score="baseline"))
    with pytest.raises(BadInputError, match="the classical baseline has no 'macro_f1' metric"):
        decide_promotion({"macro_f1": 0.9}, None, policy(min_score="baseline"), {"accuracy": 0.5})


def test_a_language_model_needs_its_gain_interval_above_zero_and_little_forgetting() -> None:
    policy = EvaluationConfig(min_perplexity_gain=0.05, max_forgetting=0.10)
    passed = decide_language_model(18.0, 24.0, 0.2, 0.04, None, policy)
    assert (passed.outcome, passed.floor_source, passed.min_score) == ("promoted", "base model", pytest.approx(22.8))
    noisy = decide_language_model(18.0, 24.0, -0.01, 0.04, None, policy)
    assert noisy.outcome == "rejected" and "falls short of" in noisy.reasons[0]
    forgetful = decide_language_model(18.0, 24.0, 0.2, 0.11, None, policy)
    assert forgetful.outcome == "rejected" and "above max_forgetting" in forgetful.reasons[1]
    not_better = decide_language_model(18.0, 24.0, 0.2, 0.04, 17.5, policy)
    assert not_better.outcome == "rejected" and "not lower" in not_better.reasons[2]
