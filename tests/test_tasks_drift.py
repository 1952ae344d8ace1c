"""The class-mix match behind prior-shift judgment: the reference resampled to the current predicted mix."""

from __future__ import annotations

import pandas as pd

from tasks.drift import PREDICTION, ScoredBatch, class_matched


def batch(counts: dict[str, int]) -> ScoredBatch:
    labels = [label for label, count in counts.items() for _ in range(count)]
    texts = [f"t{i}" for i in range(len(labels))]
    return ScoredBatch.of_frame("test", len(labels), pd.DataFrame({PREDICTION: labels, "text": texts}))


def test_the_reference_takes_the_current_mix_with_as_many_rows_as_its_rarest_share_allows() -> None:
    reference = batch({"a": 300, "b": 300, "c": 300})
    current = batch({"a": 600, "b": 300, "c": 100})  # 60% / 30% / 10%
    matched = class_matched(reference, current)
    shares = matched.frame[PREDICTION].value_counts(normalize=True).round(2).to_dict()
    assert shares == {"a": 0.6, "b": 0.3, "c": 0.1}
    assert matched.rows_scored == 500  # 300 "a" rows at a 60% share
    assert matched.frame["text"].is_unique  # drawn without replacement: no row twice


def test_classes_the_reference_never_predicts_are_left_out_and_an_all_new_mix_keeps_the_reference() -> None:
    reference = batch({"a": 200, "b": 200})
    partly_new = class_matched(reference, batch({"a": 50, "b": 50, "z": 900}))
    assert set(partly_new.frame[PREDICTION]) == {"a", "b"} and partly_new.rows_scored == 400
    assert class_matched(reference, batch({"y": 10, "z": 10})) is reference


def test_a_match_that_would_leave_too_few_rows_keeps_the_whole_reference() -> None:
    reference = batch({"a": 500, "b": 20})
    assert class_matched(reference, batch({"a": 100, "b": 900})) is reference  # 20 rows at 90%: 22 in all
