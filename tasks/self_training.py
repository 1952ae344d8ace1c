"""Self-training on the domain corpus: the fine-tuned model labels the corpus texts it is surest of, and fine-tuning
runs again on the labels plus those pseudo-labels (Yarowsky 1995; Xie et al., "Self-training with Noisy Student
improves ImageNet classification", CVPR 2020; Du et al., "Self-training Improves Pre-training for Natural Language
Understanding", NAACL 2021).

1. The first model (trained on the labels alone) scores a seeded sample of up to `max_corpus_rows` corpus texts
   (none of them a training, validation or test text) with its calibrated probabilities. A sample smaller than
   the pseudo-labels step 2 would pick leaves nothing to choose from, and the round is skipped.
2. Per class, the `ratio` × (that class's labelled rows) texts it predicts as that class most confidently, each
   at least `min_confidence`, become training rows: class-balanced, so the model's leaning towards one class is
   not fed back to it.
3. Fine-tuning runs again from the same encoder (a fresh student, as in Noisy Student, not the first model) on
   the labels and the pseudo-labels, with the same validation split, early stopping and temperature scaling.
4. The candidate is the weight average of the first model and the student (Wortsman et al., "Model soups",
   ICML 2022: fine-tuned from the same encoder, the two stay in one basin, and their average is one model of
   the same size), its temperature fitted again on validation.
5. The candidate is kept unless it is significantly worse than the first model on validation (a paired
   bootstrap of the primary metric, one-sided 95%); otherwise the first model is.

Why: a round that cannot choose lost on a corpus smaller than the labelled set and gained on one ten times larger;
hard pseudo-labels did at least as well as soft ones; and a small validation split cannot tell the student or the
average from the first model at the gains measured, so the guard (5) only catches a round that went wrong. The
figures are in bench/RESULTS.md.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.classifier import batched_logits, calibrated, encode, load_saved_classifier, save_classifier
from tasks.data import make_table
from tasks.finetune import FineTuneJob, FineTuneResult, fine_tune, fit_temperature
from tasks.modeling import pick_device

if TYPE_CHECKING:
    import numpy as np
    import torch

    from core.config import SelfTrainingConfig
    from tasks.data import Splits, TextTable

SCORING_BATCH = 64
GUARD_RESAMPLES = 2_000  # paired bootstrap resamples of the validation split
GUARD_CONFIDENCE = 0.95  # refuse the candidate when it scores below the first model in this share of them
STUDENT_DIR, AVERAGED_DIR = "student", "averaged"


@dataclass(frozen=True)
class SelfTrainingOutcome:
    result: FineTuneResult  # the model kept
    pseudo_labels: int  # corpus rows added to the training set
    first_score: float  # validation primary metric of the model trained on the labels alone
    candidate_score: float  # and of the candidate: the average of that model and the student
    kept_candidate: bool
    skipped_because: str | None = None  # why no round ran, when none did


@dataclass(frozen=True)
class ValidationComparison:
    """The first model's and the candidate's class ids for the validation rows, beside the true ones."""

    truth: np.ndarray
    first: np.ndarray
    candidate: np.ndarray


def unlabelled_sample(corpus: TextTable, known: Sequence[TextTable], max_rows: int, seed: int) -> list[str]:
    """A seeded sample of up to `max_rows` distinct corpus texts, none of them a text of the `known` tables
    (training, validation, test): a held-out text trained on would flatter the scores that judge the model."""
    known_texts = {text for table in known for text in table.present_texts()}
    pool = [text for text in dict.fromkeys(corpus.present_texts()) if text not in known_texts]
    return random.Random(seed).sample(pool, min(max_rows, len(pool)))


def quotas(train: TextTable, params: SelfTrainingConfig) -> dict[str, int]:
    """The pseudo-labels wanted per class: `ratio` × that class's labelled rows."""
    _, labels = train.complete_rows()
    return {label: round(params.ratio * labels.count(label)) for label in sorted(set(labels))}


def pseudo_labelled(model_dir: Path, train: TextTable, corpus: TextTable, texts: list[str], wanted: dict[str, int],
                    min_confidence: float) -> TextTable:
    """Per class, the `wanted[class]` `texts` (from `corpus`) the model in `model_dir` labels as that class most
    confidently, each at least `min_confidence`, as a table shaped like `train` (see the module doc)."""
    device = pick_device()
    classifier = load_saved_classifier(model_dir, device)
    logits, _ = batched_logits(classifier, encode(classifier, texts), SCORING_BATCH, device)
    confidence, predicted = calibrated(logits, classifier.temperature).max(dim=-1)
    chosen: list[tuple[str, str]] = []
    for class_id, label in enumerate(classifier.labels):
        candidates = [i for i in range(len(texts))
                      if predicted[i] == class_id and confidence[i] >= min_confidence]
        candidates.sort(key=lambda i: -float(confidence[i]))
        chosen += [(texts[i], label) for i in candidates[:wanted.get(label, 0)]]
    return make_table("pseudo-labelled", corpus.source, [text for text, _ in chosen], [label for _, label in chosen],
                      train.schema)


def with_rows(train: TextTable, extra: TextTable) -> TextTable:
    """`train` with `extra`'s rows after its own (still the training set, for naming and checks)."""
    texts, labels = train.complete_rows()
    more_texts, more_labels = extra.complete_rows()
    return make_table(train.role, train.source, [*texts, *more_texts], [*labels, *more_labels], train.schema)


