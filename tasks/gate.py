"""The promotion gate: pure logic from the candidate's and champion's metrics and the policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE

from steward.errors import BadInputError

if TYPE_CHECKING:
    from steward.config import EvaluationConfig

TOLERANCE = 1e-9  # so 0.3 counts as 0.1 + 0.2: metric noise far below this never decides a gate

Outcome = Literal["promoted", "challenger", "rejected"]


@dataclass(frozen=True)
class GateOutcome:
    passed: bool
    outcome: Outcome  # passed → "promoted", or "challenger" when approval is required; else "rejected"
    primary_metric: str
    candidate_score: float
    champion_score: float | None
    reasons: list[str]


@task(name="promotion-gate", retries=0, cache_policy=NO_CACHE)
def decide_promotion(
    candidate: dict[str, float], champion: dict[str, float] | None, policy: EvaluationConfig
) -> GateOutcome:
    """Pass when the candidate clears `min_score` and beats the champion by `min_improvement`
    (candidate ≥ champion + min_improvement); with no champion only the floor applies."""
    metric = policy.primary_metric
    score = _score(candidate, metric, "candidate")
    champion_score = None if champion is None else _score(champion, metric, "champion")
    checks = [_floor_check(metric, score, policy.min_score)]
    if champion_score is not None:
        checks.append(_improvement_check(metric, score, champion_score, policy.min_improvement))
    else:
        checks.append((True, "no champion yet: the floor alone decides"))
    passed = all(ok for ok, _ in checks)
    reasons = [reason for _, reason in checks]
    if passed and policy.require_approval:
        reasons.append("approval required: registered as challenger until someone else approves it")
    outcome: Outcome = "rejected" if not passed else "challenger" if policy.require_approval else "promoted"
    return GateOutcome(passed, outcome, metric, score, champion_score, reasons)


def _score(metrics: dict[str, float], metric: str, whose: str) -> float:
    if metric not in metrics:
        raise BadInputError(
            f"the {whose} has no '{metric}' metric (has: {', '.join(sorted(metrics)) or 'none'})"
        )
    return float(metrics[metric])


def _floor_check(metric: str, score: float, floor: float) -> tuple[bool, str]:
    ok = score >= floor - TOLERANCE
    verdict = "meets" if ok else "is below"
    return ok, f"{metric} {score:.4f} {verdict} the floor min_score {floor:.4f}"


def _improvement_check(metric: str, score: float, champion: float, required: float) -> tuple[bool, str]:
    gain = score - champion
    ok = gain >= required - TOLERANCE
    verdict = "meets" if ok else "falls short of"
    return ok, (
        f"{metric} {score:.4f} vs champion {champion:.4f}: change {gain:+.4f} {verdict} "
        f"the required min_improvement {required:+.4f}"
    )
