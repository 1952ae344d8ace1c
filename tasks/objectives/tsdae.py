"""`tsdae`: the Transformer-based sequential denoising auto-encoder (Wang et al., EMNLP Findings 2021)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from tasks import training
from tasks.classifier import base_pooling, load_encoder, pool
from tasks.modeling import Device, load_tokenizer, weight_format_kwargs
from tasks.objectives.base import (
    DEFAULT_LEARNING_RATES,
    IGNORED,
    Adaptation,
    BlockOrder,
    PretrainJob,
    chunks,
    split_sentences,
    summed_cross_entropy,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tasks.distributed import Ranks

TSDAE_DELETION = 0.6  # Wang et al.'s best noise: delete 60% of the tokens


class TSDAE(Adaptation):
    """Transformer-based sequential denoising auto-encoder (Wang et al., "TSDAE: Using Transformer-based
    Sequential Denoising Auto-Encoder for Unsupervised Sentence Embedding Learning", EMNLP Findings 2021):
    delete 60% of each sentence's tokens, encode what is left into the base's pooled vector, and have a
    decoder (a copy of the base with new cross-attention and LM head) rebuild the whole sentence from that
    one vector. Only the encoder is kept."""

    def __init__(self, job: PretrainJob, run_key: str, device: Device, ranks: Ranks) -> None:
        from transformers import AutoModelForCausalLM

        super().__init__(job, run_key, device, ranks)
        self.tokenizer = load_tokenizer(job.base_model_dir)
        self.published = load_encoder(job.base_model_dir)
        decoder = AutoModelForCausalLM.from_pretrained(
            str(job.base_model_dir), local_files_only=True, is_decoder=True, add_cross_attention=True,
            **weight_format_kwargs(job.base_model_dir),
        )
        self.model = self.loss_module = _DenoisingAutoEncoder(
            self.published, decoder, base_pooling(job.base_model_dir)
        ).to(device.torch_device)
        self.heldout, self.sentences = split_sentences(self.tokenizer, job.corpus, self.params, self.seed)
        self.units, self.train_tokens = len(self.heldout) + len(self.sentences), sum(map(len, self.sentences))
        self.order = BlockOrder(len(self.sentences), self.seed)

    def phases(self) -> list[training.Phase]:
        return [self.full_phase(self.params.learning_rate or DEFAULT_LEARNING_RATES["tsdae"])]

    def _batch(self, sentences: list[list[int]], noise_seed: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(noise_seed)
        noisy = [_delete_tokens(ids, TSDAE_DELETION, generator) for ids in sentences]
        damaged = self.tokenizer.pad({"input_ids": noisy}, return_tensors="pt")
        whole = self.tokenizer.pad({"input_ids": sentences}, return_tensors="pt")
        tensors = {"noisy_ids": damaged["input_ids"], "noisy_mask": damaged["attention_mask"],
                   "target_ids": whole["input_ids"], "target_mask": whole["attention_mask"]}
        return {name: tensor.to(self.device.torch_device) for name, tensor in tensors.items()}

    def step_loss(self, trainer: torch.nn.Module, step: int) -> tuple[torch.Tensor, int]:
        """This rank's summed token loss over the global batch's count of predicted tokens."""
        indices = self.order.batch(step, self.params.batch_size)
        predicted = sum(len(self.sentences[i]) - 1 for i in indices)
        mine = [self.sentences[i] for i in self.ranks.shard(indices)]
        batch = self._batch(mine, training.derived_seed(self.seed + 2, step))
        with self.device.autocast():
            share = trainer(**batch) / max(predicted, 1)
        return share, sum(len(self.sentences[i]) for i in indices)

    def heldout_loss(self) -> float:
        """Reconstruction loss per token on the held-out sentences (deletions fixed by the seed)."""
        mine = self.ranks.shard(self.heldout)
        totals = torch.zeros(2, dtype=torch.float64, device=self.device.torch_device)
        self.loss_module.eval()
        with torch.no_grad():
            for index, chunk in enumerate(chunks(mine, self.params.batch_size)):
                batch = self._batch(chunk, training.derived_seed(self.seed, index))
                with self.device.autocast():
                    totals[0] += self.loss_module(**batch).double()
                totals[1] += sum(len(ids) - 1 for ids in chunk)
        loss, tokens = self.ranks.all_sum(totals).tolist()
        return loss / tokens if tokens else math.nan


def _delete_tokens(ids: list[int], share: float, generator: torch.Generator) -> list[int]:
    """Keep the first and last (special) tokens; delete each inner one with probability `share`, keeping one."""
    inner = ids[1:-1]
    kept = [token for token, draw in zip(inner, torch.rand(len(inner), generator=generator).tolist(), strict=True)
            if draw >= share]
    return [ids[0], *(kept or inner[:1]), ids[-1]]

class _DenoisingAutoEncoder(torch.nn.Module):
    """forward(noisy, target) → summed next-token loss of the decoder rebuilding `target` from the pooled
    vector of `noisy` (its only cross-attention memory)."""

    def __init__(self, encoder: PreTrainedModel, decoder: PreTrainedModel, pooling: str) -> None:
        super().__init__()
        self.encoder, self.decoder, self.pooling = encoder, decoder, pooling

    def forward(self, noisy_ids: torch.Tensor, noisy_mask: torch.Tensor, target_ids: torch.Tensor,
                target_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=noisy_ids, attention_mask=noisy_mask).last_hidden_state
        memory = pool(hidden, noisy_mask, self.pooling).unsqueeze(1)
        logits = self.decoder(input_ids=target_ids, attention_mask=target_mask, encoder_hidden_states=memory).logits
        labels = target_ids.masked_fill(target_mask.eq(0), IGNORED)[:, 1:]
        return summed_cross_entropy(logits[:, :-1].flatten(0, 1), labels.flatten())
