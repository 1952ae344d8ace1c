"""Defects and risks of a classifier before it is used: slices, robustness and explanations on its test set.

`flip_rates_of` and `explain_test_examples` load a saved model themselves, so the flow can cache the champion's
flip rates by its file hashes; `analyse` puts the candidate's figures beside the reference's in one `RiskAnalysis`,
what the gate, the registry, the audit report and `steward run --json` read.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tasks.robustness import FlipRate, flip_rates
from tasks.slices import ConfusionPair, SliceScore, confusion_pairs, score_slices, slices_of

if TYPE_CHECKING:
    from collections.abc import Sequence

    from core.hashing import ModelFiles
    from tasks.data import TextTable

ROBUSTNESS_ROWS = 1_000  # test rows perturbed at most (a seeded sample of a larger test set)
EXPLAINED_ERRORS = 5  # the most confident test errors explained, beside one correct text per class


@dataclass(frozen=True)
class RiskAnalysis:
    slices: list[SliceScore]
    confusions: list[ConfusionPair]
    robustness: list[FlipRate]
    reference_robustness: list[FlipRate] | None  # the champion's, on the same perturbed texts
    explanations: list[dict[str, Any]] = field(default_factory=list)  # `tasks.explain.Explanation.to_json()` + why
    seconds: float = 0.0

    @property
    def flip_rate(self) -> float:
        """The share of perturbed texts whose label flipped, all perturbations together."""
        return next(rate.rate for rate in self.robustness if rate.perturbation == "all")

    def robustness_json(self) -> list[dict[str, Any]]:
        champion = {rate.perturbation: rate for rate in self.reference_robustness or []}
        return [{"perturbation": rate.perturbation, "rows": rate.rows, "flips": rate.flips, "rate": rate.rate,
                 "champion_rate": champion[rate.perturbation].rate if rate.perturbation in champion else None}
                for rate in self.robustness]

    def to_json(self) -> dict[str, Any]:
        """What the registry keeps and `--json` prints."""
        return {"slices": [score.to_json() for score in self.slices],
                "confusions": [pair.to_json() for pair in self.confusions],
                "robustness": self.robustness_json(), "explanations": self.explanations,
                "seconds": self.seconds}


def robustness_texts(test: TextTable, seed: int) -> list[str]:
    """The test texts perturbed: all labelled rows, or a seeded sample of ROBUSTNESS_ROWS of them."""
    texts, _ = test.complete_rows()
    if len(texts) <= ROBUSTNESS_ROWS:
        return texts
    rows = sorted(random.Random(seed).sample(range(len(texts)), ROBUSTNESS_ROWS))
    return [texts[row] for row in rows]


def flip_rates_of(model: ModelFiles, test: TextTable, seed: int) -> list[FlipRate]:
    """The saved classifier's flip rates under each perturbation of its test texts (`tasks.robustness`)."""
    from tasks.classifier import TorchScorer, load_saved_classifier
    from tasks.modeling import pick_device, quiet_transformers

    quiet_transformers()
    device = pick_device()
    scorer = TorchScorer(load_saved_classifier(model.verified(), device), device)

    def predict(texts: list[str]) -> list[str]:
        return [scorer.labels[i] for i in scorer.logits(texts, 64).argmax(dim=-1).tolist()]

    return flip_rates(robustness_texts(test, seed), predict, seed)


def explain_test_examples(model: ModelFiles, test: TextTable, errors: int = EXPLAINED_ERRORS) -> list[dict[str, Any]]:
    """Token attributions (`tasks.explain`) of the `errors` test texts the model got wrong with the highest
    confidence, and of the correct text it was surest of in each class; each with its row, true label and `kind`
    ("error" or "correct")."""
    from tasks.classifier import TorchScorer, calibrated, load_saved_classifier
    from tasks.explain import explain
    from tasks.modeling import pick_device, quiet_transformers

    quiet_transformers()
    device = pick_device()
    classifier = load_saved_classifier(model.verified(), device)
    texts, truth = test.complete_rows()
    confidence, predicted = calibrated(TorchScorer(classifier, device).logits(texts, 64),
                                       classifier.temperature).max(dim=-1)
    labels = [classifier.labels[i] for i in predicted.tolist()]
    surest = sorted(range(len(texts)), key=lambda row: -float(confidence[row]))
    wrong = [row for row in surest if labels[row] != truth[row]][:errors]
    right = {}
    for row in surest:
        if labels[row] == truth[row]:
            right.setdefault(truth[row], row)
    chosen = [(row, "error") for row in wrong] + [(row, "correct") for _, row in sorted(right.items())]
    explained = explain(classifier, [texts[row] for row, _ in chosen], device)
    return [{**explanation.to_json(), "row": row, "true": truth[row], "kind": kind}
            for (row, kind), explanation in zip(chosen, explained, strict=True)]


def analyse(test: TextTable, predictions: Sequence[str], columns: dict[str, list[str | None]],
            reference: Sequence[str], reference_name: str, robustness: list[FlipRate],
            reference_robustness: list[FlipRate] | None, seed: int) -> RiskAnalysis:
    """Slices (with the reference's score on each), confusion pairs and flip rates in one analysis; `columns` are
    the slice columns' values for every row of the test file, aligned here with its labelled rows."""
    texts, truth = test.complete_rows()
    kept = [i for i, (text, label) in enumerate(zip(test.texts, test.labels or [], strict=True))
            if text is not None and label is not None]
    aligned = {column: [values[i] for i in kept] for column, values in columns.items()}
    slices = score_slices(slices_of(texts, truth, aligned), truth, predictions, reference, reference_name, seed)
    return RiskAnalysis(slices, confusion_pairs(texts, truth, predictions), robustness, reference_robustness)
