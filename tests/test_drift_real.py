"""Drift detection on real domain shift (sentiment labelled sentences, Kotzias et al., KDD 2015; CC BY 4.0):
a MiniLM champion trained on Amazon flags Yelp, and half-splits of one domain rarely raise an alarm."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from steward.config import FinetuningConfig
from tasks.data import split_validation
from tasks.drift import ScoredBatch, compare_batches, score_batch
from tasks.finetune import fine_tune
from tasks.modeling import resolve_base_model
from tests.test_quality_minilm import DATA_DIR, read_domain

pytestmark = [
    pytest.mark.minilm,
    pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"{DATA_DIR} not found (set STEWARD_SHARED_DATA)"),
]
THRESHOLD = 0.3
SPLITS = 20
PARAMS = FinetuningConfig(epochs=1, batch_size=16, max_seq_length=64, learning_rate=5e-5)


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    train, validation = split_validation(read_domain("amazon_cells"), 0.1, 13)
    output = tmp_path_factory.mktemp("champion")
    fine_tune.fn(resolve_base_model("minilm"), train, validation, PARAMS, 13, output, "macro_f1")
    return output


def scored(domain: str, champion: Path) -> ScoredBatch:
    return score_batch.fn(read_domain(domain), champion, 2_000, 13, PARAMS.max_seq_length)


def test_amazon_reference_flags_yelp(champion: Path, tmp_path: Path) -> None:
    result = compare_batches.fn(scored("amazon_cells", champion), scored("yelp", champion), THRESHOLD,
                                tmp_path / "amazon-yelp.html")
    assert result.drift_detected
    assert {"text", "embedding"} <= set(result.drifted_signals)
    assert (tmp_path / "amazon-yelp.html").is_file()


def test_half_splits_of_one_domain_rarely_raise_an_alarm(champion: Path, tmp_path: Path) -> None:
    batch = scored("yelp", champion)
    flagged = 0
    for seed in range(SPLITS):
        rows = list(range(batch.rows_scored))
        random.Random(seed).shuffle(rows)
        halves = [
            ScoredBatch(batch.source, len(part), batch.frame.iloc[part].reset_index(drop=True))
            for part in (rows[: len(rows) // 2], rows[len(rows) // 2 :])
        ]
        flagged += compare_batches.fn(*halves, THRESHOLD, tmp_path / f"split{seed}.html").drift_detected
    assert flagged <= SPLITS // 10  # false-positive rate at most 10%
