"""Fine-tuning a sequence classifier on the adapted (or base) encoder.

Labels are strings; their sorted set fixes the class ids. Batches are dynamically padded and
grouped by length; every epoch ends with a validation pass, a checkpoint, and the early-stopping
check on the primary metric. The best epoch's weights are what gets saved.

The same loop runs in one process or in N torchrun workers (`nproc`, see `tasks.distributed`): each rank
takes its share of every global batch of `batch_size` examples, and the loss is the summed cross-entropy
over the global batch size, so the averaged gradient is the single-process one.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from steward.config import FinetuningConfig
from steward.errors import BadInputError
from tasks import checkpoints, distributed
from tasks.distributed import SINGLE_PROCESS, Ranks, table_from_json, table_to_json
from tasks.modeling import (
    Device,
    TrainingClock,
    adamw,
    deterministic,
    load_tokenizer,
    pick_device,
    quiet_transformers,
    sha256_files,
    weight_format_kwargs,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tasks.data import TextTable

LABEL_MAP_FILE = "label_map.json"
LR_WARMUP_FRACTION = 0.1
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
MEGABATCH_FACTOR = 50  # length grouping sorts within windows of 50 batches, like HF's sampler
BEST_WEIGHTS = "best"
# Texts are cut to max_length × 64 characters before tokenising, so a 1 MB text costs no more than a
# page; no real text spends more than 64 characters on one token, so truncation itself is unchanged.
CHARS_PER_TOKEN_CAP = 64

EpochCallback = Callable[[int], None]
Example = dict[str, Any]


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


@dataclass(frozen=True)
class Checkpoint:
    """The loop's bookkeeping at the end of an epoch, stored beside the weights."""

    run_key: str
    epoch: int
    best_epoch: int
    best_score: float
    epochs_without_improvement: int
    validation_scores: list[EpochScore]
    loss_curve: list[tuple[int, float]]


@dataclass(frozen=True)
class Classifier:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    labels: list[str]
    max_length: int


@task(name="fine-tune", retries=0, cache_policy=NO_CACHE)
def fine_tune(
    model_dir: Path,
    train: TextTable,
    validation: TextTable,
    params: FinetuningConfig,
    seed: int,
    output_dir: Path,
    primary_metric: str,
    on_epoch: EpochCallback | None = None,
    nproc: int = 1,
) -> FineTuneResult:
    """Train a classifier head (and the encoder) and save the best epoch into `output_dir`.
    `on_epoch(epoch)` is called after each epoch's checkpoint is written (progress reporting; it runs in
    the training process, so only with `nproc` 1). `nproc` > 1 trains in that many torchrun workers."""
    job = FineTuneJob(Path(model_dir), train, validation, params, seed, Path(output_dir), primary_metric)
    if nproc == 1:
        return run_fine_tuning(job, SINGLE_PROCESS, on_epoch)
    if on_epoch is not None:
        raise ValueError("on_epoch runs inside the training process: it needs nproc=1")
    started = time.perf_counter()
    _class_labels(job)  # bad input is reported here, before any worker starts
    distributed.require_batch_per_rank(params.batch_size, nproc, "finetuning")
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
    with deterministic(job.seed):
        classifier = load_classifier(job.model_dir, labels, job.params.max_seq_length, device)
        train_set = encode(classifier, *job.train.complete_rows())
        val_set = encode(classifier, *job.validation.complete_rows())
        run = _Run(classifier, train_set, val_set, job, _run_key(job), device, ranks)
        run.train(on_epoch)
    if ranks.is_main:
        classifier.model.load_state_dict(run.best_weights)
        save_classifier(classifier, job.output_dir)
        checkpoints.remove_checkpoints(job.output_dir)
    return FineTuneResult(
        model_dir=job.output_dir,
        labels=labels,
        primary_metric=job.primary_metric,
        best_epoch=run.best_epoch,
        best_score=run.best_score,
        epochs_run=len(run.scores),
        validation_scores=[score.metric(job.primary_metric) for score in run.scores],
        epoch_scores=run.scores,
        loss_curve=run.loss_curve,
        train_examples=len(train_set),
        seconds=time.perf_counter() - started,
        resumed_from_epoch=run.resumed_from_epoch,
        trained_tokens=run.trained_tokens,
        training_seconds=run.clock.seconds,
    )


