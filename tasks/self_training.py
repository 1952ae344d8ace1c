"""Self-training on the domain corpus: the fine-tuned model labels the corpus texts it is surest of, and fine-tuning
runs again on the labels plus those pseudo-labels (Yarowsky 1995; Xie et al., "Self-training with Noisy Student
improves ImageNet classification", CVPR 2020; Du et al., "Self-training Improves Pre-training for Natural Language
Understanding", NAACL 2021).

1. The first model (trained on the labels alone) scores a seeded sample of up to `max_corpus_rows` corpus texts
   with its calibrated probabilities.
2. Per class, the `ratio` × (that class's labelled rows) texts it predicts as that class most confidently, each
   at least `min_confidence`, become training rows: class-balanced, so the model's leaning towards one class is
   not fed back to it.
3. Fine-tuning runs again from the same encoder (a fresh student, as in Noisy Student, not the first model) on
   the labels and the pseudo-labels, with the same validation split, early stopping and temperature scaling.
4. The second model is kept when its validation score is at least the first's; otherwise the first is.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.classifier import batched_logits, calibrated, encode, load_saved_classifier
from tasks.data import make_table
from tasks.finetune import FineTuneResult, fine_tune
from tasks.modeling import pick_device

if TYPE_CHECKING:
    from steward.config import FinetuningConfig, SelfTrainingConfig
    from tasks.data import TextTable

SCORING_BATCH = 64


@dataclass(frozen=True)
class SelfTrainingOutcome:
    result: FineTuneResult  # the model kept
    pseudo_labels: int  # corpus rows added to the training set
    first_score: float  # validation primary metric of the model trained on the labels alone
    second_score: float  # and of the one trained with the pseudo-labels too
    kept_second: bool


def pseudo_labelled(model_dir: Path, train: TextTable, corpus: TextTable, params: SelfTrainingConfig,
                    max_seq_length: int, seed: int) -> TextTable:
    """The corpus rows the model in `model_dir` labels most confidently, class-balanced (see the module doc)."""
    device = pick_device()
    classifier = load_saved_classifier(model_dir, max_seq_length, device)
    known = set(train.present_texts())
    pool = [text for text in dict.fromkeys(corpus.present_texts()) if text not in known]
    texts = random.Random(seed).sample(pool, min(params.max_corpus_rows, len(pool)))
    logits, _ = batched_logits(classifier, encode(classifier, texts), SCORING_BATCH, device)
    confidence, predicted = calibrated(logits, classifier.temperature).max(dim=-1)
    _, labels = train.complete_rows()
    chosen: list[tuple[str, str]] = []
    for class_id, label in enumerate(classifier.labels):
        wanted = round(params.ratio * labels.count(label))
        candidates = [i for i in range(len(texts))
                      if predicted[i] == class_id and confidence[i] >= params.min_confidence]
        candidates.sort(key=lambda i: -float(confidence[i]))
        chosen += [(texts[i], label) for i in candidates[:wanted]]
    return make_table("pseudo-labelled", corpus.source, [text for text, _ in chosen], [label for _, label in chosen],
                      train.schema)


def with_rows(train: TextTable, extra: TextTable) -> TextTable:
    """`train` with `extra`'s rows after its own (still the training set, for naming and checks)."""
    texts, labels = train.complete_rows()
    more_texts, more_labels = extra.complete_rows()
    return make_table(train.role, train.source, [*texts, *more_texts], [*labels, *more_labels], train.schema)


def self_train(first: FineTuneResult, start_dir: Path, train: TextTable, validation: TextTable, corpus: TextTable,
               params: FinetuningConfig, seed: int, output_dir: Path, primary_metric: str,
               nproc: int = 1) -> SelfTrainingOutcome:
    """One round of self-training after `first` (see the module doc); the second model goes to `output_dir`."""
    pseudo = pseudo_labelled(first.model_dir, train, corpus, params.self_training, params.max_seq_length, seed)
    if pseudo.rows == 0:
        return SelfTrainingOutcome(first, 0, first.best_score, first.best_score, False)
    second = fine_tune(start_dir, with_rows(train, pseudo), validation, params, seed, output_dir=output_dir,
                       primary_metric=primary_metric, nproc=nproc)
    kept_second = second.best_score >= first.best_score
    return SelfTrainingOutcome(second if kept_second else first, pseudo.rows, first.best_score, second.best_score,
                               kept_second)
