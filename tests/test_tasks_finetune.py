"""Fine-tuning the tiny BERT on separable synthetic tickets, and evaluating what it saved."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from core.config import FinetuningConfig
from core.errors import BadInputError
from core.hashing import ModelFiles
from tasks.data import Splits, TextTable, make_table
from tasks.evaluate import EvaluationResult, evaluate_model, expected_calibration_error
from tasks.finetune import FineTuneJob, FineTuneResult, fine_tune, fit_temperature
from tasks.manifest import MANIFEST_FILE

LABEL_WORDS = {
    "billing": ["refund", "invoice", "payment", "price", "order"],
    "login": ["password", "login", "account", "error", "screen"],
    "praise": ["great", "love", "excellent", "wonderful", "perfect"],
}
FILLER = ["the", "a", "my", "it", "was", "is", "really", "very", "this", "and", "service", "staff", "phone"]
PARAMS = FinetuningConfig(
    epochs=6, batch_size=8, max_seq_length=32, learning_rate=5e-3, early_stopping_patience=2
)
SEED = 11


def tickets(role: str, count: int, seed: int, labels: list[str] | None = None) -> TextTable:
    """Four filler words and two words of the label's own vocabulary, shuffled."""
    rng = random.Random(seed)
    names = labels or sorted(LABEL_WORDS)
    rows = []
    for index in range(count):
        label = names[index % len(names)]
        words = rng.sample(FILLER, 4) + rng.sample(LABEL_WORDS.get(label, FILLER), 2)
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return make_table(role, Path(f"{role}.csv"), [t for t, _ in rows], [y for _, y in rows], {})


TRAIN, VALIDATION, TEST = tickets("train", 150, 1), tickets("validation", 45, 2), tickets("test", 60, 3)


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> FineTuneResult:
    output_dir = tmp_path_factory.mktemp("finetuned")
    return fine_tune(FineTuneJob(tiny_model_dir, TRAIN, VALIDATION, PARAMS, SEED, output_dir, "macro_f1"))


@pytest.fixture(scope="module")
def evaluation(trained: FineTuneResult) -> EvaluationResult:
    return evaluate_model(ModelFiles.of(trained.model_dir), TEST)


