"""What every continued-pretraining objective shares: the job, the recipe base, the order of training units,
the held-out split of the corpus, and the summed token loss."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from core.config import PretrainingConfig
from core.errors import BadInputError
from tasks import checkpoints, training
from tasks.distributed import Ranks, table_from_json, table_to_json

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tasks.data import TextTable
    from tasks.modeling import Device

HELDOUT_FRACTION = 0.05
IGNORED = -100  # the label of a position that is not predicted

# `pretraining.learning_rate` unset: MLM's rate from run_mlm.py-style recipes; SimCSE's from Gao et al. (3e-5
# for BERT-base): a sentence encoder's pooled space is easily knocked out of shape by more.
DEFAULT_LEARNING_RATES = {"mlm": 1e-4, "clm": 1e-4, "simcse": 3e-5, "tsdae": 3e-5}
# LoRA's adapters start at zero and hold ~1% of the weights: they take a rate ~10x a full update's (Hu et al.
# 2021 use 2e-4 to 5e-4 on models of 125M-355M parameters).
LORA_LEARNING_RATE = 5e-4
BEST_WEIGHTS = "best"  # the checkpoint's copy of the trainable weights at the best validation loss


@dataclass(frozen=True)
class PretrainJob:
    """The inputs of one pretraining run; as JSON, the job spec of a multi-process run's workers."""

    base_model_dir: Path
    corpus: TextTable
    params: PretrainingConfig
    seed: int
    output_dir: Path
    cache_root: Path
    validation: TextTable | None = None  # held-out documents; None: ~5% of the corpus's blocks are held out
    objective: str | None = None  # what to train; None: `params.objective`, resolved against the base
    start_dir: Path | None = None  # a LoRA adapter of the base that this run trains on (instruction tuning)

    def to_json(self) -> dict[str, Any]:
        return {
            "base_model_dir": str(self.base_model_dir),
            "corpus": table_to_json(self.corpus),
            "params": self.params.model_dump(mode="json"),
            "seed": self.seed,
            "output_dir": str(self.output_dir),
            "cache_root": str(self.cache_root),
            "validation": None if self.validation is None else table_to_json(self.validation),
            "objective": self.objective,
            "start_dir": None if self.start_dir is None else str(self.start_dir),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PretrainJob:
        return cls(
            base_model_dir=Path(data["base_model_dir"]),
            corpus=table_from_json(data["corpus"]),
            params=PretrainingConfig.model_validate(data["params"]),
            seed=data["seed"],
            output_dir=Path(data["output_dir"]),
            cache_root=Path(data["cache_root"]),
            validation=None if data.get("validation") is None else table_from_json(data["validation"]),
            objective=data.get("objective"),
            start_dir=None if data.get("start_dir") is None else Path(data["start_dir"]),
        )


class Adaptation(training.Recipe):
    """What every objective's recipe shares: the run key, checkpoints every `save_steps`, the held-out loss
    measured before the first full-model step, and (with `early_stopping_patience`) early stopping on the
    held-out loss, measured every `save_steps`, keeping the trainable weights of the best evaluation."""

    model: torch.nn.Module  # what trains (and what a checkpoint saves)
    published: PreTrainedModel  # what the cache entry keeps: the adapted encoder (with its LM head, if any)
    tokenizer: PreTrainedTokenizerBase
    head_warmup_steps = 0

    def __init__(self, job: PretrainJob, run_key: str, device: Device, ranks: Ranks) -> None:
        self.job, self.params, self.seed, self.run_key = job, job.params, job.seed, run_key
        self.device, self.ranks = device, ranks
        self.output_dir, self.interval = job.output_dir, job.params.save_steps
        self.heldout_loss_before = math.nan
        self.best_loss, self.evaluations_since_best = math.inf, 0
        self.best_weights: dict[str, torch.Tensor] = {}

    def full_phase(self, learning_rate: float) -> training.Phase:
        """`max_steps`, or fewer when `max_epochs` passes over the training blocks / sentences take fewer: a small
        corpus is not drilled for 200 steps (bench/RESULTS.md, SimCSE on Kotzias)."""
        epoch_steps = math.ceil(self.params.max_epochs * self.order.blocks / self.params.batch_size)
        steps = max(1, min(self.params.max_steps, epoch_steps))
        return training.Phase.warmed_up("full", steps, learning_rate, "linear")

    def heldout_loss(self) -> float:
        raise NotImplementedError

    def set_trainable(self, phase: training.Phase) -> None:
        """LoRA (`pretraining.method: lora`) trains its adapters alone; otherwise every weight outside
        `phase.frozen`."""
        if self.params.method != "lora":
            return super().set_trainable(phase)
        for name, parameter in self.model.named_parameters():
            parameter.requires_grad_("lora_" in name)

    def begin_phase(self, phase: training.Phase) -> None:
        if phase.name == "full" and math.isnan(self.heldout_loss_before):
            self.heldout_loss_before = self.heldout_loss()

    def evaluate(self, step: int) -> bool:
        """With early stopping: stop after `early_stopping_patience` evaluations without a lower held-out loss."""
        patience = self.params.early_stopping_patience
        if patience is None:
            return False
        loss = self.heldout_loss()
        if loss < self.best_loss:
            self.best_loss, self.evaluations_since_best = loss, 0
            self.best_weights = self._trainable_copy()
        else:
            self.evaluations_since_best += 1
        return self.evaluations_since_best >= patience

    def keep_best(self) -> None:
        """After training: back to the best evaluation's weights (when early stopping kept any)."""
        if self.best_weights:
            self.model.load_state_dict(self.best_weights, strict=False)

    def kept_heldout_loss(self) -> float:
        """The held-out loss of the weights kept: the best evaluation's when early stopping kept them (measured
        already: the loop evaluates at the last step too), else measured now."""
        return self.best_loss if self.best_weights else self.heldout_loss()

    def _trainable_copy(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().cpu().clone() for name, p in self.model.named_parameters() if p.requires_grad}

    def state(self) -> dict[str, Any]:
        return {"heldout_loss_before": None if math.isnan(self.heldout_loss_before) else self.heldout_loss_before,
                "best_loss": None if math.isinf(self.best_loss) else self.best_loss,
                "evaluations_since_best": self.evaluations_since_best}

    def extra_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {BEST_WEIGHTS: self.best_weights} if self.best_weights else {}

    def restore(self, state: dict[str, Any], found: checkpoints.FoundCheckpoint) -> None:
        before, best = state["heldout_loss_before"], state.get("best_loss")
        self.heldout_loss_before = math.nan if before is None else before
        self.best_loss = math.inf if best is None else best
        self.evaluations_since_best = state.get("evaluations_since_best", 0)
        if best is not None:
            self.best_weights = checkpoints.load_extra_weights(found, BEST_WEIGHTS)


class BlockOrder:
    """Which training blocks make up step N's batch: a fresh seeded permutation per pass over the
    data, so the order depends only on (seed, step) and a resumed run sees the same batches."""

    def __init__(self, blocks: int, seed: int) -> None:
        self.blocks, self.seed = blocks, seed
        self.epoch, self.order = -1, []

    def batch(self, step: int, size: int) -> list[int]:
        positions = range(step * size, (step + 1) * size)
        return [self._permutation(p // self.blocks)[p % self.blocks] for p in positions]

    def _permutation(self, epoch: int) -> list[int]:
        import torch

        if epoch != self.epoch:
            generator = torch.Generator().manual_seed(training.derived_seed(self.seed, epoch))
            self.epoch, self.order = epoch, torch.randperm(self.blocks, generator=generator).tolist()
        return self.order


def split_sentences(
    tokenizer: PreTrainedTokenizerBase, corpus: TextTable, params: PretrainingConfig, seed: int
) -> tuple[list[list[int]], list[list[int]]]:
    """The corpus texts as token ids (truncated, not packed): a seeded ~5% held out, and the rest."""
    sentences = tokenizer(
        corpus.present_texts(), truncation=True, max_length=params.max_seq_length,
        return_attention_mask=False, return_token_type_ids=False,
    )["input_ids"]
    if len(sentences) < 4:
        raise BadInputError(f"{corpus.source}: the domain corpus has {len(sentences)} texts, too few for "
                            f"{params.objective} pretraining (at least 4)")
    order = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(seed)).tolist()
    heldout_count = max(2, round(HELDOUT_FRACTION * len(sentences)))
    return [sentences[i] for i in sorted(order[:heldout_count])], [sentences[i] for i in sorted(order[heldout_count:])]

def chunks(items: list, size: int) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]

def summed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum (not mean) so that shares from several ranks add up; 0 with a gradient when nothing is predicted."""
    import torch

    return torch.nn.functional.cross_entropy(logits.float(), labels, ignore_index=IGNORED, reduction="sum")
