"""Values computed by one layer and kept by another: a task computes them, the registry stores them as they are
(each table converts itself from and to them, `governance/models.py`), reports and commands show them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.vocabulary import CHALLENGER, CHAMPION, DriftFindingName, FloorSource, GateOutcomeName

GATE_TOLERANCE = 1e-9  # so 0.3 counts as 0.1 + 0.2: metric noise far below this never decides a gate


@dataclass(frozen=True)
class ClassScore:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability diagram: predictions whose confidence lies in [lower, upper)."""

    lower: float
    upper: float
    count: int
    mean_confidence: float
    accuracy: float


@dataclass(frozen=True)
class GateOutcome:
    """The promotion gate's decision (`tasks.gate.decide_promotion`) with the numbers it was made on."""

    passed: bool
    outcome: GateOutcomeName  # passed → "promoted", or "challenger" when approval is required; else "rejected"
    primary_metric: str
    candidate_score: float
    champion_score: float | None
    reasons: list[str]
    min_score: float  # the floor in effect: the configured number, or the classical baseline's score
    floor_source: FloorSource
    min_improvement: float

    @property
    def alias(self) -> str | None:
        """The alias the decision moves to the candidate: champion, challenger, or none."""
        return {"promoted": CHAMPION, "challenger": CHALLENGER}.get(self.outcome)


@dataclass(frozen=True)
class DriftSignal:
    """One signal's verdict: drifted when its effect reaches the threshold and its test is significant."""

    name: str
    kind: str  # "covariate" (the inputs) or "prior" (the class mix)
    method: str  # the effect size and the test, as Evidently names them
    effect: float
    effect_threshold: float
    significant: bool
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """What a drift check (`tasks.drift.compare_batches`) found."""

    drift_detected: bool  # covariate drift: the inputs changed
    prior_shift: bool  # the class mix changed and the inputs did not
    drift_share: float  # share of the covariate signals that drifted
    threshold: float
    signals: list[DriftSignal]
    reference_rows: int
    reference_scored: int
    current_rows: int
    current_scored: int
    covariate_reference_rows: int  # reference rows the input signals compared with (fewer when class-matched)
    report_path: Path  # the Evidently report of the input signals; the class-mix one is beside it

    @property
    def drifted_signals(self) -> list[str]:
        return [signal.name for signal in self.signals if signal.drifted]

    @property
    def finding(self) -> DriftFindingName:
        return "drift" if self.drift_detected else "prior_shift" if self.prior_shift else "none"


def weakest_slice(slices: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Of `tasks.risks.RiskAnalysis.to_json()`'s slices, the one furthest below its reference (None: no reference)."""
    compared = [piece for piece in slices if piece["drop"] is not None]
    return max(compared, key=lambda piece: piece["drop"]) if compared else None


def overall_flip_rate(robustness: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Of `tasks.risks.RiskAnalysis.robustness_json()`, the row of all perturbations together."""
    return next((rate for rate in robustness if rate["perturbation"] == "all"), None)
