"""The classical baseline: TF-IDF + logistic regression, fitted on the same split as the fine-tuned model.

It is the script a user would write in five minutes, so it says what "good" is: the promotion gate's
default floor (`evaluation.min_score: baseline`) is this model's primary metric on the same test set.
Word 1-2 grams with sublinear term frequency; C is picked from a small grid on the validation split by
the primary metric; the test metrics use the same definitions as `tasks.evaluate`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.errors import BadInputError
from core.vocabulary import CLASSICAL_BASELINE_PREFIX
from tasks.classifier import accuracy_and_macro_f1, labelled_rows, training_labels

if TYPE_CHECKING:
    from tasks.data import Splits

C_GRID = (0.1, 1.0, 10.0, 100.0)
MAX_ITER = 2_000
HEADLINE = ("macro_f1", "accuracy")


@dataclass(frozen=True)
class BaselineResult:
    metrics: dict[str, float]  # on the test set: macro_f1, accuracy
    c: float  # the inverse regularisation strength chosen on the validation split
    validation_scores: dict[float, float]  # C -> the primary metric on the validation split
    seconds: float  # vectorising, fitting the grid, choosing C and scoring the test set
    labels: list[str]
    predictions: list[str]  # on the test set's labelled rows, in order (the slices' first reference)

    def registry_metrics(self) -> dict[str, float]:
        """The scalars recorded against the run and the test set."""
        return {
            **{f"{CLASSICAL_BASELINE_PREFIX}{name}": value for name, value in self.metrics.items()},
            f"{CLASSICAL_BASELINE_PREFIX}c": self.c,
            f"{CLASSICAL_BASELINE_PREFIX}seconds": self.seconds,
        }


def fit_classical_baseline(splits: Splits, primary_metric: str) -> BaselineResult:
    """Fit TF-IDF + logistic regression on the training split for each C in the grid, keep the one with the best
    `primary_metric` on validation (the smaller C on a tie), and score it on test. No seed: L-BFGS on this
    convex loss is deterministic."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    if primary_metric not in HEADLINE:
        raise BadInputError(f"the classical baseline has no '{primary_metric}' metric (has: {', '.join(HEADLINE)})")
    started = time.perf_counter()
    labels = training_labels(splits.train)
    train_texts, truth = labelled_rows(splits.train, labels)
    val_texts, val_truth = labelled_rows(splits.validation, labels)
    test_texts, test_truth = labelled_rows(splits.test, labels)

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    features = vectorizer.fit_transform(train_texts)
    val_features, test_features = vectorizer.transform(val_texts), vectorizer.transform(test_texts)
    with threadpool_limits(limits=1):  # sparse and small: BLAS threads only contend (10x slower on 2 busy cores)
        fits = [(c, LogisticRegression(C=c, max_iter=MAX_ITER).fit(features, truth))
                for c in C_GRID]
    scores = {c: _metrics(val_truth, model.predict(val_features).tolist())[primary_metric] for c, model in fits}
    c, model = max(fits, key=lambda fit: scores[fit[0]])  # the first maximum: the smaller C on a tie
    predicted = model.predict(test_features).tolist()
    metrics = _metrics(test_truth, predicted)
    return BaselineResult(metrics, c, scores, time.perf_counter() - started, labels, [labels[i] for i in predicted])


def _metrics(truth: list[int], predicted: list[int]) -> dict[str, float]:
    accuracy, macro_f1 = accuracy_and_macro_f1(truth, predicted)
    return {"macro_f1": macro_f1, "accuracy": accuracy}
