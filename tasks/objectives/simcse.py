"""`simcse`: unsupervised SimCSE (Gao et al., "SimCSE: Simple Contrastive Learning of Sentence Embeddings",
EMNLP 2021): each sentence is encoded twice with different dropout masks and pooled the way the base pools;
the pair is pulled together against the other sentences of the batch (InfoNCE, temperature 0.05). Made for
sentence encoders: nothing new to learn first, and it trains the very pooled vector the classifier reads."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from tasks import training
from tasks.classifier import base_pooling, load_encoder, pool
from tasks.modeling import Device, load_tokenizer
from tasks.objectives.base import DEFAULT_LEARNING_RATES, Adaptation, BlockOrder, PretrainJob, chunks, split_sentences

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tasks.distributed import Ranks

SIMCSE_TEMPERATURE = 0.05  # Gao et al.'s τ


class SimCSE(Adaptation):
    """Unsupervised SimCSE on the corpus sentences (truncated, not packed): one forward of the batch
    twice over, so the two copies of a sentence get different dropout masks. With N processes each rank's
    in-batch negatives are its own share of the global batch."""

    def __init__(self, job: PretrainJob, run_key: str, device: Device, ranks: Ranks) -> None:
        super().__init__(job, run_key, device, ranks)
        self.tokenizer = load_tokenizer(job.base_model_dir)
        self.published = self.model = load_encoder(job.base_model_dir).to(device.torch_device)
        self.loss_module = _ContrastiveLoss(self.model, base_pooling(job.base_model_dir))
        self.heldout, self.sentences = split_sentences(self.tokenizer, job.corpus, self.params, self.seed)
        self.units, self.train_tokens = len(self.heldout) + len(self.sentences), sum(map(len, self.sentences))
        self.order = BlockOrder(len(self.sentences), self.seed)

    def phases(self) -> list[training.Phase]:
        return [self.full_phase(self.params.learning_rate or DEFAULT_LEARNING_RATES["simcse"])]

    def _padded(self, sentences: list[list[int]]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer.pad({"input_ids": sentences}, return_tensors="pt")
        return {name: batch[name].to(self.device.torch_device) for name in ("input_ids", "attention_mask")}

    def step_loss(self, trainer: torch.nn.Module, step: int) -> tuple[torch.Tensor, int]:
        indices = self.order.batch(step, self.params.batch_size)
        mine = self.ranks.shard(indices)
        with self.device.autocast():
            share = trainer(**self._padded([self.sentences[i] for i in mine])) / len(indices)
        return share, sum(len(self.sentences[i]) for i in indices)

    def heldout_loss(self) -> float:
        """The contrastive loss over this rank's whole held-out share at once (every held-out sentence is a
        negative for every other: a few-sentence batch would make the task trivially easy), with dropout on
        as in training (without it the two copies are equal), under a fixed seed that leaves the training
        RNG untouched; the mean over ranks."""
        import torch

        mine = self.ranks.shard(self.heldout)
        self.loss_module.train()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            first, second = (torch.cat([self._embedded(chunk) for chunk in chunks(mine, self.params.batch_size)])
                             for _ in range(2))
        totals = torch.tensor([float(info_nce(first, second)), float(len(mine))], dtype=torch.float64)
        loss, count = self.ranks.all_sum(totals.to(self.device.torch_device)).tolist()
        return loss / count if count else math.nan

    def _embedded(self, sentences: list[list[int]]) -> torch.Tensor:
        with self.device.autocast():
            return self.loss_module.embed(**self._padded(sentences)).float()


def info_nce(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Summed InfoNCE of unit vectors: row i of `first` against every row of `second`, its twin the target."""
    similarity = first @ second.T / SIMCSE_TEMPERATURE
    targets = torch.arange(len(first), device=similarity.device)
    return torch.nn.functional.cross_entropy(similarity, targets, reduction="sum")

class _ContrastiveLoss(torch.nn.Module):
    """forward(input_ids, attention_mask) → the summed InfoNCE loss of the batch against its dropout twin."""

    def __init__(self, encoder: PreTrainedModel, pooling: str) -> None:
        super().__init__()
        self.encoder, self.pooling = encoder, pooling

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unit-length pooled sentence vectors."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return torch.nn.functional.normalize(pool(hidden, attention_mask, self.pooling).float(), dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        twice = self.embed(torch.cat([input_ids, input_ids]), torch.cat([attention_mask, attention_mask]))
        return info_nce(*twice.chunk(2))
