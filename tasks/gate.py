"""The promotion gate: pure logic from the candidate's, the champion's and the classical baseline's
metrics and the policy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.config import BASELINE_FLOOR
from core.errors import BadInputError
from core.results import GATE_TOLERANCE, GateOutcome
from core.vocabulary import CLASSICAL_BASELINE_NAME, FloorSource, GateOutcomeName

if TYPE_CHECKING:
    from collections.abc import Sequence

    from core.config import EvaluationConfig
    from tasks.slices import SliceScore

TOLERANCE = GATE_TOLERANCE


def decide_promotion(
    candidate: dict[str, float], champion: dict[str, float] | None, policy: EvaluationConfig,
    classical_baseline: dict[str, float] | None = None, slices: Sequence[SliceScore] = (),
    flip_rate: float | None = None,
) -> GateOutcome:
    """Pass when the candidate clears the floor and beats the champion by `min_improvement`
    (candidate ≥ champion + min_improvement); with no champion only the floor applies. The floor is
    `min_score`, or with `min_score: baseline` the classical baseline's score on the same test set
    (`classical_baseline`); it applies whether or not there is a champion. Then no slice of `slices` (scored beside
    the champion's or the classical baseline's) may fall too far below its reference, and with
    `max_flip_rate` set the candidate's `flip_rate` may not exceed it."""
    metric = policy.primary_metric
    score = _score(candidate, metric, "candidate")
    champion_score = None if champion is None else _score(champion, metric, "champion")
    floor, source = _floor(policy, classical_baseline)
    checks = [_floor_check(metric, score, floor, source)]
    if champion_score is not None:
        checks.append(_improvement_check(metric, score, champion_score, policy.min_improvement))
    else:
        checks.append((True, "no champion yet: the floor alone decides"))
    checks += _slice_checks(slices, policy)
    if policy.max_flip_rate is not None and flip_rate is not None:
        ok = flip_rate <= policy.max_flip_rate + TOLERANCE
        checks.append((ok, f"flip rate under perturbation {flip_rate:.1%} {'within' if ok else 'above'} "
                           f"max_flip_rate {policy.max_flip_rate:.1%}"))
    passed, outcome, reasons = _verdict(checks, policy)
    return GateOutcome(passed=passed, outcome=outcome, primary_metric=metric, candidate_score=score,
                       champion_score=champion_score, reasons=reasons, min_score=floor, floor_source=source,
                       min_improvement=policy.min_improvement)


def _slice_checks(slices: Sequence[SliceScore], policy: EvaluationConfig) -> list[tuple[bool, str]]:
    """A failed check naming each slice of at least `min_slice_rows` rows that falls more than `max_slice_drop`
    below its reference; else one passed check saying how many slices were judged."""
    judged = [s for s in slices if s.drop is not None and s.rows >= policy.min_slice_rows]
    if not judged:
        return []
    failed = [s for s in judged if (s.drop or 0.0) > policy.max_slice_drop + TOLERANCE]
    if not failed:
        return [(True, f"no slice falls more than max_slice_drop {policy.max_slice_drop:.2f} below the "
                       f"{judged[0].reference_name}'s ({len(judged)} slices of at least {policy.min_slice_rows} rows)")]
    return [(False, f"slice {s.name} ({s.rows} rows): {s.metric} {s.score:.4f} is {s.drop:.4f} below the "
                    f"{s.reference_name}'s {s.reference:.4f}, more than max_slice_drop {policy.max_slice_drop:.2f}")
            for s in failed]


def _verdict(checks: list[tuple[bool, str]], policy: EvaluationConfig) -> tuple[bool, GateOutcomeName, list[str]]:
    """Passed when every check passed; then promoted, or challenger when approval is required."""
    passed = all(ok for ok, _ in checks)
    reasons = [reason for _, reason in checks]
    if passed and policy.require_approval:
        reasons.append("approval required: registered as challenger until someone else approves it")
    outcome: GateOutcomeName = "rejected" if not passed else "challenger" if policy.require_approval else "promoted"
    return passed, outcome, reasons


