"""Slices: how a classifier does on the parts of its test set a reviewer cares about, beside a reference model.

A better average can hide a collapse on one part of the data: one source, short texts, one class. Each slice gets
its own score with a bootstrap 95% interval over its rows, and the same score of a reference model (the champion,
or for a first champion the classical baseline) on the same rows, so the gate can refuse a candidate that falls
too far below it on any slice large enough to judge (`evaluation.min_slice_rows`, `max_slice_drop`).

The slices are each class (scored by that class's F1 over the whole test set: a slice holding one true class has
no macro-F1 worth the name), the quartiles of text length in characters, and each value of the columns the user
names in `data.slice_columns` (macro-F1 over the slice's rows). The confusion pairs most often wrong are listed with
examples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

import numpy as np

RESAMPLES = 1_000
CLASS, LENGTH = "class", "length"
MACRO_F1, F1 = "macro_f1", "f1"


@dataclass(frozen=True)
class Slice:
    kind: str  # "class", "length", or the slice column's name
    value: str  # the class, the length range, or the column's value
    rows: tuple[int, ...]  # indices into the test set's labelled rows

    @property
    def name(self) -> str:
        return f"{self.kind}={self.value}"


@dataclass(frozen=True)
class SliceScore:
    kind: str
    value: str
    rows: int  # the slice's rows (a class: its test support)
    metric: str  # "f1" for a class, "macro_f1" otherwise
    score: float
    ci_low: float
    ci_high: float
    reference: float | None = None  # the reference model's score on the same rows
    reference_name: str | None = None  # "champion" or "classical baseline"

    @property
    def name(self) -> str:
        return f"{self.kind}={self.value}"

    @property
    def drop(self) -> float | None:
        """How far the score falls below the reference's (negative: above it)."""
        return None if self.reference is None else self.reference - self.score

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "name": self.name, "drop": self.drop}


@dataclass(frozen=True)
class ConfusionPair:
    true_label: str
    predicted: str
    count: int
    examples: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"true": self.true_label, "predicted": self.predicted, "count": self.count,
                "examples": list(self.examples)}


def slices_of(texts: Sequence[str], truth: Sequence[str], columns: dict[str, Sequence[str | None]]) -> list[Slice]:
    """Each class, each length quartile, and each value of each named column (a missing value is its own slice,
    "(missing)"); every list is aligned with the test set's labelled rows."""
    slices = [Slice(CLASS, label, tuple(i for i, y in enumerate(truth) if y == label)) for label in sorted(set(truth))]
    slices += _length_quartiles(texts)
    for column, values in columns.items():
        named = ["(missing)" if value is None else str(value) for value in values]
        slices += [Slice(column, value, tuple(i for i, v in enumerate(named) if v == value))
                   for value in sorted(set(named))]
    return slices


def _length_quartiles(texts: Sequence[str]) -> list[Slice]:
    """Four slices split at the quartiles of the character length (ties keep a length in one slice)."""
    lengths = np.array([len(text) for text in texts])
    edges = np.quantile(lengths, [0.25, 0.5, 0.75]).round().astype(int).tolist()
    bounds = sorted(set([int(lengths.min()) - 1, *edges, int(lengths.max())]))
    slices = []
    for low, high in pairwise(bounds):
        rows = tuple(int(i) for i in np.flatnonzero((lengths > low) & (lengths <= high)))
        if rows:
            slices.append(Slice(LENGTH, f"{low + 1}–{high} chars", rows))
    return slices


def score_slices(slices: Sequence[Slice], truth: Sequence[str], predicted: Sequence[str],
                 reference: Sequence[str] | None = None, reference_name: str | None = None,
                 seed: int = 0) -> list[SliceScore]:
    """Each slice's score and bootstrap interval (the same resamples for every slice, seeded), and the reference
    model's score on the same rows when its predictions are given."""
    labels = sorted(set(truth) | set(predicted) | set(reference or ()))
    ids = {label: index for index, label in enumerate(labels)}
    true_ids, predicted_ids = _ids(truth, ids), _ids(predicted, ids)
    reference_ids = None if reference is None else _ids(reference, ids)
    rng = np.random.default_rng(seed)
    scores = []
    for piece in slices:
        if piece.kind == CLASS:
            rows, metric = np.arange(len(truth)), F1
            score_of = _class_f1(ids[piece.value])
        else:
            rows, metric = np.array(piece.rows), MACRO_F1
            score_of = _macro_f1(len(labels))
        samples = _bootstrap(score_of, true_ids[rows], predicted_ids[rows], rng)
        low, high = np.nanpercentile(samples, [2.5, 97.5])
        point = float(score_of(true_ids[rows][None], predicted_ids[rows][None])[0])
        ref = None if reference_ids is None else float(score_of(true_ids[rows][None], reference_ids[rows][None])[0])
        scores.append(SliceScore(piece.kind, piece.value, len(piece.rows), metric, point, float(low), float(high),
                                 ref, reference_name if ref is not None else None))
    return scores


def _ids(labels: Sequence[str], ids: dict[str, int]) -> np.ndarray:
    return np.array([ids[label] for label in labels], dtype=np.int64)


def _resample(rng: np.random.Generator, rows: int) -> np.ndarray:
    return rng.integers(0, rows, size=(RESAMPLES, rows))


def _bootstrap(score_of: Any, truth: np.ndarray, predicted: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RESAMPLES scores of the slice's rows drawn with replacement."""
    draws = _resample(rng, len(truth))
    return score_of(truth[draws], predicted[draws])


def _counts(truth: np.ndarray, predicted: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, ...]:
    """True positives, false positives and false negatives per resample (rows) and class (columns)."""
    is_true = [truth == c for c in classes]
    is_predicted = [predicted == c for c in classes]
    tp = np.stack([(t & p).sum(1) for t, p in zip(is_true, is_predicted, strict=True)], 1)
    fp = np.stack([(~t & p).sum(1) for t, p in zip(is_true, is_predicted, strict=True)], 1)
    fn = np.stack([(t & ~p).sum(1) for t, p in zip(is_true, is_predicted, strict=True)], 1)
    return tp, fp, fn


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """F1 per class; NaN for a class neither true nor predicted in a sample (sklearn leaves such a class out)."""
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, np.nan)


def _macro_f1(classes: int) -> Any:
    def score(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.nanmean(_f1(*_counts(truth, predicted, range(classes))), axis=1)
    return score


def _class_f1(class_id: int) -> Any:
    def score(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        return np.nan_to_num(_f1(*_counts(truth, predicted, [class_id]))[:, 0])
    return score


def confusion_pairs(texts: Sequence[str], truth: Sequence[str], predicted: Sequence[str], top: int = 5,
                    examples: int = 3) -> list[ConfusionPair]:
    """The (true, predicted) pairs most often wrong, each with its first few texts."""
    wrong = [(y, p) for y, p in zip(truth, predicted, strict=True) if y != p]
    pairs = []
    for (true_label, label), count in Counter(wrong).most_common(top):
        shown = tuple(t for t, y, p in zip(texts, truth, predicted, strict=True) if (y, p) == (true_label, label))
        pairs.append(ConfusionPair(true_label, label, count, shown[:examples]))
    return pairs
