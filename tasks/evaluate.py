"""Evaluating a saved classifier on the test set: quality, calibration and speed."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.results import ClassScore, ReliabilityBin
from tasks.classifier import (
    Scorer,
    TorchScorer,
    accuracy_and_macro_f1,
    calibrated,
    labelled_rows,
    load_saved_classifier,
)
from tasks.modeling import pick_device, quiet_transformers

if TYPE_CHECKING:
    import torch

    from core.hashing import ModelFiles
    from tasks.data import TextTable

ECE_BINS = 15
LATENCY_SAMPLE = 50  # timed single-text forward passes
LATENCY_BATCH, LATENCY_BATCHES = 32, 20  # and timed forward passes of 32 texts
BATCH_SIZE = 64


@dataclass(frozen=True)
class EvaluationResult:
    labels: list[str]  # the model's classes, in class-id order (rows/columns of the confusion matrix)
    examples: int
    accuracy: float
    macro_f1: float
    per_class: list[ClassScore]
    confusion_matrix: list[list[int]]  # [true class][predicted class]
    ece: float  # expected calibration error, 15 equal-width confidence bins, after temperature scaling
    ece_uncalibrated: float  # the same with temperature 1 (the raw softmax)
    temperature: float
    latency_p50_ms: float  # one example per forward pass
    latency_p95_ms: float
    batch_latency_p50_ms: float  # 32 examples per forward pass
    throughput_per_s: float  # examples per second over the batched pass (tokenising included)
    predictions: list[str]
    reliability: list[ReliabilityBin] = field(default_factory=list)  # the non-empty ECE bins

    def headline(self) -> dict[str, float]:
        """The scalar metrics recorded in the registry."""
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "ece": self.ece,
            "ece_uncalibrated": self.ece_uncalibrated,
            "temperature": self.temperature,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "batch_latency_p50_ms": self.batch_latency_p50_ms,
            "throughput_per_s": self.throughput_per_s,
        }


def evaluate_model(model: ModelFiles, test: TextTable, batch_size: int = BATCH_SIZE) -> EvaluationResult:
    """Score the classifier (PyTorch, fp32) in `model`'s folder, once its files are verified, on the labelled
    rows of `test`."""
    quiet_transformers()
    device = pick_device()
    scorer = TorchScorer(load_saved_classifier(model.verified(), device), device)
    return evaluate_scorer(scorer, test, batch_size)


def evaluate_scorer(scorer: Scorer, test: TextTable, batch_size: int = BATCH_SIZE) -> EvaluationResult:
    """Score any form of a classifier on the labelled rows of `test`: the one evaluation every form gets."""
    texts, truth = labelled_rows(test, scorer.labels)
    started = time.perf_counter()
    logits = scorer.logits(texts, batch_size)
    throughput = len(texts) / (time.perf_counter() - started)
    probabilities = calibrated(logits, scorer.temperature)
    predicted = probabilities.argmax(dim=-1).tolist()
    accuracy, macro_f1 = accuracy_and_macro_f1(truth, predicted)
    p50, p95 = latency_ms(scorer, texts[:LATENCY_SAMPLE], 1)
    batch_p50, _ = latency_ms(scorer, texts[: LATENCY_BATCHES * LATENCY_BATCH], LATENCY_BATCH)
    return EvaluationResult(
        labels=scorer.labels,
        examples=len(texts),
        accuracy=accuracy,
        macro_f1=macro_f1,
        per_class=per_class_metrics(truth, predicted, scorer.labels),
        confusion_matrix=confusion(truth, predicted, len(scorer.labels)),
        ece=expected_calibration_error(probabilities, truth),
        ece_uncalibrated=expected_calibration_error(logits.softmax(dim=-1), truth),
        temperature=scorer.temperature,
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        batch_latency_p50_ms=batch_p50,
        throughput_per_s=throughput,
        predictions=[scorer.labels[index] for index in predicted],
        reliability=reliability_bins(probabilities, truth),
    )


def per_class_metrics(truth: list[int], predicted: list[int], labels: list[str]) -> list[ClassScore]:
    from sklearn.metrics import precision_recall_fscore_support

    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=ids, zero_division=0
    )
    return [
        ClassScore(labels[i], float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
        for i in ids
    ]


def confusion(truth: list[int], predicted: list[int], classes: int) -> list[list[int]]:
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(truth, predicted, labels=list(range(classes))).tolist()


def expected_calibration_error(probabilities: torch.Tensor, truth: list[int], bins: int = ECE_BINS) -> float:
    """Σ over equal-width confidence bins of |accuracy − mean confidence| × share of examples."""
    import torch

    confidence, predicted = probabilities.max(dim=-1)
    correct = predicted.eq(torch.tensor(truth)).float()
    bin_of = torch.clamp((confidence * bins).long(), max=bins - 1)  # confidence 1.0 goes in the top bin
    error = 0.0
    for index in range(bins):
        members = bin_of.eq(index)
        if members.any():
            gap = correct[members].mean() - confidence[members].mean()
            error += float(gap.abs()) * float(members.float().mean())
    return error


def reliability_bins(probabilities: torch.Tensor, truth: list[int], bins: int = ECE_BINS) -> list[ReliabilityBin]:
    """The non-empty equal-width confidence bins that `expected_calibration_error` sums over."""
    import torch

    confidence, predicted = probabilities.max(dim=-1)
    correct = predicted.eq(torch.tensor(truth)).float()
    bin_of = torch.clamp((confidence * bins).long(), max=bins - 1)
    found = []
    for index in range(bins):
        members = bin_of.eq(index)
        if members.any():
            found.append(ReliabilityBin(
                lower=index / bins,
                upper=(index + 1) / bins,
                count=int(members.sum()),
                mean_confidence=float(confidence[members].mean()),
                accuracy=float(correct[members].mean()),
            ))
    return found


def latency_ms(scorer: Scorer, texts: list[str], batch_size: int) -> tuple[float, float]:
    """p50 and p95 of tokenise + forward of `batch_size` texts at a time (after one warm-up call)."""
    batches = [texts[start : start + batch_size] for start in range(0, len(texts), batch_size)]
    timings = []
    for index, batch in enumerate([batches[0], *batches]):
        started = time.perf_counter()
        scorer.logits(batch, batch_size)
        if index > 0:
            timings.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(timings), _percentile(timings, 95)


def _percentile(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * percent / 100.0
    low, high = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
