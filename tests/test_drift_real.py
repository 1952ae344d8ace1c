"""Drift detection on real domain shift (sentiment labelled sentences, Kotzias et al., KDD 2015; CC BY 4.0):
a MiniLM champion trained on Amazon flags Yelp, and half-splits of one domain rarely raise an alarm."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from core.config import FinetuningConfig
from core.hashing import ModelFiles
from tasks.data import split_validation
from tasks.drift import ScoredBatch, compare_batches, score_batch
from tasks.finetune import FineTuneJob, fine_tune
from tasks.modeling import resolve_base_model
from tests.conftest import require
from tests.test_quality_minilm import DATA_DIR, read_domain

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from benchmarks import FORTUNES_DIR, fortunes_split  # bench/benchmarks.py: the fortunes benchmark's reader

pytestmark = pytest.mark.minilm
THRESHOLD = 0.3
SPLITS = 20
PARAMS = FinetuningConfig(epochs=1, batch_size=16, max_seq_length=64, learning_rate=5e-5)


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(DATA_DIR.is_dir(), f"the shared data at {DATA_DIR} (set STEWARD_SHARED_DATA)")
    train, validation = split_validation(read_domain("amazon_cells"), 0.1, 13)
    output = tmp_path_factory.mktemp("champion")
    fine_tune(FineTuneJob(resolve_base_model("minilm"), train, validation, PARAMS, 13, output, "macro_f1"))
    return output


def scored(domain: str, champion: Path) -> ScoredBatch:
    return score_batch(read_domain(domain), ModelFiles.of(champion), 2_000, 13)


def test_amazon_reference_flags_yelp(champion: Path, tmp_path: Path) -> None:
    result = compare_batches(scored("amazon_cells", champion), scored("yelp", champion), THRESHOLD,
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
            ScoredBatch.of_frame(batch.source, len(part), batch.frame.iloc[part].reset_index(drop=True))
            for part in (rows[: len(rows) // 2], rows[len(rows) // 2 :])
        ]
        flagged += compare_batches(*halves, THRESHOLD, tmp_path / f"split{seed}.html").drift_detected
    assert flagged <= SPLITS // 10  # false-positive rate at most 10%


def test_a_class_mix_change_alone_is_prior_shift_not_drift(champion: Path, tmp_path: Path) -> None:
    """Two disjoint halves of Amazon: the reference as it is (half positive), the current at 80% positive."""
    batch = scored("amazon_cells", champion)
    order = list(range(batch.rows_scored))
    random.Random(7).shuffle(order)
    reference_rows, current_pool = order[:500], order[500:]
    positive = [row for row in current_pool if batch.frame["label"][row] == "1"]
    negative = [row for row in current_pool if batch.frame["label"][row] != "1"]
    current_rows = positive[:240] + negative[:60]
    reference = ScoredBatch.of_frame("amazon (reference)", 500,
                                     batch.frame.iloc[reference_rows].reset_index(drop=True))
    current = ScoredBatch.of_frame("amazon (80% positive)", len(current_rows),
                                   batch.frame.iloc[current_rows].drop(columns=["label"]).reset_index(drop=True))
    result = compare_batches(reference, current, THRESHOLD, tmp_path / "class-mix.html")
    assert result.finding == "prior_shift"
    assert result.drifted_signals == ["prediction"]
    assert result.covariate_reference_rows < reference.rows_scored  # inputs compared at the current's mix


def test_a_balanced_champion_is_not_flagged_on_the_natural_mix_of_its_domain(tmp_path: Path) -> None:
    """Twelve fortunes categories: trained on 40 + 10 per category, referenced on its balanced test split
    (50 per category), monitored on 600 other entries in the package's own mix of categories."""
    require(FORTUNES_DIR.is_dir(), "the Debian fortunes package (apt-get install fortunes)")
    split = fortunes_split(0, 40, 10, 50)
    params = FinetuningConfig(epochs=3, batch_size=16, max_seq_length=128, learning_rate=5e-5)
    model = tmp_path / "fortunes"
    fine_tune(FineTuneJob(resolve_base_model("minilm"), split.train, split.validation, params, 13, model, "macro_f1"))
    files = ModelFiles.of(model)
    reference = score_batch(split.test, files, 2_000, 13)
    natural = score_batch(split.corpus, files, 600, 13)
    result = compare_batches(reference, natural, THRESHOLD, tmp_path / "natural.html")
    assert result.finding != "drift", result.signals
