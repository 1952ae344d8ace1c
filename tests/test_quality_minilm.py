"""Real-model quality: MiniLM fine-tuned on Amazon + IMDB review sentences beats a TF-IDF baseline on
Yelp, a domain it never saw (sentiment labelled sentences, Kotzias et al., KDD 2015; CC BY 4.0)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from core.config import FinetuningConfig
from core.hashing import ModelFiles
from tasks.classifier import accuracy_and_macro_f1
from tasks.data import TextTable, make_table, split_validation
from tasks.evaluate import evaluate_model
from tasks.finetune import FineTuneJob, fine_tune
from tasks.modeling import resolve_base_model
from tests.conftest import SHARED_DATA, require

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

DATA_DIR = SHARED_DATA / "sentiment_labelled_sentences"
SEED = 13
TRAIN_LIMIT = 1_200  # stratified subsample of the Amazon + IMDB train split: minutes, not tens, on 2 CPU cores
PARAMS = FinetuningConfig(epochs=2, batch_size=16, max_seq_length=64, learning_rate=5e-5, early_stopping_patience=2)
BASELINE_C = (0.25, 1.0, 4.0, 16.0)  # LogisticRegression's C, picked on the validation split


def read_domain(name: str) -> TextTable:
    """One domain's `sentence<TAB>score` file, split on newlines only (IMDB has U+0085 inside sentences)."""
    path = DATA_DIR / f"{name}_labelled.txt"
    rows = [line.rpartition("\t") for line in path.read_text(encoding="utf-8").split("\n")[1:] if line.strip()]
    texts: list[str | None] = [text.strip() for text, _, _ in rows]
    labels: list[str | None] = [score.strip() for _, _, score in rows]
    return make_table(name, path, texts, labels, {"sentence": "object", "score": "object"})


def train_and_validation(domains: list[str], limit: int, seed: int) -> tuple[TextTable, TextTable]:
    """The domains pooled, a seeded stratified 10% validation split, and `limit` training rows of the rest."""
    from sklearn.model_selection import train_test_split

    tables = [read_domain(name) for name in domains]
    texts = [text for table in tables for text in table.texts]
    labels = [label for table in tables for label in table.labels or []]
    pool, validation = split_validation(make_table("train", DATA_DIR, texts, labels, tables[0].schema), 0.1, seed)
    keep, _ = train_test_split(range(pool.rows), train_size=limit, random_state=seed, stratify=pool.labels)
    rows = sorted(keep)
    train = make_table("train", DATA_DIR, [pool.texts[i] for i in rows], [pool.labels[i] for i in rows], pool.schema)
    return train, validation


def tfidf_pipeline(train: TextTable, c: float) -> Pipeline:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(C=c))
    return pipeline.fit(*train.complete_rows())


def macro_f1(pipeline: Pipeline, table: TextTable) -> float:
    texts, labels = table.complete_rows()
    return accuracy_and_macro_f1(labels, list(pipeline.predict(texts)))[1]


@pytest.mark.minilm
@pytest.mark.slow
def test_minilm_beats_tfidf_across_domains(tmp_path: Path) -> None:
    require(DATA_DIR.is_dir(), f"the shared data at {DATA_DIR} (set STEWARD_SHARED_DATA)")
    train, validation = train_and_validation(["amazon_cells", "imdb"], TRAIN_LIMIT, SEED)
    test = read_domain("yelp")
    candidates = [tfidf_pipeline(train, c) for c in BASELINE_C]
    baseline = macro_f1(max(candidates, key=lambda pipeline: macro_f1(pipeline, validation)), test)
    base_model = resolve_base_model("minilm")
    tuned = fine_tune(FineTuneJob(base_model, train, validation, PARAMS, SEED, tmp_path / "model", "macro_f1"))
    minilm = evaluate_model(ModelFiles.of(tuned.model_dir), test).macro_f1
    assert minilm > baseline, f"Yelp macro F1: MiniLM {minilm:.3f} vs TF-IDF + LR {baseline:.3f} ({train.rows} train)"
