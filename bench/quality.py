"""Cross-domain quality: TF-IDF + LR, MiniLM fine-tuned, and MiniLM adapted to the target domain then fine-tuned.

    .venv/bin/python bench/quality.py --seeds 3 --target yelp [--train-limit N] [--pretrain-steps 150] [--json]

Data: the sentiment labelled sentences of Kotzias et al., "From Group to Individual Labels using Deep
Features", KDD 2015 (CC BY 4.0): 1,000 review sentences from each of Amazon, IMDB and Yelp, read from
`../shared/data/sentiment_labelled_sentences/` beside the checkout (or $STEWARD_SHARED_DATA), never copied.

Protocol, per seed: train on the two other domains pooled (a seeded, stratified 10% of them is the
validation split for early stopping and the baseline's C). The target domain is split 50/50 (seeded,
stratified) into an unlabelled adaptation corpus (labels dropped) and a labelled test half; every method
is scored on that same test half. Adaptation is continued masked-LM pretraining on the adaptation half
(domain-adaptive pretraining, Gururangan et al., "Don't Stop Pretraining", ACL 2020), which never sees
the test sentences, so the comparison is not transductive. Nothing is tuned on the test half.
Progress goes to stderr; the table (or, with --json, one JSON object) to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from steward.cli import QUIET_THIRD_PARTY_DEFAULTS
from steward.config import FinetuningConfig, PretrainingConfig
from tasks.data import TextTable, make_table, split_validation
from tasks.evaluate import evaluate_model
from tasks.finetune import accuracy_and_macro_f1, fine_tune
from tasks.modeling import resolve_base_model
from tasks.pretrain import PretrainResult, continue_pretraining

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

CITATION = 'Kotzias et al., "From Group to Individual Labels using Deep Features", KDD 2015'
BESIDE_CHECKOUT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DOMAIN_FILES = {"amazon": "amazon_cells", "imdb": "imdb", "yelp": "yelp"}
METHODS = ("tfidf+lr", "minilm fine-tune", "minilm adapt+fine-tune")
BASELINE_C = (0.25, 1.0, 4.0, 16.0)  # LogisticRegression's C, picked on the validation split
FINETUNING = FinetuningConfig(epochs=3, batch_size=16, max_seq_length=64, learning_rate=5e-5, early_stopping_patience=2)
SCHEMA = {"sentence": "object", "score": "object"}


@dataclass(frozen=True)
class Split:
    """One seed's data for one target domain."""

    train: TextTable
    validation: TextTable
    corpus: TextTable  # the target's adaptation half, unlabelled
    test: TextTable  # the target's other half, labelled


@dataclass
class Scores:
    """Per-seed test figures of one method."""

    macro_f1: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def add(self, accuracy: float, macro_f1: float, seconds: float) -> None:
        self.accuracy.append(accuracy)
        self.macro_f1.append(macro_f1)
        self.seconds.append(seconds)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def data_dir() -> Path:
    return Path(os.environ.get("STEWARD_SHARED_DATA", BESIDE_CHECKOUT)) / "sentiment_labelled_sentences"


def read_domain(domain: str) -> TextTable:
    """One domain's `sentence<TAB>score` file, split on newlines only (IMDB has U+0085 inside sentences)."""
    path = data_dir() / f"{DOMAIN_FILES[domain]}_labelled.txt"
    rows = [line.rpartition("\t") for line in path.read_text(encoding="utf-8").split("\n")[1:] if line.strip()]
    texts: list[str | None] = [text.strip() for text, _, _ in rows]
    labels: list[str | None] = [score.strip() for _, _, score in rows]
    return make_table(domain, path, texts, labels, SCHEMA)


def subset(table: TextTable, size: int | None, seed: int, role: str) -> tuple[TextTable, TextTable]:
    """A seeded, stratified `size`-row part of `table` (role `role`) and the rest; `None` keeps every row."""
    from sklearn.model_selection import train_test_split

    if size is None or size >= table.rows:
        return table, make_table("rest", table.source, [], [], SCHEMA)
    chosen, rest = train_test_split(range(table.rows), train_size=size, random_state=seed, stratify=table.labels)
    return rows_of(table, sorted(chosen), role), rows_of(table, sorted(rest), "rest")


def rows_of(table: TextTable, indices: list[int], role: str) -> TextTable:
    labels = None if table.labels is None else [table.labels[i] for i in indices]
    return make_table(role, table.source, [table.texts[i] for i in indices], labels, table.schema)


def split(target: str, seed: int, train_limit: int | None) -> Split:
    sources = [read_domain(domain) for domain in DOMAIN_FILES if domain != target]
    pooled = make_table(
        "train",
        data_dir(),
        [text for table in sources for text in table.texts],
        [label for table in sources for label in table.labels or []],
        SCHEMA,
    )
    pool, validation = split_validation(pooled, 0.1, seed)
    train, _ = subset(pool, train_limit, seed, "train")
    target_table = read_domain(target)
    adaptation, test = subset(target_table, target_table.rows // 2, seed, "corpus")
    corpus = make_table("corpus", adaptation.source, adaptation.texts, None, {"sentence": "object"})
    return Split(train, validation, corpus, rows_of(test, list(range(test.rows)), "test"))


def tfidf_pipeline(train: TextTable, c: float) -> Pipeline:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(C=c))
    return pipeline.fit(*train.complete_rows())


def tfidf_scores(pipeline: Pipeline, table: TextTable) -> tuple[float, float]:
    texts, labels = table.complete_rows()
    return accuracy_and_macro_f1(labels, list(pipeline.predict(texts)))


def run_baseline(data: Split) -> tuple[float, float]:
    """Test accuracy and macro F1 of the TF-IDF (word 1-2 grams) + LR whose C scores best on validation."""
    candidates = [tfidf_pipeline(data.train, c) for c in BASELINE_C]
    best = max(candidates, key=lambda pipeline: tfidf_scores(pipeline, data.validation)[1])
    return tfidf_scores(best, data.test)


def run_minilm(model_dir: Path, data: Split, seed: int, output_dir: Path) -> tuple[float, float]:
    """Fine-tune on train (best epoch by validation macro F1), then test accuracy and macro F1."""
    tuned = fine_tune.fn(model_dir, data.train, data.validation, FINETUNING, seed, output_dir, "macro_f1")
    result = evaluate_model.fn(tuned.model_dir, data.test, FINETUNING.max_seq_length)
    return result.accuracy, result.macro_f1


def timed_run(scores: Scores, action: callable) -> None:
    started = time.perf_counter()
    accuracy, macro_f1 = action()
    scores.add(accuracy, macro_f1, time.perf_counter() - started)