def self_train(first: FineTuneResult, job: FineTuneJob, splits: Splits, nproc: int = 1) -> SelfTrainingOutcome:
    """One round of self-training after `first`, which `job` trained on `splits` (see the module doc); the
    candidate, when kept, is saved in a folder under `job.output_dir`. Training, validation and test texts in
    the corpus are left unlabelled."""
    settings = job.params.self_training
    if splits.corpus is None:
        return _skipped(first, "no domain corpus (data.domain_corpus) to draw pseudo-labels from")
    texts = unlabelled_sample(splits.corpus, splits.labelled(), settings.max_corpus_rows, job.seed)
    wanted = quotas(job.train, settings)
    quota = sum(wanted.values())
    if len(texts) < quota:
        return _skipped(first, f"{len(texts)} new corpus texts to choose from, fewer than the {quota} pseudo-labels "
                               f"it picks (finetuning.self_training.ratio {settings.ratio:g} × {job.train.rows} "
                               "training rows)")
    pseudo = pseudo_labelled(first.model_dir, job.train, splits.corpus, texts, wanted, settings.min_confidence)
    if pseudo.rows == 0:
        reason = f"no corpus text reached finetuning.self_training.min_confidence {settings.min_confidence:g}"
        return _skipped(first, reason)
    student = fine_tune(replace(job, train=with_rows(job.train, pseudo), output_dir=job.output_dir / STUDENT_DIR),
                        nproc)
    candidate_dir = job.output_dir / AVERAGED_DIR
    temperature, comparison = averaged_candidate(first.model_dir, student.model_dir, job.validation, candidate_dir)
    shutil.rmtree(student.model_dir)  # its weights live on in the candidate
    candidate_score = float(resampled_scores(comparison.truth[None], comparison.candidate[None],
                                             job.primary_metric)[0])
    if significantly_worse(comparison, job.primary_metric, job.seed):
        shutil.rmtree(candidate_dir)
        return SelfTrainingOutcome(first, pseudo.rows, first.best_score, candidate_score, False)
    # the student's training curves, the candidate's weights, validation score and temperature
    kept = replace(student, model_dir=candidate_dir, best_score=candidate_score, temperature=temperature)
    return SelfTrainingOutcome(kept, pseudo.rows, first.best_score, candidate_score, True)


def _skipped(first: FineTuneResult, reason: str) -> SelfTrainingOutcome:
    return SelfTrainingOutcome(first, 0, first.best_score, first.best_score, False, skipped_because=reason)


def averaged_candidate(first_dir: Path, student_dir: Path, validation: TextTable,
                       output_dir: Path) -> tuple[float, ValidationComparison]:
    """Save to `output_dir` the classifier whose weights are the mean of the first model's and the student's,
    its temperature fitted on `validation`; return that temperature and both models' validation predictions."""
    import numpy as np

    device = pick_device()
    classifier = load_saved_classifier(first_dir, device)
    examples = encode(classifier, *validation.complete_rows())
    first_logits, _ = batched_logits(classifier, examples, SCORING_BATCH, device)
    average_weights(classifier.model, load_saved_classifier(student_dir, device).model)
    logits, _ = batched_logits(classifier, examples, SCORING_BATCH, device)
    truth = [example["labels"] for example in examples]
    classifier.temperature = fit_temperature(logits, truth)
    save_classifier(classifier, output_dir)
    return classifier.temperature, ValidationComparison(np.array(truth), first_logits.argmax(dim=-1).numpy(),
                                                        logits.argmax(dim=-1).numpy())


def average_weights(model: torch.nn.Module, other: torch.nn.Module) -> None:
    """Set `model`'s floating-point weights to the mean of its own and `other`'s (the same architecture)."""
    others = other.state_dict()
    model.load_state_dict({name: (tensor + others[name]) / 2 if tensor.is_floating_point() else tensor
                           for name, tensor in model.state_dict().items()})


def significantly_worse(comparison: ValidationComparison, metric: str, seed: int) -> bool:
    """Whether the candidate scores below the first model in at least `GUARD_CONFIDENCE` of paired bootstrap
    resamples of the validation rows: worse beyond what the split's own noise explains."""
    import numpy as np

    rows = len(comparison.truth)
    samples = np.random.default_rng(seed).integers(0, rows, size=(GUARD_RESAMPLES, rows))
    truth = comparison.truth[samples]
    below = (resampled_scores(truth, comparison.candidate[samples], metric)
             < resampled_scores(truth, comparison.first[samples], metric))
    return float(below.mean()) >= GUARD_CONFIDENCE


def resampled_scores(truth: np.ndarray, predicted: np.ndarray, metric: str) -> np.ndarray:
    """The metric of each row of (truth, predicted) class-id matrices, at once: accuracy, or macro F1 over the
    classes in that row's truth or predictions (sklearn's definition; its per-call cost would make 2,000
    resamples take seconds)."""
    import numpy as np

    if metric == "accuracy":
        return (truth == predicted).mean(axis=1)
    f1_sum, classes_present = np.zeros(len(truth)), np.zeros(len(truth))
    for class_id in np.union1d(truth, predicted):
        in_truth, in_predicted = truth == class_id, predicted == class_id
        counted = in_truth.sum(axis=1) + in_predicted.sum(axis=1)
        f1_sum += 2 * (in_truth & in_predicted).sum(axis=1) / np.maximum(counted, 1)
        classes_present += counted > 0
    return f1_sum / classes_present
