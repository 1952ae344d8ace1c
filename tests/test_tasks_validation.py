"""The Great Expectations suite: a clean table passes; each broken rule fails with its observed value."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ValidationConfig
from tasks.data import TextTable, make_table
from tasks.validation import ValidationReport, validate_table

CONFIG = ValidationConfig(
    min_rows=10, max_null_fraction=0.0, max_duplicate_fraction=0.1, text_length={"min": 3, "max": 200},
    min_examples_per_label=3,  # test_too_few_rows' 6 rows have 3 of each label
)


def table(texts: list[str | None], labels: list[str | None] | None, role: str = "train") -> TextTable:
    return make_table(role, Path(f"{role}.csv"), texts, labels, {"text": "object", "label": "object"})


def clean_rows(count: int = 20) -> tuple[list[str | None], list[str | None]]:
    return [f"ticket number {i} about a login error" for i in range(count)], [
        ["a", "b"][i % 2] for i in range(count)
    ]


def validate(
    data: TextTable, allowed: list[str] | None = None, config: ValidationConfig = CONFIG
) -> ValidationReport:
    return validate_table(data, config, allowed, "text", "label")


def failing(report: ValidationReport) -> dict[str, object]:
    return {outcome.expectation: outcome.observed for outcome in report.failed()}


def test_a_clean_table_passes_every_expectation() -> None:
    texts, labels = clean_rows()
    report = validate(table(texts, labels), ["a", "b"])
    assert report.success, report.summary_lines()
    assert report.role == "train" and report.rows == 20
    assert report.fingerprint == table(texts, labels).fingerprint
    assert {o.expectation for o in report.outcomes} == {
        "expect_column_to_exist",
        "expect_table_row_count_to_be_between",
        "expect_column_values_to_not_be_null",
        "expect_column_value_lengths_to_be_between",
        "expect_column_proportion_of_unique_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_value_counts_to_be_at_least",
    }
    assert report.failed() == [] and report.summary_lines() == []


def test_short_and_long_texts_fail_the_length_rule_with_counts() -> None:
    texts, labels = clean_rows()
    texts[0], texts[1] = "ok", "x" * 201
    report = validate(table(texts, labels))
    assert failing(report) == {"expect_column_value_lengths_to_be_between": 10.0}
    assert report.summary_lines() == ["train: text length between 3 and 200 — 2 rows outside (10.0%), first at row 1"]


def test_nulls_fail_for_text_and_label_columns() -> None:
    texts, labels = clean_rows()
    texts[3], labels[4], labels[5] = None, None, None
    report = validate(table(texts, labels))
    nulls = {
        o.column: o.observed
        for o in report.failed()
        if o.expectation == "expect_column_values_to_not_be_null"
    }
    assert nulls == {"text": 5.0, "label": 10.0}
    assert "train: label nulls at most 0.0% — 2 null rows (10.0%)" in report.summary_lines()


def test_null_tolerance_follows_max_null_fraction() -> None:
    texts, labels = clean_rows()
    texts[3] = None
    lenient = CONFIG.model_copy(update={"max_null_fraction": 0.1})
    assert validate(table(texts, labels), config=lenient).success


def test_test_labels_unseen_in_training_fail() -> None:
    texts, labels = clean_rows()
    labels[0], labels[1] = "c", "zzz"
    report = validate(table(texts, labels, role="test"), allowed=["a", "b"])
    [outcome] = report.failed()
    assert outcome.expectation == "expect_column_values_to_be_in_set"
    assert outcome.observed == 10.0 and outcome.details["unexpected_count"] == 2
    assert report.summary_lines() == ["test: label in {a, b} — 2 rows with other labels (10.0%): c, zzz"]


def test_config_allowed_labels_take_precedence_over_the_callers() -> None:
    texts, labels = clean_rows()
    config = CONFIG.model_copy(update={"allowed_labels": ["a"]})
    assert not validate(table(texts, labels), allowed=["a", "b"], config=config).success


def test_too_few_rows() -> None:
    texts, labels = clean_rows(6)
    report = validate(table(texts, labels))
    assert failing(report) == {"expect_table_row_count_to_be_between": 6}
    assert report.summary_lines() == ["train: at least 10 rows — 6 rows"]


def test_duplicates_beyond_the_allowed_fraction() -> None:
    texts, labels = clean_rows()
    texts[10:15] = [texts[0]] * 5  # 5 of 20 rows repeat another: 25% duplicates
    report = validate(table(texts, labels))
    [outcome] = report.failed()
    assert outcome.expectation == "expect_column_proportion_of_unique_values_to_be_between"
    assert outcome.observed == pytest.approx(0.75)
    assert report.summary_lines() == [
        "train: text duplicates at most 10.0% — duplicate fraction 25.0% (unique proportion 0.750)"
    ]


def test_a_table_without_its_label_column_fails_the_column_check() -> None:
    texts, _ = clean_rows()
    report = validate(table(texts, None, role="test"), allowed=["a", "b"])
    [outcome] = report.failed()
    assert (outcome.expectation, outcome.column) == ("expect_column_to_exist", "label")
    assert report.summary_lines() == ["test: column 'label' present — missing"]


def test_a_training_label_with_too_few_rows_is_named_with_its_count() -> None:
    texts, labels = clean_rows()
    texts.append("please refund my last invoice")
    labels.append("refund")
    report = validate(table(texts, labels), config=CONFIG.model_copy(update={"min_examples_per_label": 5}))
    [outcome] = report.failed()
    assert (outcome.expectation, outcome.column) == ("expect_column_value_counts_to_be_at_least", "label")
    assert outcome.observed == {"a": 10, "b": 10, "refund": 1}
    assert report.summary_lines() == [
        "train: label at least 5 training rows per label — "
        "label 'refund' has 1 training row (min_examples_per_label 5)"
    ]


def test_every_short_label_is_named_rarest_first_and_nulls_do_not_count() -> None:
    texts, labels = clean_rows()
    labels[:3] = [None, "c", "d"]
    labels[3] = "c"  # a and b keep 8 rows each
    config = CONFIG.model_copy(update={"max_null_fraction": 0.1, "min_examples_per_label": 8})
    report = validate(table(texts, labels), config=config)
    assert report.summary_lines() == [
        "train: label at least 8 training rows per label — label 'd' has 1 training row (min_examples_per_label 8); "
        "label 'c' has 2 training rows (min_examples_per_label 8)"
    ]


def test_only_the_training_set_needs_examples_of_every_label() -> None:
    texts, labels = clean_rows()
    labels[0] = "c"
    config = CONFIG.model_copy(update={"min_examples_per_label": 5})
    assert validate(table(texts, labels, role="test"), allowed=["a", "b", "c"], config=config).success
    assert validate(table(texts, labels, role="validation"), allowed=["a", "b", "c"], config=config).success
    assert not validate(table(texts, labels, role="train"), allowed=["a", "b", "c"], config=config).success