def _class_labels(job: FineTuneJob) -> list[str]:
    """The sorted training labels, after checking there are two and validation uses no others."""
    _, train_labels = job.train.complete_rows()
    val_texts, val_labels = job.validation.complete_rows()
    if not val_texts:
        raise BadInputError(f"{job.validation.source}: the {job.validation.role} set has no rows with text and label")
    labels = sorted(set(train_labels))
    if len(labels) < 2:
        raise BadInputError(f"{job.train.source}: training needs at least two labels, found {labels or 'none'}")
    require_known_labels(job.validation, val_labels, labels)
    return labels


def require_known_labels(table: TextTable, labels: list[str], known: list[str]) -> None:
    """Refuse a dataset whose labels the model cannot predict, naming them."""
    unknown = sorted(set(labels) - set(known))
    if unknown:
        raise BadInputError(
            f"{table.source}: {table.role} labels not seen in training: {', '.join(unknown)} "
            f"(known: {', '.join(known)})"
        )


def _run_key(job: FineTuneJob) -> str:
    inputs = {
        "model_files": sha256_files(job.model_dir),
        "train": job.train.fingerprint,
        "validation": job.validation.fingerprint,
        "params": job.params.model_dump(mode="json"),
        "seed": job.seed,
        "primary_metric": job.primary_metric,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def load_classifier(model_dir: Path, labels: list[str], max_seq_length: int, device: Device) -> Classifier:
    """A sequence classifier over `labels` on the encoder in `model_dir` (new head, seeded init)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir),
        local_files_only=True,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
        **weight_format_kwargs(model_dir),
    )
    tokenizer = load_tokenizer(model_dir)
    return Classifier(
        model.to(device.torch_device), tokenizer, labels, usable_max_length(model, tokenizer, max_seq_length)
    )


def usable_max_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, wanted: int) -> int:
    limits = [wanted, getattr(model.config, "max_position_embeddings", wanted)]
    if isinstance(tokenizer.model_max_length, int) and tokenizer.model_max_length < 1_000_000:
        limits.append(tokenizer.model_max_length)
    return min(limits)


def encode(classifier: Classifier, texts: list[str], labels: list[str] | None = None) -> list[Example]:
    """Token ids per text (truncated, unpadded), with the class id when labels are given."""
    clipped = [clip_text(text, classifier.max_length) for text in texts]
    encoded = classifier.tokenizer(clipped, truncation=True, max_length=classifier.max_length)
    examples = [{name: values[i] for name, values in encoded.items()} for i in range(len(texts))]
    if labels is not None:
        class_ids = {label: index for index, label in enumerate(classifier.labels)}
        for example, label in zip(examples, labels, strict=True):
            example["labels"] = class_ids[label]
    return examples


def clip_text(text: str, max_length: int) -> str:
    return text[: max_length * CHARS_PER_TOKEN_CAP]


def save_classifier(classifier: Classifier, output_dir: Path) -> None:
    """Weights (safetensors), tokenizer and `label_map.json` (class id → label string)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    classifier.model.save_pretrained(output_dir)
    classifier.tokenizer.save_pretrained(output_dir)
    label_map = {"labels": classifier.labels, "id2label": dict(enumerate(classifier.labels))}
    (output_dir / LABEL_MAP_FILE).write_text(json.dumps(label_map, indent=2))


def batched_logits(
    classifier: Classifier, examples: list[Example], batch_size: int, device: Device
) -> tuple[torch.Tensor, float]:
    """Logits for every example (in order) and the mean loss when examples carry labels."""
    import torch
    from transformers import DataCollatorWithPadding

    model = classifier.model
    if not examples:
        return torch.empty(0, model.config.num_labels), 0.0
    collate = DataCollatorWithPadding(classifier.tokenizer)
    model.eval()
    outputs, total_loss = [], 0.0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            batch = {k: v.to(device.torch_device) for k, v in collate(chunk).items()}
            with device.autocast():
                result = model(**batch)
            outputs.append(result.logits.float().cpu())
            if result.loss is not None:
                total_loss += float(result.loss) * len(chunk)
    return torch.cat(outputs), total_loss / max(len(examples), 1)


def length_grouped_batches(
    lengths: list[int], batch_size: int, generator: torch.Generator
) -> list[list[int]]:
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


class _Run:
    """Epoch loop with early stopping; its fields are what a checkpoint must restore."""

    def __init__(
        self,
        classifier: Classifier,
        train_set: list[Example],
        val_set: list[Example],
        job: FineTuneJob,
        run_key: str,
        device: Device,
        ranks: Ranks,
    ) -> None:
        from transformers import DataCollatorWithPadding

        self.classifier, self.train_set, self.val_set = classifier, train_set, val_set
        self.collate = DataCollatorWithPadding(classifier.tokenizer)
        self.job, self.params, self.run_key, self.device, self.ranks = job, job.params, run_key, device, ranks
        self.lengths = [len(example["input_ids"]) for example in train_set]
        self.epoch = 0
        self.scores: list[EpochScore] = []
        self.loss_curve: list[tuple[int, float]] = []
        self.best_epoch, self.best_score = 0, -math.inf
        self.best_weights = _cpu_copy(classifier.model)
        self.epochs_without_improvement = 0
        self.resumed_from_epoch: int | None = None
        self.trained_tokens = 0
        self.clock = TrainingClock(device)

    def train(self, on_epoch: EpochCallback | None) -> None:
        optimizer, scheduler = self._optimizer()
        self._resume(optimizer, scheduler)
        trainer = self.ranks.wrap(self.classifier.model, self.device)
        while self.epoch < self.params.epochs and not self._should_stop():
            self.epoch += 1
            self._train_epoch(trainer, optimizer, scheduler)
            self._score_epoch()
            if self.ranks.is_main:
                self._save_checkpoint(optimizer, scheduler)
            if on_epoch is not None:
                on_epoch(self.epoch)

    def _should_stop(self) -> bool:
        return self.epochs_without_improvement >= self.params.early_stopping_patience

    def _train_epoch(self, trainer: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        """One pass over the length-grouped batches; step losses stay on the device until the epoch ends."""
        import torch
        from tqdm.auto import tqdm

        generator = torch.Generator().manual_seed(self.job.seed * 1_000_003 + self.epoch)
        batches = length_grouped_batches(self.lengths, self.params.batch_size, generator)
        trainer.train()
        quiet = not sys.stderr.isatty() or not self.ranks.is_main
        shares = []
        with self.clock.running():
            for indices in tqdm(batches, desc=f"fine-tune epoch {self.epoch}", file=sys.stderr, disable=quiet):
                mine = self.ranks.shard(indices)
                # An empty share (a last batch smaller than the world) still joins the gradient all-reduce.
                weight = 1 / len(indices) if mine else 0.0
                shares.append(self._train_step(trainer, mine or indices[:1], weight, optimizer, scheduler))
                self.trained_tokens += sum(self.lengths[i] for i in indices)
            losses = self.ranks.all_sum(torch.stack(shares).double()).tolist()
        first = len(self.loss_curve) + 1
        self.loss_curve += list(enumerate(losses, start=first))

    def _train_step(
        self, trainer: torch.nn.Module, indices: list[int], weight: float,
        optimizer: torch.optim.Optimizer, scheduler: Any,
    ) -> torch.Tensor:
        """Returns this rank's share of the global batch's mean loss (its summed cross-entropy × `weight`,
        1 / global batch size). DDP averages gradients over ranks, so the backward pass scales the share
        by the world size: the gradient is then the one-process gradient of the global batch."""
        import torch

        batch = self._collate([self.train_set[i] for i in indices])
        labels = batch.pop("labels")
        with self.device.autocast():
            logits = trainer(**batch).logits
        share = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum") * weight
        (share * self.ranks.world_size).backward()
        torch.nn.utils.clip_grad_norm_(self.classifier.model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return share.detach()

    def _collate(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        return {name: tensor.to(self.device.torch_device) for name, tensor in self.collate(examples).items()}

    def _score_epoch(self) -> None:
        """Validation, each rank scoring its share: predictions and summed loss meet in one all-reduce."""
        import torch

        mine = self.ranks.shard(range(len(self.val_set)))
        logits, mean_loss = batched_logits(
            self.classifier, [self.val_set[i] for i in mine], self.params.batch_size * 2, self.device
        )
        combined = torch.zeros(len(self.val_set) + 1, dtype=torch.float64, device=self.device.torch_device)
        combined[mine] = logits.argmax(dim=-1).to(combined)
        combined[-1] = mean_loss * len(mine)
        combined = self.ranks.all_sum(combined).tolist()
        predicted = [int(value) for value in combined[:-1]]
        truth = [example["labels"] for example in self.val_set]
        accuracy, macro_f1 = accuracy_and_macro_f1(truth, predicted)
        self._record(EpochScore(self.epoch, accuracy, macro_f1, combined[-1] / len(self.val_set)))

    def _record(self, score: EpochScore) -> None:
        self.scores.append(score)
        if score.metric(self.job.primary_metric) > self.best_score:
            self.best_epoch, self.best_score = self.epoch, score.metric(self.job.primary_metric)
            self.best_weights = _cpu_copy(self.classifier.model)
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1

    def _optimizer(self) -> tuple[torch.optim.Optimizer, Any]:
        from transformers import get_linear_schedule_with_warmup

        batches_per_epoch = math.ceil(len(self.train_set) / self.params.batch_size)
        total = batches_per_epoch * self.params.epochs
        optimizer = adamw(self.classifier.model.parameters(), self.params.learning_rate, WEIGHT_DECAY)
        warmup = math.ceil(LR_WARMUP_FRACTION * total)
        return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total)

    def _resume(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        found = checkpoints.latest_checkpoint(self.job.output_dir, self.run_key)
        self.ranks.barrier()  # every rank has looked before rank 0 clears stale checkpoints
        if found is None:
            if self.ranks.is_main:
                checkpoints.remove_checkpoints(self.job.output_dir)
            return
        state = checkpoints.restore(found, self.classifier.model, self.device.torch_device)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        self.best_weights = checkpoints.load_extra_weights(found, BEST_WEIGHTS)
        record = found.record
        self.epoch = self.resumed_from_epoch = record["epoch"]
        self.best_epoch, self.best_score = record["best_epoch"], record["best_score"]
        self.epochs_without_improvement = record["epochs_without_improvement"]
        self.scores = [EpochScore(**score) for score in record["validation_scores"]]
        self.loss_curve = [(int(step), float(loss)) for step, loss in record["loss_curve"]]

    def _save_checkpoint(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        record = Checkpoint(
            self.run_key,
            self.epoch,
            self.best_epoch,
            self.best_score,
            self.epochs_without_improvement,
            self.scores,
            self.loss_curve,
        )
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        model, best = self.classifier.model, {BEST_WEIGHTS: self.best_weights}
        checkpoints.write_checkpoint(self.job.output_dir, self.epoch, model, state, asdict(record), best)


def accuracy_and_macro_f1(truth: list[int], predicted: list[int]) -> tuple[float, float]:
    """sklearn's accuracy and macro F1 (over the classes present in truth or predictions)."""
    from sklearn.metrics import accuracy_score, f1_score

    accuracy = float(accuracy_score(truth, predicted))
    return accuracy, float(f1_score(truth, predicted, average="macro", zero_division=0))


def _cpu_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}
