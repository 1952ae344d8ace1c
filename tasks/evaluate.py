"""Evaluating a saved classifier on the test set: quality, calibration and speed."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from steward.errors import BadInputError
from steward.scores import ClassScore, ReliabilityBin
from tasks.classifier import (
    Classifier,
    accuracy_and_macro_f1,
    batched_logits,
    clip_text,
    encode,
    load_saved_classifier,
    require_known_labels,
)
from tasks.modeling import Device, pick_device, quiet_transformers

if TYPE_CHECKING:
    import torch

    from tasks.data import TextTable

ECE_BINS = 15
LATENCY_SAMPLE = 50


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
            "throughput_per_s": self.throughput_per_s,
        }


@task(name="evaluate", retries=0, cache_policy=NO_CACHE)
def evaluate_model(
    model_dir: Path, test: TextTable, max_seq_length: int, batch_size: int = 64
) -> EvaluationResult:
    """Score the classifier saved in `model_dir` on the labelled rows of `test`."""
    quiet_transformers()
    device = pick_device()
    classifier = load_saved_classifier(Path(model_dir), max_seq_length, device)
    texts, labels = test.complete_rows()
    if not texts:
        raise BadInputError(f"{test.source}: the {test.role} set has no rows with both text and label")
    require_known_labels(test, labels, classifier.labels)
    class_ids = {label: index for index, label in enumerate(classifier.labels)}
    truth = [class_ids[label] for label in labels]
    started = time.perf_counter()
    logits, _ = batched_logits(classifier, encode(classifier, texts), batch_size, device)
    throughput = len(texts) / (time.perf_counter() - started)
    probabilities = classifier.probabilities(logits)
    predicted = probabilities.argmax(dim=-1).tolist()
    accuracy, macro_f1 = accuracy_and_macro_f1(truth, predicted)
    p50, p95 = single_example_latency_ms(classifier, texts[:LATENCY_SAMPLE], device)
    return EvaluationResult(
        labels=classifier.labels,
        examples=len(texts),
        accuracy=accuracy,
        macro_f1=macro_f1,
        per_class=per_class_metrics(truth, predicted, classifier.labels),
        confusion_matrix=confusion(truth, predicted, len(classifier.labels)),
        ece=expected_calibration_error(probabilities, truth),
        ece_uncalibrated=expected_calibration_error(logits.softmax(dim=-1), truth),
        temperature=classifier.temperature,
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        throughput_per_s=throughput,
        predictions=[classifier.labels[index] for index in predicted],
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


def single_example_latency_ms(
    classifier: Classifier, texts: list[str], device: Device
) -> tuple[float, float]:
    """p50 and p95 of tokenise + forward for one example at a time (after one warm-up call)."""
    import torch

    model, tokenizer = classifier.model, classifier.tokenizer
    model.eval()
    timings = []
    with torch.no_grad():
        for index, text in enumerate([texts[0], *texts]):
            started = time.perf_counter()
            clipped = clip_text(text, classifier.max_length)
            batch = tokenizer(clipped, truncation=True, max_length=classifier.max_length, return_tensors="pt")
            with device.autocast():
                model(**batch.to(device.torch_device))
            if device.torch_device.type == "cuda":
                torch.cuda.synchronize()
            if index > 0:
                timings.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(timings), _percentile(timings, 95)


def _percentile(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * percent / 100.0
    low, high = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
