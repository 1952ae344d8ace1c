"""The classical baseline (TF-IDF + logistic regression): what the gate's default floor is made of."""

from __future__ import annotations

from pathlib import Path

import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from core.errors import BadInputError
from tasks.baseline import C_GRID, BaselineResult, fit_classical_baseline
from tasks.data import Splits, make_table
from tests.test_tasks_finetune import TEST, TRAIN, VALIDATION, tickets


@pytest.fixture(scope="module")
def baseline() -> BaselineResult:
    return fit_classical_baseline(Splits(TRAIN, VALIDATION, TEST), "macro_f1")


def test_the_baseline_learns_separable_tickets_and_reports_its_choice(baseline: BaselineResult) -> None:
    assert baseline.labels == ["billing", "login", "praise"]
    assert set(baseline.metrics) == {"macro_f1", "accuracy"}
    assert baseline.metrics["macro_f1"] > 0.9  # chance is 0.33
    assert set(baseline.validation_scores) == set(C_GRID)
    assert baseline.c in C_GRID and baseline.validation_scores[baseline.c] == max(baseline.validation_scores.values())
    assert 0.0 < baseline.seconds < 60.0
    assert baseline.registry_metrics() == {
        "classical_baseline_macro_f1": baseline.metrics["macro_f1"],
        "classical_baseline_accuracy": baseline.metrics["accuracy"],
        "classical_baseline_c": baseline.c,
        "classical_baseline_seconds": baseline.seconds,
    }


def test_test_metrics_are_sklearns_on_the_chosen_model(baseline: BaselineResult) -> None:
    """The plain script a user would write, with the C the baseline chose, scores the same."""
    train_texts, train_labels = TRAIN.complete_rows()
    test_texts, test_labels = TEST.complete_rows()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LogisticRegression(C=baseline.c, max_iter=2_000).fit(vectorizer.fit_transform(train_texts), train_labels)
    predicted = model.predict(vectorizer.transform(test_texts))
    assert baseline.metrics["accuracy"] == pytest.approx(accuracy_score(test_labels, predicted))
    assert baseline.metrics["macro_f1"] == pytest.approx(f1_score(test_labels, predicted, average="macro"))


def test_the_primary_metric_chooses_c() -> None:
    by_accuracy = fit_classical_baseline(Splits(TRAIN, VALIDATION, TEST), "accuracy")
    assert by_accuracy.validation_scores[by_accuracy.c] == max(by_accuracy.validation_scores.values())
    with pytest.raises(BadInputError, match="no 'auc' metric"):
        fit_classical_baseline(Splits(TRAIN, VALIDATION, TEST), "auc")


def test_a_test_label_unseen_in_training_is_named() -> None:
    unseen = tickets("test", 12, 4, labels=["billing", "mystery"])
    with pytest.raises(BadInputError, match="test labels not seen in training: mystery"):
        fit_classical_baseline(Splits(TRAIN, VALIDATION, unseen), "macro_f1")


def test_one_training_label_is_bad_input() -> None:
    single = make_table("train", Path("train.csv"), ["a b", "c d", None], ["x", "x", "x"], {})
    with pytest.raises(BadInputError, match=r"training needs at least two labels, found \['x'\]"):
        fit_classical_baseline(Splits(single, VALIDATION, TEST), "macro_f1")
