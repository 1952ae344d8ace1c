"""`instructions`: supervised fine-tuning of a causal LM on prompt/response pairs, after its continued pretraining,
as TRL's `SFTTrainer` does with a completion-only loss: each pair is the prompt in the base's chat template (a
user turn, then the assistant's turn opened; a base without a template gets the prompt and a newline), the
response, and the end-of-sequence token. Only the response's tokens are predicted (the prompt's labels are
IGNORED), so the model learns to answer rather than to write prompts. Pairs are padded per batch, on the right,
not packed: a causal model's real tokens never attend to the padding after them.

`pretraining.method: lora` goes on training the continued pretraining's adapter (`PretrainJob.start_dir`), so one
adapter holds both stages; `full` trains every weight of the continued-pretrained model it is given as its base.
The job's `validation` pairs are held out for early stopping, as a corpus's validation documents are."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from core.errors import BadInputError
from tasks import training
from tasks.objectives.base import IGNORED, LORA_LEARNING_RATE, Adaptation, BlockOrder, PretrainJob, chunks
from tasks.objectives.language_modelling import load_language_model, token_loss_module, with_lora

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tasks.data import TextTable
    from tasks.distributed import Ranks
    from tasks.modeling import Device

FULL_LEARNING_RATE = 2e-5  # full fine-tuning on a few pairs: TRL's SFT default


@dataclass(frozen=True)
class Pair:
    """One instruction pair as token ids, and its labels: IGNORED over the prompt."""

    input_ids: list[int]
    labels: list[int]


class InstructionTuning(Adaptation):
    """Completion-only fine-tuning on prompt/response pairs (the job's corpus: texts are prompts, labels responses)."""

    def __init__(self, job: PretrainJob, run_key: str, device: Device, ranks: Ranks) -> None:
        super().__init__(job, run_key, device, ranks)
        self.lm = load_language_model(job.base_model_dir, device)
        if not self.lm.causal:
            raise BadInputError(f"{job.base_model_dir}: instruction pairs train a causal LM, and this base is not one")
        self.tokenizer = self.lm.tokenizer
        if self.params.method == "lora":
            self.lm = replace(self.lm, model=_adapter_model(self.lm.model, job))
            self.checkpoint_trainable_only = True
        self.published = self.model = self.lm.model
        self.pairs = encode_pairs(self.tokenizer, job.corpus, self.params.max_seq_length)
        self.heldout_pairs = (encode_pairs(self.tokenizer, job.validation, self.params.max_seq_length)
                              if job.validation is not None else [])
        self.units = len(self.pairs) + len(self.heldout_pairs)
        self.train_tokens = sum(len(pair.input_ids) for pair in self.pairs)
        self.loss_module = token_loss_module(self.lm)
        self.order = BlockOrder(len(self.pairs), self.seed)

    def phases(self) -> list[training.Phase]:
        default_rate = LORA_LEARNING_RATE if self.params.method == "lora" else FULL_LEARNING_RATE
        return [self.full_phase(self.params.learning_rate or default_rate)]

    def step_loss(self, trainer: torch.nn.Module, step: int) -> tuple[torch.Tensor, int]:
        """This rank's share of the global batch, divided by the global batch's response tokens."""
        batch = [self.pairs[index] for index in self.order.batch(step, self.params.batch_size)]
        inputs, labels = padded(batch, self.tokenizer.pad_token_id)
        predicted = max(response_token_count(labels), 1)
        mine = self.ranks.shard(range(len(batch)))
        inputs, labels = inputs[mine].to(self.device.torch_device), labels[mine].to(self.device.torch_device)
        with self.device.autocast():
            share = trainer(inputs, labels) / predicted
        return share, sum(len(pair.input_ids) for pair in batch)

    def heldout_loss(self) -> float:
        """Mean loss per response token of the held-out pairs (NaN without any), each rank scoring its share."""
        mine = self.ranks.shard(range(len(self.heldout_pairs)))
        totals = torch.zeros(2, dtype=torch.float64, device=self.device.torch_device)
        self.loss_module.eval()
        with torch.no_grad():
            for rows in chunks(list(mine), self.params.batch_size):
                inputs, labels = padded([self.heldout_pairs[row] for row in rows], self.tokenizer.pad_token_id)
                with self.device.autocast():
                    totals[0] += self.loss_module(inputs.to(self.device.torch_device),
                                                  labels.to(self.device.torch_device)).double()
                totals[1] += response_token_count(labels)
        loss, tokens = self.ranks.all_sum(totals).tolist()
        return loss / tokens if tokens else math.nan


def _adapter_model(model: PreTrainedModel, job: PretrainJob) -> PreTrainedModel:
    """The continued pretraining's adapter, trainable, or a fresh one when the job starts from none."""
    if job.start_dir is None:
        return with_lora(model, job.params.lora)
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(job.start_dir), is_trainable=True)


def encode_pairs(tokenizer: PreTrainedTokenizerBase, pairs: TextTable, max_length: int) -> list[Pair]:
    """Every pair as ids and labels, cut at `max_length`; a pair whose prompt leaves no room for its response is
    bad input, named by its row."""
    prompts, responses = pairs.complete_rows()
    encoded = []
    for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True), start=1):
        prompt_ids = tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(prompt_ids) >= max_length:
            raise BadInputError(f"{pairs.source}: row {row}: the prompt takes {len(prompt_ids)} tokens, leaving none "
                                f"of pretraining.max_seq_length {max_length} for the response")
        ids = (prompt_ids + response_ids)[:max_length]
        encoded.append(Pair(ids, ([IGNORED] * len(prompt_ids) + response_ids)[:max_length]))
    return encoded


def prompt_text(tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """The prompt as the model will see it when asked: a user turn in its chat template, the assistant's opened."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
    return f"{prompt}\n"


def padded(pairs: list[Pair], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and labels right-padded to the longest pair (labels IGNORED over the padding)."""
    width = max(len(pair.input_ids) for pair in pairs)
    ids = [pair.input_ids + [pad_id] * (width - len(pair.input_ids)) for pair in pairs]
    labels = [pair.labels + [IGNORED] * (width - len(pair.labels)) for pair in pairs]
    return torch.tensor(ids), torch.tensor(labels)


def response_token_count(labels: torch.Tensor) -> int:
    """The positions the causal loss predicts: labelled ones after the first."""
    return int(labels[:, 1:].ne(IGNORED).sum())
