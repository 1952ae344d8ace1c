"""Evaluation values (and the gate's outcomes, drift findings and retrain decisions) shared by the tasks that
compute them and the registry that stores them."""

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

# What a drift check found: covariate drift, a change of the label mix alone (prior shift), or neither.
DriftFindingName = Literal["drift", "prior_shift", "none"]
DRIFT_FINDINGS: tuple[str, ...] = get_args(DriftFindingName)
# What a drift check decided about retraining: `requested` (the drift event was emitted), `cooldown` (the
# champion's last request is younger than monitoring.cooldown), `same_episode` (this drift episode already
# asked this champion for a retrain; that retrain gave no new champion), `not_needed` (no finding that retrains).
RetrainDecisionName = Literal["requested", "cooldown", "same_episode", "not_needed"]
RETRAIN_DECISIONS: tuple[str, ...] = get_args(RetrainDecisionName)

# The forms a version can be served in: the fine-tuned PyTorch model, its ONNX Runtime dynamic-int8
# quantization, and (with compression.distill) a smaller distilled student, quantized the same way.
FormName = Literal["fp32", "int8", "student"]
FORMS: tuple[str, ...] = get_args(FormName)
FP32: FormName = "fp32"
# What the compression gate made of a form: it met max_metric_drop and min_agreement (`passed`), it did not
# (`refused`), or export, quantization or its evaluation raised (`failed`). Only a passed form is served.
CompressionStatusName = Literal["passed", "refused", "failed"]
COMPRESSION_STATUSES: tuple[str, ...] = get_args(CompressionStatusName)
