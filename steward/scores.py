"""Evaluation values (and the gate's outcomes) shared by the tasks that compute them and the registry that
stores them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args


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


GateOutcomeName = Literal["promoted", "challenger", "rejected"]  # the gate's outcomes, defined here only
GATE_OUTCOMES: tuple[str, ...] = get_args(GateOutcomeName)

CLASSICAL_BASELINE_NAME = "TF-IDF + LR"  # the classical baseline, as reasons and reports name it
CLASSICAL_BASELINE_PREFIX = "classical_baseline_"  # its run metrics: classical_baseline_macro_f1, _accuracy, _c, ...