def test_fine_tuning_learns_and_saves_the_best_epoch(trained: FineTuneResult) -> None:
    assert trained.labels == ["billing", "login", "praise"]
    assert trained.best_score > 0.8  # chance is 0.33
    assert trained.epochs_run == len(trained.validation_scores) == len(trained.epoch_scores)
    assert trained.best_score == max(trained.validation_scores)
    assert trained.validation_scores[trained.best_epoch - 1] == trained.best_score
    assert trained.train_examples == 150 and trained.resumed_from_epoch is None
    assert len(trained.loss_curve) == trained.epochs_run * 19  # 150 examples / 8 per batch
    saved = {path.name for path in trained.model_dir.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", MANIFEST_FILE} <= saved
    assert not any(name.startswith("checkpoint-") for name in saved)
    assert json.loads((trained.model_dir / MANIFEST_FILE).read_text())["labels"] == trained.labels


def test_throughput_figures_count_real_tokens_and_step_time(
    trained: FineTuneResult, tiny_model_dir: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    per_epoch = sum(len(ids) for ids in tokenizer(TRAIN.texts, truncation=True, max_length=32)["input_ids"])
    assert trained.trained_tokens == trained.epochs_run * per_epoch  # padding never counts
    assert 0.0 < trained.training_seconds < trained.seconds


def test_a_progress_callback_needs_one_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_epoch runs inside the training process: it needs nproc=1"):
        fine_tune(
            FineTuneJob(tiny_model_dir, TRAIN, VALIDATION, PARAMS, SEED, tmp_path, "macro_f1"), nproc=2, on_epoch=print
        )


def test_same_seed_gives_identical_runs(
    trained: FineTuneResult, tiny_model_dir: Path, tmp_path: Path
) -> None:
    again = fine_tune(FineTuneJob(tiny_model_dir, TRAIN, VALIDATION, PARAMS, SEED, tmp_path, "macro_f1"))
    assert again.epoch_scores == trained.epoch_scores
    assert again.loss_curve == trained.loss_curve


def test_an_interrupted_run_resumes_from_its_last_epoch(
    trained: FineTuneResult, tiny_model_dir: Path, tmp_path: Path
) -> None:
    class Interrupted(Exception):
        pass

    def stop_after_two(epoch: int) -> None:
        if epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        fine_tune(
            FineTuneJob(tiny_model_dir, TRAIN, VALIDATION, PARAMS, SEED, tmp_path, "macro_f1"), on_epoch=stop_after_two
        )
    assert [path.name for path in tmp_path.iterdir() if path.is_dir()] == ["checkpoint-2"]
    resumed = fine_tune(FineTuneJob(tiny_model_dir, TRAIN, VALIDATION, PARAMS, SEED, tmp_path, "macro_f1"))
    assert resumed.resumed_from_epoch == 2
    assert resumed.validation_scores == pytest.approx(trained.validation_scores)
    assert resumed.best_epoch == trained.best_epoch


def test_early_stopping_ends_after_patience_epochs_without_gain(tiny_model_dir: Path, tmp_path: Path) -> None:
    frozen = PARAMS.model_copy(update={"learning_rate": 1e-12, "early_stopping_patience": 1})
    result = fine_tune(FineTuneJob(tiny_model_dir, TRAIN, VALIDATION, frozen, SEED, tmp_path, "accuracy"))
    assert (result.epochs_run, result.best_epoch) == (2, 1)
    assert result.primary_metric == "accuracy"


def test_validation_labels_unseen_in_training_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    odd = tickets("validation", 12, 4, labels=["billing", "refunds-v2"])
    with pytest.raises(
        BadInputError, match=r"validation.csv: validation labels not seen in training: refunds-v2"
    ):
        fine_tune(FineTuneJob(tiny_model_dir, TRAIN, odd, PARAMS, SEED, tmp_path, "macro_f1"))


def test_evaluation_agrees_with_sklearn(evaluation: EvaluationResult) -> None:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    truth = TEST.labels
    assert evaluation.examples == 60 and evaluation.labels == ["billing", "login", "praise"]
    assert evaluation.accuracy == pytest.approx(accuracy_score(truth, evaluation.predictions))
    assert evaluation.macro_f1 == pytest.approx(f1_score(truth, evaluation.predictions, average="macro"))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, evaluation.predictions, labels=evaluation.labels, zero_division=0
    )
    assert [c.label for c in evaluation.per_class] == evaluation.labels
    assert [c.precision for c in evaluation.per_class] == pytest.approx(list(precision))
    assert [c.recall for c in evaluation.per_class] == pytest.approx(list(recall))
    assert [c.f1 for c in evaluation.per_class] == pytest.approx(list(f1))
    assert [c.support for c in evaluation.per_class] == list(support) == [20, 20, 20]
    expected = confusion_matrix(truth, evaluation.predictions, labels=evaluation.labels).tolist()
    assert evaluation.confusion_matrix == expected
    assert evaluation.macro_f1 > 0.8


def test_headline_metrics_are_plain_floats(evaluation: EvaluationResult) -> None:
    headline = evaluation.headline()
    assert set(headline) == {
        "accuracy",
        "macro_f1",
        "ece",
        "ece_uncalibrated",
        "temperature",
        "latency_p50_ms",
        "latency_p95_ms",
        "batch_latency_p50_ms",
        "throughput_per_s",
    }
    assert all(isinstance(value, float) for value in headline.values())
    assert 0.0 <= headline["ece"] <= 1.0
    assert 0.0 < headline["latency_p50_ms"] <= headline["latency_p95_ms"]
    assert headline["throughput_per_s"] > 0.0
    assert headline["batch_latency_p50_ms"] > 0.0


def test_expected_calibration_error_by_hand() -> None:
    confident_and_right = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(confident_and_right, [0, 1]) == pytest.approx(0.0)
    # all at 0.9 confidence, half right: |0.5 - 0.9| = 0.4
    overconfident = torch.tensor([[0.9, 0.1]] * 4)
    assert expected_calibration_error(overconfident, [0, 0, 1, 1]) == pytest.approx(0.4)
    # two bins: 0.6 (1 of 2 right: gap 0.1) and 0.95 (both right: gap 0.05) → 0.5·0.1 + 0.5·0.05
    mixed = torch.tensor([[0.6, 0.4], [0.6, 0.4], [0.05, 0.95], [0.05, 0.95]])
    assert expected_calibration_error(mixed, [0, 1, 1, 1]) == pytest.approx(0.075)


def test_test_labels_the_model_does_not_know_are_named(trained: FineTuneResult) -> None:
    odd = tickets("test", 9, 5, labels=["billing", "shipping", "zebra"])
    with pytest.raises(BadInputError, match=r"test.csv: test labels not seen in training: shipping, zebra"):
        evaluate_model(ModelFiles.of(trained.model_dir), odd)


def test_a_megabyte_text_is_truncated_not_fatal(trained: FineTuneResult) -> None:
    huge = " ".join(["refund invoice payment"] * 70_000)  # ~1.5 MB
    table = make_table("test", Path("huge.csv"), [huge, "love it great"], ["billing", "praise"], {})
    assert evaluate_model(ModelFiles.of(trained.model_dir), table).examples == 2


def test_a_directory_without_a_steward_manifest_is_not_a_classifier(tiny_model_dir: Path) -> None:
    with pytest.raises(BadInputError, match=f"not a trained Steward model \\(no {MANIFEST_FILE}\\)"):
        evaluate_model(ModelFiles.of(tiny_model_dir), TEST)


def test_temperature_scaling_recovers_the_overconfidence_factor() -> None:
    """Labels drawn from softmax(z), logits reported as 4·z: the fitted temperature undoes the 4."""
    generator = torch.Generator().manual_seed(0)
    calibrated = torch.randn(4_000, 5, generator=generator) * 1.5
    truth = torch.multinomial(calibrated.softmax(dim=-1), 1, generator=generator).squeeze(1).tolist()
    temperature = fit_temperature(calibrated * 4, truth)
    assert temperature == pytest.approx(4.0, rel=0.1)
    before = expected_calibration_error((calibrated * 4).softmax(dim=-1), truth)
    after = expected_calibration_error((calibrated * 4 / temperature).softmax(dim=-1), truth)
    assert after < 0.03 < 0.1 < before


def with_wrong_labels(table: TextTable, seed: int) -> TextTable:
    """A fourth of the rows get a random label: no model can be sure, so overconfidence shows in the ECE."""
    rng, names = random.Random(seed), sorted(LABEL_WORDS)
    labels = [rng.choice(names) if rng.random() < 0.25 else label for label in table.labels or []]
    return make_table(table.role, table.source, table.texts, labels, {})


def test_calibration_lowers_ece_of_an_overconfident_model(trained: FineTuneResult, tmp_path: Path) -> None:
    """The trained classifier made deliberately overconfident (head × 8), then calibrated the way fine-tuning
    calibrates (temperature fitted on validation logits) and saved: the test ECE falls, and evaluation reads
    the saved temperature back."""
    from tasks.classifier import batched_logits, encode, load_saved_classifier, save_classifier
    from tasks.modeling import pick_device

    device = pick_device()
    classifier = load_saved_classifier(trained.model_dir, device)
    with torch.no_grad():
        classifier.model.head.weight.mul_(8.0)
        classifier.model.head.bias.mul_(8.0)
    noisy_validation = with_wrong_labels(tickets("validation", 150, 7), 2)
    texts, labels = noisy_validation.complete_rows()
    logits, _ = batched_logits(classifier, encode(classifier, texts, labels), 64, device)
    classifier.temperature = fit_temperature(logits, [classifier.labels.index(label) for label in labels])
    save_classifier(classifier, tmp_path / "calibrated")
    result = evaluate_model(ModelFiles.of(tmp_path / "calibrated"), with_wrong_labels(tickets("test", 300, 8), 3))
    assert classifier.temperature > 2.0 and result.temperature == classifier.temperature
    assert result.ece < result.ece_uncalibrated


def test_pseudo_labels_are_confident_class_balanced_and_new(trained: FineTuneResult) -> None:
    from core.config import SelfTrainingConfig
    from tasks.self_training import pseudo_labelled, quotas, unlabelled_sample

    lopsided = tickets("corpus", 300, 21, labels=["billing"] * 4 + ["login", "praise"])  # mostly billing
    corpus = make_table("corpus", Path("corpus.txt"), [*lopsided.texts, *TRAIN.texts[:10]], None, {})
    texts = unlabelled_sample(corpus, (TRAIN,), 20_000, SEED)
    wanted = quotas(TRAIN, SelfTrainingConfig(ratio=0.5))
    assert wanted == {label: 25 for label in trained.labels}  # 0.5 × 50 labelled rows per class
    pseudo = pseudo_labelled(trained.model_dir, TRAIN, corpus, texts, wanted, 0.6)

    counts = {label: pseudo.labels.count(label) for label in trained.labels}
    assert all(0 < count <= 25 for count in counts.values()), counts
    assert not set(pseudo.texts) & set(TRAIN.texts)  # training texts are not labelled again
    truth = dict(zip(lopsided.texts, lopsided.labels, strict=True))
    correct = sum(truth[text] == label for text, label in zip(pseudo.texts, pseudo.labels, strict=True))
    assert correct / pseudo.rows > 0.9  # the confident ones are right
    strict = pseudo_labelled(trained.model_dir, TRAIN, corpus, texts, wanted, 1.0)
    assert strict.rows < pseudo.rows


def test_held_out_texts_are_never_offered_for_pseudo_labels() -> None:
    from tasks.self_training import unlabelled_sample

    corpus = make_table("corpus", Path("corpus.txt"), [*VALIDATION.texts, *TEST.texts, *TRAIN.texts], None, {})
    assert set(unlabelled_sample(corpus, (TRAIN,), 20_000, SEED)) == {*VALIDATION.texts, *TEST.texts}
    assert unlabelled_sample(corpus, (TRAIN, VALIDATION, TEST), 20_000, SEED) == []
    assert len(unlabelled_sample(corpus, (), 7, SEED)) == 7  # a seeded sample of max_corpus_rows


def test_the_guard_refuses_only_a_candidate_worse_beyond_validation_noise() -> None:
    import numpy as np

    from tasks.self_training import ValidationComparison, significantly_worse

    truth = np.arange(120) % 3
    wrong = (truth + 1) % 3
    first = np.where(np.arange(120) % 4 > 0, truth, wrong)  # 75% right
    one_more_miss = np.where(np.arange(120) == 1, wrong, first)  # 74% right
    half_wrong = np.where(np.arange(120) % 2 > 0, truth, wrong)  # 50% right
    assert not significantly_worse(ValidationComparison(truth, first, first), "macro_f1", SEED)
    assert not significantly_worse(ValidationComparison(truth, first, one_more_miss), "macro_f1", SEED)
    assert significantly_worse(ValidationComparison(truth, first, half_wrong), "accuracy", SEED)
    assert significantly_worse(ValidationComparison(truth, first, half_wrong), "macro_f1", SEED)
    assert not significantly_worse(ValidationComparison(truth, half_wrong, first), "macro_f1", SEED)


def test_resampled_scores_are_sklearns_accuracy_and_macro_f1() -> None:
    import numpy as np

    from tasks.classifier import accuracy_and_macro_f1
    from tasks.self_training import resampled_scores

    rng = np.random.default_rng(SEED)
    truth, predicted = rng.integers(0, 5, size=(50, 30)), rng.integers(0, 6, size=(50, 30))  # class 5: predicted only
    truth[0] = predicted[0] = 2  # one class alone in the row, all right
    expected = [accuracy_and_macro_f1(row_truth.tolist(), row_predicted.tolist())
                for row_truth, row_predicted in zip(truth, predicted, strict=True)]
    assert np.allclose(resampled_scores(truth, predicted, "accuracy"), [accuracy for accuracy, _ in expected])
    assert np.allclose(resampled_scores(truth, predicted, "macro_f1"), [macro_f1 for _, macro_f1 in expected])


def test_averaged_weights_are_the_mean_of_the_two_models(trained: FineTuneResult) -> None:
    from tasks.classifier import load_saved_classifier
    from tasks.modeling import pick_device
    from tasks.self_training import average_weights

    first = load_saved_classifier(trained.model_dir, pick_device()).model
    other = load_saved_classifier(trained.model_dir, pick_device()).model
    with torch.no_grad():
        for tensor in other.parameters():
            tensor.add_(1.0)
    before = {name: tensor.clone() for name, tensor in first.state_dict().items()}
    average_weights(first, other)
    after = first.state_dict()
    assert all(torch.allclose(after[name], before[name] + 0.5) for name, _ in first.named_parameters())


def test_self_training_keeps_the_average_of_the_first_model_and_the_student(
    trained: FineTuneResult, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from tasks.classifier import load_saved_classifier
    from tasks.modeling import pick_device
    from tasks.self_training import self_train

    corpus = make_table("corpus", Path("corpus.txt"), tickets("corpus", 320, 31).texts, None, {})
    job = FineTuneJob(tiny_model_dir, TRAIN, VALIDATION, PARAMS, SEED, tmp_path, "macro_f1")
    outcome = self_train(trained, job, Splits(TRAIN, VALIDATION, TEST, corpus))

    assert outcome.kept_candidate and 0 < outcome.pseudo_labels <= 2 * 150
    assert outcome.result.model_dir.parent == tmp_path and outcome.result.best_score == outcome.candidate_score
    assert [path.name for path in tmp_path.iterdir()] == [outcome.result.model_dir.name]  # the student is gone
    first = load_saved_classifier(trained.model_dir, pick_device()).model.state_dict()
    kept = load_saved_classifier(outcome.result.model_dir, pick_device())
    assert kept.temperature == outcome.result.temperature
    assert not torch.equal(kept.model.state_dict()["head.weight"], first["head.weight"])
    assert evaluate_model(ModelFiles.of(outcome.result.model_dir), TEST).macro_f1 > 0.8


def test_self_training_skips_a_corpus_too_small_to_choose_from(
    trained: FineTuneResult, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from tasks.self_training import self_train

    corpus = make_table("corpus", Path("corpus.txt"), tickets("corpus", 299, 31).texts, None, {})
    job = FineTuneJob(tiny_model_dir, TRAIN, VALIDATION, PARAMS, SEED, tmp_path, "macro_f1")
    outcome = self_train(trained, job, Splits(TRAIN, VALIDATION, TEST, corpus))

    assert outcome.result == trained and (outcome.pseudo_labels, outcome.kept_candidate) == (0, False)
    assert outcome.skipped_because == ("299 new corpus texts to choose from, fewer than the 300 pseudo-labels it "
                                       "picks (finetuning.self_training.ratio 2 × 150 training rows)")
    assert list(tmp_path.iterdir()) == []