def _floor(policy: EvaluationConfig, classical_baseline: dict[str, float] | None) -> tuple[float, FloorSource]:
    if policy.min_score != BASELINE_FLOOR:
        return float(policy.min_score), "min_score"
    if classical_baseline is None:
        raise ValueError(f"min_score: {BASELINE_FLOOR} needs the classical baseline's metrics")
    return _score(classical_baseline, policy.primary_metric, "classical baseline"), "classical baseline"


def _score(metrics: dict[str, float], metric: str, whose: str) -> float:
    if metric not in metrics:
        raise BadInputError(
            f"the {whose} has no '{metric}' metric (has: {', '.join(sorted(metrics)) or 'none'})"
        )
    return float(metrics[metric])


def _floor_check(metric: str, score: float, floor: float, source: FloorSource) -> tuple[bool, str]:
    ok = score >= floor - TOLERANCE
    verdict = "meets" if ok else "is below"
    if source == "classical baseline":
        return ok, f"{metric} {score:.4f} {verdict} the classical baseline ({CLASSICAL_BASELINE_NAME}) {floor:.4f}"
    return ok, f"{metric} {score:.4f} {verdict} the floor min_score {floor:.4f}"


def _improvement_check(metric: str, score: float, champion: float, required: float) -> tuple[bool, str]:
    gain = score - champion
    ok = gain >= required - TOLERANCE
    verdict = "meets" if ok else "falls short of"
    return ok, (
        f"{metric} {score:.4f} vs champion {champion:.4f}: change {gain:+.4f} {verdict} "
        f"the required min_improvement {required:+.4f}"
    )


PERPLEXITY = "perplexity"  # a language model's primary metric: lower is better


def decide_language_model(
    perplexity: float, base_perplexity: float, gain_low: float, forgetting: float,
    champion_perplexity: float | None, policy: EvaluationConfig,
) -> GateOutcome:
    """A causal language model passes when its domain test perplexity is at least `min_perplexity_gain` below the
    base's with the gain's bootstrap interval above 0 (`gain_low`: its lower bound), its forgetting (the relative
    increase of cross-entropy on the reference texts) is at most `max_forgetting`, and, when there is a champion,
    its perplexity is lower than the champion's on the same test split."""
    ceiling = base_perplexity * (1.0 - policy.min_perplexity_gain)
    gain = 1.0 - perplexity / base_perplexity
    checks = [
        (perplexity <= ceiling + TOLERANCE and gain_low > 0.0,
         f"perplexity {perplexity:.3f} vs the base's {base_perplexity:.3f}: gain {gain:.1%} (95% interval from "
         f"{gain_low:.1%}) {'meets' if perplexity <= ceiling + TOLERANCE and gain_low > 0 else 'falls short of'} "
         f"min_perplexity_gain {policy.min_perplexity_gain:.1%} with an interval above 0"),
        (forgetting <= policy.max_forgetting + TOLERANCE,
         f"forgetting {forgetting:+.1%} (cross-entropy on the reference texts) "
         f"{'within' if forgetting <= policy.max_forgetting + TOLERANCE else 'above'} "
         f"max_forgetting {policy.max_forgetting:.1%}"),
    ]
    if champion_perplexity is None:
        checks.append((True, "no champion yet: the base model sets the ceiling"))
    else:
        better = perplexity < champion_perplexity - TOLERANCE
        checks.append((better, f"perplexity {perplexity:.3f} vs champion {champion_perplexity:.3f}: "
                               f"{'lower' if better else 'not lower'}"))
    passed, outcome, reasons = _verdict(checks, policy)
    return GateOutcome(passed=passed, outcome=outcome, primary_metric=PERPLEXITY, candidate_score=perplexity,
                       champion_score=champion_perplexity, reasons=reasons, min_score=ceiling,
                       floor_source="base model", min_improvement=0.0)
