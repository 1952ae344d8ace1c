"""Fine-tuning a classifier on the adapted (or base) encoder: a recipe for `tasks.training`.

The recipe, for small labelled sets:
1. Pooling that matches the base (`tasks.classifier`): the packaged MiniLM is read through mean pooling.
2. Linear probe, then fine-tune (Kumar et al., "Fine-Tuning can Distort Pretrained Features and
   Underperform Out-of-Distribution", ICLR 2022): the head starts as the logistic regression fitted on
   the frozen encoder's pooled training embeddings, so full fine-tuning starts from a good head instead
   of tearing the features apart to fit a random one.
3. Full fine-tuning with a short warm-up and a constant learning rate (a linear decay to 0 spends half of
   a 200-step budget at a fraction of the rate), dynamically padded, length-grouped batches, a validation
   pass every epoch, early stopping on the primary metric; the best epoch's weights are kept.
4. Temperature scaling fitted on the validation split (Guo et al., ICML 2017): reported probabilities,
   ECE and the reliability diagram mean something.

Labels are strings; their sorted set fixes the class ids. In one process or in N torchrun workers
(`nproc`, see `tasks.distributed`): each rank takes its share of every global batch, and the loss is the
summed cross-entropy over the global batch size, so the averaged gradient is the single-process one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import FinetuningConfig
from core.hashing import ModelFiles, run_key
from tasks import checkpoints, distributed, training
from tasks.classifier import (
    Classifier,
    accuracy_and_macro_f1,
    batched_logits,
    collate,
    encode,
    labelled_rows,
    new_classifier,
    save_classifier,
    training_labels,
)
from tasks.distributed import SINGLE_PROCESS, Ranks, table_from_json, table_to_json
from tasks.modeling import Device, deterministic, pick_device, quiet_transformers

if TYPE_CHECKING:
    import torch

    from tasks.data import TextTable

MEGABATCH_FACTOR = 50  # length grouping sorts within windows of 50 batches, like HF's sampler
BEST_WEIGHTS = "best"
# The linear probe's inverse L2 strength. Strong on purpose: a probe that fits the training set (C = 1 does,
# 480 rows in 384 dimensions) leaves fine-tuning almost no loss to learn from (bench/RESULTS.md).
PROBE_C = 0.02
# Solved to a tight tolerance: the optimum is unique (L2), so embeddings that differ in the last bits (other
# thread counts, N processes) give the same head instead of wherever a loose L-BFGS happened to stop.
PROBE_TOLERANCE = 1e-8
TEMPERATURE_BOUNDS = (0.25, 10.0)  # a validation split the model gets all right must not push T to 0

EpochCallback = Callable[[int], None]


@dataclass(frozen=True)
class EpochScore:
    epoch: int
    accuracy: float
    macro_f1: float
    loss: float  # mean validation loss

    def metric(self, name: str) -> float:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1}[name]


@dataclass(frozen=True)
class FineTuneResult:
    model_dir: Path
    labels: list[str]
    primary_metric: str
    best_epoch: int
    best_score: float
    epochs_run: int
    validation_scores: list[float]  # the primary metric on validation, one per epoch run
    epoch_scores: list[EpochScore]  # accuracy, macro F1 and loss on validation, per epoch
    loss_curve: list[tuple[int, float]]
    train_examples: int
    seconds: float
    resumed_from_epoch: int | None
    trained_tokens: int  # real (non-pad) tokens through the training steps of this call, all ranks together
    training_seconds: float  # wall time of those steps alone (no validation, checkpoints or loading)
    temperature: float  # fitted on validation; probabilities are softmax(logits / temperature)


def result_to_json(result: FineTuneResult) -> dict[str, Any]:
    return {**asdict(result), "model_dir": str(result.model_dir)}


def result_from_json(data: dict[str, Any]) -> FineTuneResult:
    return FineTuneResult(**{
        **data,
        "model_dir": Path(data["model_dir"]),
        "epoch_scores": [EpochScore(**score) for score in data["epoch_scores"]],
        "loss_curve": [(int(step), float(loss)) for step, loss in data["loss_curve"]],
    })


@dataclass(frozen=True)
class FineTuneJob:
    """The inputs of one fine-tuning run; as JSON, the job spec of a multi-process run's workers."""

    model_dir: Path
    train: TextTable
    validation: TextTable
    params: FinetuningConfig
    seed: int
    output_dir: Path
    primary_metric: str

    def to_json(self) -> dict[str, Any]:
        return {
            "model_dir": str(self.model_dir),
            "train": table_to_json(self.train),
            "validation": table_to_json(self.validation),
            "params": self.params.model_dump(mode="json"),
            "seed": self.seed,
            "output_dir": str(self.output_dir),
            "primary_metric": self.primary_metric,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FineTuneJob:
        return cls(
            model_dir=Path(data["model_dir"]),
            train=table_from_json(data["train"]),
            validation=table_from_json(data["validation"]),
            params=FinetuningConfig.model_validate(data["params"]),
            seed=data["seed"],
            output_dir=Path(data["output_dir"]),
            primary_metric=data["primary_metric"],
        )


def fine_tune(job: FineTuneJob, nproc: int = 1, on_epoch: EpochCallback | None = None) -> FineTuneResult:
    """Train a classifier head (and the encoder) and save the best epoch into `job.output_dir`. `nproc` > 1
    trains in that many torchrun workers. `on_epoch(epoch)` is called after each epoch's checkpoint is written
    (progress reporting; it runs in the training process, so only with `nproc` 1)."""
    if nproc == 1:
        return run_fine_tuning(job, SINGLE_PROCESS, on_epoch)
    if on_epoch is not None:
        raise ValueError("on_epoch runs inside the training process: it needs nproc=1")
    started = time.perf_counter()
    _class_labels(job)  # bad input is reported here, before any worker starts
    distributed.require_batch_per_rank(job.params.batch_size, nproc, "finetuning")
    job_dir = job.output_dir.with_name(f"{job.output_dir.name}.workers")
    result = result_from_json(distributed.launch("finetune", job.to_json(), nproc, job_dir))
    return replace(result, seconds=time.perf_counter() - started)


def run_job(job: dict[str, Any], ranks: Ranks) -> dict[str, Any]:
    """A torchrun worker's entry point (see `tasks.distributed`)."""
    return result_to_json(run_fine_tuning(FineTuneJob.from_json(job), ranks))


def run_fine_tuning(job: FineTuneJob, ranks: Ranks, on_epoch: EpochCallback | None = None) -> FineTuneResult:
    """The fine-tuning run on this process's rank; rank 0 alone writes `job.output_dir`."""
    started = time.perf_counter()
    quiet_transformers()
    labels = _class_labels(job)
    device = pick_device(ranks.local_rank)
    start = ModelFiles.of(job.model_dir)
    with deterministic(job.seed):
        classifier = new_classifier(job.model_dir, labels, job.params.max_seq_length, start.fingerprint, device)
        recipe = FineTuning(classifier, job, _run_key(job, start), device, ranks)
        recipe.fit_linear_probe()
        on_interval = None if on_epoch is None else lambda step: on_epoch(step // recipe.interval)
        loop = training.train(recipe, ranks, device, "fine-tune", on_interval=on_interval)
        classifier.model.load_state_dict(recipe.best_weights)
        if ranks.is_main:
            classifier.temperature = recipe.fit_temperature()
            save_classifier(classifier, job.output_dir)
            checkpoints.remove_checkpoints(job.output_dir)
    return FineTuneResult(
        model_dir=job.output_dir,
        labels=labels,
        primary_metric=job.primary_metric,
        best_epoch=recipe.best_epoch,
        best_score=recipe.best_score,
        epochs_run=len(recipe.scores),
        validation_scores=[score.metric(job.primary_metric) for score in recipe.scores],
        epoch_scores=recipe.scores,
        loss_curve=loop.loss_curve,
        train_examples=len(recipe.train_set),
        seconds=time.perf_counter() - started,
        resumed_from_epoch=None if loop.resumed_from_step is None else loop.resumed_from_step // recipe.interval,
        trained_tokens=loop.trained_tokens,
        training_seconds=loop.training_seconds,
        temperature=classifier.temperature,
    )


def _class_labels(job: FineTuneJob) -> list[str]:
    """The sorted training labels, after checking there are two and validation uses no others."""
    labels = training_labels(job.train)
    labelled_rows(job.validation, labels)
    return labels


def _run_key(job: FineTuneJob, start: ModelFiles) -> str:
    return run_key({
        "model_files": start.sha256,
        "train": job.train.fingerprint,
        "validation": job.validation.fingerprint,
        "params": job.params.model_dump(mode="json"),
        "seed": job.seed,
        "primary_metric": job.primary_metric,
    })



def length_grouped_batches(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffle, sort by length within windows of 50 batches, cut into batches, shuffle batches:
    little padding, still random."""
    import torch

    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * MEGABATCH_FACTOR
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda index: -lengths[index])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


class EpochBatches:
    """Each epoch's length-grouped batches of example indices, from a generator seeded by (seed, epoch) alone, so
    a resumed run replays the same order; the current epoch's are kept."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.interval = math.ceil(len(lengths) / batch_size)  # batches (steps) per epoch
        self._current: tuple[int, list[list[int]]] = (-1, [])

    def at(self, step: int) -> list[int]:
        """The indices of step `step`'s batch (steps count across epochs)."""
        import torch

        epoch = step // self.interval
        if self._current[0] != epoch:
            generator = torch.Generator().manual_seed(training.derived_seed(self.seed, epoch + 1))
            self._current = (epoch, length_grouped_batches(self.lengths, self.batch_size, generator))
        return self._current[1][step % self.interval]

    def tokens(self, indices: list[int]) -> int:
        return sum(self.lengths[i] for i in indices)


class FineTuning(training.Recipe):
    """The recipe: one full phase of `epochs` passes; each epoch ends in a validation pass that keeps the
    best weights and stops after `early_stopping_patience` epochs without gain."""

    def __init__(self, classifier: Classifier, job: FineTuneJob, run_key: str, device: Device, ranks: Ranks) -> None:
        self.classifier, self.job, self.params, self.device, self.ranks = classifier, job, job.params, device, ranks
        self.run_key, self.output_dir = run_key, job.output_dir
        self.model = self.loss_module = classifier.model
        self.train_set = encode(classifier, *job.train.complete_rows())
        self.val_set = encode(classifier, *job.validation.complete_rows())
        self.batches = EpochBatches([len(example["input_ids"]) for example in self.train_set],
                                    self.params.batch_size, job.seed)
        self.interval = self.batches.interval  # one epoch
        self.scores: list[EpochScore] = []
        self.best_epoch, self.best_score = 0, -math.inf
        self.best_weights = _cpu_copy(classifier.model)
        self.epochs_without_improvement = 0

    def phases(self) -> list[training.Phase]:
        return [training.Phase.warmed_up("full", self.interval * self.params.epochs, self.params.learning_rate)]

    def fit_linear_probe(self) -> None:
        """Set the head to the multinomial logistic regression on the frozen pooled training embeddings."""
        import torch
        from sklearn.linear_model import LogisticRegression

        _, embeddings = batched_logits(self.classifier, self.train_set, self.params.batch_size * 2, self.device,
                                       embeddings=True)
        truth = [example["labels"] for example in self.train_set]
        probe = LogisticRegression(C=PROBE_C, tol=PROBE_TOLERANCE, max_iter=10_000)
        probe.fit(embeddings.double().numpy(), truth)
        weight, bias = torch.tensor(probe.coef_), torch.tensor(probe.intercept_)
        if weight.shape[0] == 1:  # binary: one logit w·x + b is the difference of two halves
            weight, bias = torch.cat([-weight, weight]) / 2, torch.cat([-bias, bias]) / 2
        head = self.classifier.model.head
        with torch.no_grad():
            head.weight.copy_(weight.to(head.weight))
            head.bias.copy_(bias.to(head.bias))
        self.best_weights = _cpu_copy(self.classifier.model)

    def step_loss(self, trainer: torch.nn.Module, step: int) -> tuple[torch.Tensor, int]:
        """This rank's share of the global batch's mean loss: its summed cross-entropy / global batch size.
        An empty share (a last batch smaller than the world) still joins the gradient all-reduce."""
        import torch

        indices = self.batches.at(step)
        mine = self.ranks.shard(indices)
        batch = collate(self.classifier, [self.train_set[i] for i in mine or indices[:1]], self.device)
        labels = batch.pop("labels")
        with self.device.autocast():
            logits = trainer(**batch)
        weight = 1 / len(indices) if mine else 0.0
        share = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum") * weight
        return share, self.batches.tokens(indices)

    def evaluate(self, step: int) -> bool:
        """Validation, each rank scoring its share: predictions and summed loss meet in one all-reduce."""
        import torch

        mine = self.ranks.shard(range(len(self.val_set)))
        logits, _ = batched_logits(self.classifier, [self.val_set[i] for i in mine], self.params.batch_size * 2,
                                   self.device)
        truth = torch.tensor([self.val_set[i]["labels"] for i in mine], dtype=torch.long)
        combined = torch.zeros(len(self.val_set) + 1, dtype=torch.float64, device=self.device.torch_device)
        combined[mine] = logits.argmax(dim=-1).to(combined)
        combined[-1] = float(torch.nn.functional.cross_entropy(logits, truth, reduction="sum")) if mine else 0.0
        combined = self.ranks.all_sum(combined).tolist()
        predicted = [int(value) for value in combined[:-1]]
        accuracy, macro_f1 = accuracy_and_macro_f1([example["labels"] for example in self.val_set], predicted)
        self._record(EpochScore(len(self.scores) + 1, accuracy, macro_f1, combined[-1] / len(self.val_set)))
        return self.epochs_without_improvement >= self.params.early_stopping_patience

    def _record(self, score: EpochScore) -> None:
        self.scores.append(score)
        if score.metric(self.job.primary_metric) > self.best_score:
            self.best_epoch, self.best_score = score.epoch, score.metric(self.job.primary_metric)
            self.best_weights = _cpu_copy(self.classifier.model)
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1

    def fit_temperature(self) -> float:
        """The temperature that minimises the validation negative log-likelihood of the (best) model."""
        logits, _ = batched_logits(self.classifier, self.val_set, self.params.batch_size * 2, self.device)
        return fit_temperature(logits, [example["labels"] for example in self.val_set])

    def checkpoint_index(self, step: int) -> int:
        return step // self.interval

    def state(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
            "epochs_without_improvement": self.epochs_without_improvement,
            "validation_scores": [asdict(score) for score in self.scores],
        }

    def extra_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {BEST_WEIGHTS: self.best_weights}

    def restore(self, state: dict[str, Any], found: checkpoints.FoundCheckpoint) -> None:
        self.best_epoch, self.best_score = state["best_epoch"], state["best_score"]
        self.epochs_without_improvement = state["epochs_without_improvement"]
        self.scores = [EpochScore(**score) for score in state["validation_scores"]]
        self.best_weights = checkpoints.load_extra_weights(found, BEST_WEIGHTS)


def fit_temperature(logits: torch.Tensor, truth: list[int]) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 minimising the NLL of softmax(logits / T), by L-BFGS
    on log T, within `TEMPERATURE_BOUNDS`."""
    import torch

    target = torch.tensor(truth, dtype=torch.long)
    log_temperature = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_temperature], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits.float() / log_temperature.exp(), target)
        loss.backward()
        return loss

    optimizer.step(closure)
    low, high = TEMPERATURE_BOUNDS
    return min(max(float(log_temperature.detach().exp()), low), high)


def _cpu_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}
