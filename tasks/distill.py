"""Distillation: a smaller student of the fine-tuned classifier, the compression stage's `student` form.

The recipe (Hinton et al., "Distilling the Knowledge in a Neural Network", 2015; Sanh et al., DistilBERT, 2019):
1. The student is the teacher with fewer transformer layers: its embeddings, pooling, head and
   `compression.distill.layers` of its layers (evenly spaced, the first and the last kept) copied over, so it
   starts close to the teacher instead of from scratch.
2. Soft targets: the teacher's calibrated probabilities on the training texts and up to `max_corpus_rows` of the
   domain corpus (seeded sample): unlabelled in-domain text is where a student learns the teacher's behaviour.
   The loss is the cross-entropy against them (the KL divergence up to a constant).
3. The one training loop (`tasks.training`): a short warm-up, then a constant learning rate, length-grouped
   batches, `epochs` passes, checkpoints that a killed run resumes from.
4. The temperature re-fitted on the validation split (as fine-tuning does), so the student's probabilities
   are calibrated too.
The compression stage then quantizes the student to int8 and gates it like the teacher's own int8 form.
"""

from __future__ import annotations

import copy
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import BadInputError
from core.hashing import run_key, sha256_files
from tasks import training
from tasks.classifier import Classifier, batched_logits, calibrated, collate, encode, save_classifier
from tasks.distributed import SINGLE_PROCESS
from tasks.finetune import EpochBatches, fit_temperature
from tasks.modeling import Device, deterministic, pick_device

if TYPE_CHECKING:
    import torch

    from core.config import DistillConfig
    from tasks.data import TextTable

TEACHER_BATCH = 64


@dataclass(frozen=True)
class DistillJob:
    teacher: Classifier
    teacher_dir: Path
    texts: list[str]  # what the student learns the teacher's probabilities on
    validation: TextTable  # for the student's temperature
    params: DistillConfig
    seed: int
    output_dir: Path  # checkpoints


def kept_layers(teacher_layers: int, wanted: int) -> list[int]:
    """`wanted` evenly spaced layer indices of `teacher_layers`, the first and the last included."""
    if not 1 <= wanted < teacher_layers:
        raise BadInputError(f"compression.distill.layers must be from 1 to {teacher_layers - 1} (the teacher has "
                            f"{teacher_layers} layers), got {wanted}")
    if wanted == 1:
        return [teacher_layers - 1]
    return sorted({round(index * (teacher_layers - 1) / (wanted - 1)) for index in range(wanted)})


def _layer_stack(encoder: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The encoder's list of transformer layers (the ModuleList as long as `num_hidden_layers`) and its name."""
    import torch

    count = getattr(encoder.config, "num_hidden_layers", None)
    for name, module in encoder.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return name, module
    raise BadInputError(f"{type(encoder).__name__}: no list of {count} transformer layers to distil from")


def student_of(teacher: Classifier, layers: int) -> Classifier:
    """The teacher with only `kept_layers` of its transformer layers (a copy; the teacher is unchanged)."""
    model = copy.deepcopy(teacher.model)
    name, stack = _layer_stack(model.encoder)
    keep = kept_layers(len(stack), layers)
    parent_name, _, attribute = name.rpartition(".")
    parent = model.encoder.get_submodule(parent_name) if parent_name else model.encoder
    setattr(parent, attribute, type(stack)([stack[index] for index in keep]))
    model.encoder.config.num_hidden_layers = len(keep)
    return Classifier(model, teacher.tokenizer, teacher.labels, teacher.max_length, teacher.base_fingerprint,
                      teacher.temperature)


def distillation_texts(train: TextTable, corpus: TextTable | None, max_corpus_rows: int, seed: int) -> list[str]:
    """The training texts, then a seeded sample of the corpus, each text once."""
    texts = list(train.present_texts())
    if corpus is not None:
        pool = list(corpus.present_texts())
        texts += random.Random(seed).sample(pool, min(max_corpus_rows, len(pool)))
    return list(dict.fromkeys(texts))


class Distillation(training.Recipe):
    """The recipe: one phase of `epochs` passes over the texts, soft cross-entropy against the teacher."""

    def __init__(self, student: Classifier, job: DistillJob, targets: torch.Tensor, run_key: str,
                 device: Device) -> None:
        self.student, self.job, self.targets, self.device = student, job, targets, device
        self.run_key, self.output_dir = run_key, job.output_dir
        self.model = self.loss_module = student.model
        self.examples = encode(student, job.texts)
        self.batches = EpochBatches([len(example["input_ids"]) for example in self.examples],
                                    job.params.batch_size, job.seed)
        self.interval = self.batches.interval  # one pass

    def phases(self) -> list[training.Phase]:
        return [training.Phase.warmed_up("distil", self.interval * self.job.params.epochs,
                                         self.job.params.learning_rate)]

    def step_loss(self, trainer: torch.nn.Module, step: int) -> tuple[torch.Tensor, int]:
        import torch

        indices = self.batches.at(step)
        batch = collate(self.student, [self.examples[i] for i in indices], self.device)
        with self.device.autocast():
            logits = trainer(**batch)
        targets = self.targets[indices].to(logits.device)
        loss = -(targets * torch.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()
        return loss, self.batches.tokens(indices)

    def checkpoint_index(self, step: int) -> int:
        return step // self.interval


def _run_key(job: DistillJob) -> str:
    return run_key({"teacher": sha256_files(job.teacher_dir), "texts": job.texts, "params": job.params.model_dump(),
                    "seed": job.seed, "validation": job.validation.fingerprint})


def distil(job: DistillJob, output_dir: Path) -> Path:
    """Train the student, fit its temperature, save it as a classifier folder in `output_dir`."""
    device = pick_device()
    teacher = job.teacher
    with deterministic(job.seed):
        teacher.model.to(device.torch_device)
        logits, _ = batched_logits(teacher, encode(teacher, job.texts), TEACHER_BATCH, device)
        student = student_of(teacher, job.params.layers)
        recipe = Distillation(student, job, calibrated(logits, teacher.temperature), _run_key(job), device)
        training.train(recipe, SINGLE_PROCESS, device, f"distilling a {job.params.layers}-layer student")
    texts, labels = job.validation.complete_rows()
    class_ids = {label: index for index, label in enumerate(student.labels)}
    validation_logits, _ = batched_logits(student, encode(student, texts), TEACHER_BATCH, device)
    student.temperature = fit_temperature(validation_logits, [class_ids[label] for label in labels])
    save_classifier(student, output_dir)
    shutil.rmtree(job.output_dir, ignore_errors=True)  # the checkpoints: a finished student needs none
    return output_dir
