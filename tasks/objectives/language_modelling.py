"""`mlm` and `clm`: masked or causal language modelling on packed blocks of the corpus, as Hugging Face's
`run_mlm.py` / `run_clm.py` prepare them: corpus → tokens → concatenated and cut into blocks of
`max_seq_length` (the remainder dropped, no padding) → 80/10/10 masking for a masked LM, the block itself for a
causal one, each document ended by the end-of-sequence token so the model learns where documents end. A
checkpoint that ships no MLM head first trains the head alone with the encoder frozen (`head_warmup_steps`).

`pretraining.method: lora` trains low-rank adapters on `lora.target_modules` (through `peft`) and publishes the
adapter alone; the job's `validation` documents, when given, are the held-out blocks (a causal-lm run's own
validation split) instead of a random 5% of the corpus's blocks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from core.errors import BadInputError
from tasks import training
from tasks.modeling import Device, is_causal_lm, load_tokenizer, weight_format_kwargs
from tasks.objectives.base import (
    DEFAULT_LEARNING_RATES,
    HELDOUT_FRACTION,
    IGNORED,
    LORA_LEARNING_RATE,
    Adaptation,
    BlockOrder,
    PretrainJob,
    summed_cross_entropy,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from core.config import LoraConfig
    from tasks.data import TextTable
    from tasks.distributed import Ranks

Block = dict[str, list[int]]


@dataclass(frozen=True)
class LanguageModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    causal: bool
    head_missing: bool


@dataclass(frozen=True)
class Blocks:
    """Packed blocks as tensors, one row per block of `block_size` tokens."""

    input_ids: torch.Tensor
    special_tokens_mask: torch.Tensor | None  # masked LM: the positions never masked ([CLS], [SEP])

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, indices: Sequence[int]) -> Blocks:
        special = self.special_tokens_mask
        return Blocks(self.input_ids[list(indices)], None if special is None else special[list(indices)])


@dataclass(frozen=True)
class PackedCorpus:
    train: Blocks
    heldout: Blocks
    block_size: int


class LanguageModelling(Adaptation):
    """`mlm` / `clm` on packed blocks; a missing MLM head is first trained alone, the encoder frozen."""

    def __init__(self, job: PretrainJob, run_key: str, device: Device, ranks: Ranks) -> None:
        from transformers import DataCollatorForLanguageModeling

        super().__init__(job, run_key, device, ranks)
        self.lm = load_language_model(job.base_model_dir, device)
        self.tokenizer = self.lm.tokenizer
        if self.params.method == "lora":
            self.lm = replace(self.lm, model=with_lora(self.lm.model, self.params.lora))
            self.checkpoint_trainable_only = True
        self.published = self.model = self.lm.model
        self.packed = pack_corpus(self.tokenizer, job.corpus, self.params.max_seq_length, self.lm.causal, self.seed,
                                  job.validation)
        self.units = len(self.packed.train) + len(self.packed.heldout)
        self.train_tokens = len(self.packed.train) * self.packed.block_size
        self.head_warmup_steps = self.params.head_warmup_steps if self.lm.head_missing else 0
        self.masker = None if self.lm.causal else DataCollatorForLanguageModeling(
            self.tokenizer, mlm_probability=self.params.mlm_probability
        )
        self.heldout = self._inputs_and_labels(self.packed.heldout, mask_seed=self.seed)  # the same masks every call
        self.loss_module = token_loss_module(self.lm)
        self.order = BlockOrder(len(self.packed.train), self.seed)

    def phases(self) -> list[training.Phase]:
        default_rate = LORA_LEARNING_RATE if self.params.method == "lora" else DEFAULT_LEARNING_RATES["mlm"]
        learning_rate = self.params.learning_rate or default_rate
        head = training.Phase("head", self.head_warmup_steps, learning_rate, frozen=self.model.base_model)
        return ([head] if self.head_warmup_steps else []) + [self.full_phase(learning_rate)]

    def step_loss(self, trainer: torch.nn.Module, step: int) -> tuple[torch.Tensor, int]:
        """This rank's share of the global batch, divided by the global count of predicted tokens, so DDP's
        gradient average is the one-process one."""
        indices = self.order.batch(step, self.params.batch_size)
        mask_seed = training.derived_seed(self.seed + 1, step)
        inputs, labels = self._inputs_and_labels(self.packed.train.rows(indices), mask_seed)
        predicted = max(predicted_count(labels, self.lm.causal), 1)
        mine = self.ranks.shard(range(len(indices)))
        inputs, labels = inputs[mine].to(self.device.torch_device), labels[mine].to(self.device.torch_device)
        with self.device.autocast():
            share = trainer(inputs, labels) / predicted
        return share, len(indices) * self.packed.block_size

    def _inputs_and_labels(self, blocks: Blocks, mask_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal LM: the block is both. Masked LM: the collator's 80/10/10 masking of the whole global
        batch, drawn from a generator seeded with `mask_seed`, so every rank draws the same masks."""
        import torch

        if self.masker is None:
            return blocks.input_ids, blocks.input_ids.clone()
        self.masker.generator = torch.Generator().manual_seed(mask_seed)
        return self.masker.torch_mask_tokens(blocks.input_ids.clone(), special_tokens_mask=blocks.special_tokens_mask)

    def heldout_loss(self) -> float:
        """Mean loss per predicted token on the held-out blocks (masks fixed at the start), each rank
        scoring its share."""
        import torch

        inputs, labels = self.heldout
        mine = self.ranks.shard(range(len(inputs)))
        totals = torch.zeros(2, dtype=torch.float64, device=self.device.torch_device)
        self.loss_module.eval()
        with torch.no_grad():
            for start in range(0, len(mine), self.params.batch_size):
                rows = mine[start : start + self.params.batch_size]
                chunk = labels[rows].to(self.device.torch_device)
                with self.device.autocast():
                    totals[0] += self.loss_module(inputs[rows].to(self.device.torch_device), chunk).double()
                totals[1] += predicted_count(chunk, self.lm.causal)
        loss, tokens = self.ranks.all_sum(totals).tolist()
        return loss / tokens if tokens else math.nan


def load_language_model(model_dir: Path, device: Device) -> LanguageModel:
    """The base model with an LM head (MLM or causal, from its config) and whether that head is new."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False)
    causal = is_causal_lm(config)
    auto_class = AutoModelForCausalLM if causal else AutoModelForMaskedLM
    model, info = auto_class.from_pretrained(
        str(model_dir), local_files_only=True, output_loading_info=True, **weight_format_kwargs(model_dir)
    )
    base_prefix = model.base_model_prefix + "."
    head_missing = any(not key.startswith(base_prefix) for key in info["missing_keys"])
    tokenizer = load_tokenizer(model_dir)
    if causal and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # saved with the checkpoint: fine-tuning pads its batches
    if not causal and tokenizer.mask_token is None:
        raise BadInputError(
            f"{model_dir}: the tokenizer has no mask token, so masked-LM pretraining is impossible"
        )
    return LanguageModel(model.to(device.torch_device), tokenizer, causal, head_missing)

def with_lora(model: PreTrainedModel, lora: LoraConfig) -> PreTrainedModel:
    """`model` with low-rank adapters on `lora.target_modules`; a module name it lacks is bad input."""
    import peft

    try:
        return peft.get_peft_model(model, peft.LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
            task_type=peft.TaskType.CAUSAL_LM,
        ))
    except ValueError as exc:
        raise BadInputError(f"pretraining.lora.target_modules {lora.target_modules}: {exc}") from None

def pack_corpus(
    tokenizer: PreTrainedTokenizerBase, corpus: TextTable, max_seq_length: int, causal: bool, seed: int,
    validation: TextTable | None = None,
) -> PackedCorpus:
    """Tokenise every document, pack into blocks (`group_texts`); hold out the `validation` documents' blocks,
    else ~5% of the corpus's blocks (seeded)."""
    import torch

    block_size = min(max_seq_length, _model_max_length(tokenizer))
    stacked = _stacked_blocks(tokenizer, corpus, block_size, causal)
    if validation is not None:
        heldout_size = min(block_size, max(2, _token_count(tokenizer, validation, causal)))
        return PackedCorpus(stacked, _stacked_blocks(tokenizer, validation, heldout_size, causal), block_size)
    order = torch.randperm(len(stacked), generator=torch.Generator().manual_seed(seed)).tolist()
    heldout_count = max(1, round(HELDOUT_FRACTION * len(stacked)))
    return PackedCorpus(
        stacked.rows(sorted(order[heldout_count:])), stacked.rows(sorted(order[:heldout_count])), block_size
    )

def _stacked_blocks(tokenizer: PreTrainedTokenizerBase, table: TextTable, block_size: int, causal: bool) -> Blocks:
    import torch

    encoded = _encoded(tokenizer, table, causal)
    blocks = group_texts(encoded, block_size)
    if len(blocks) < 2 and table.role in ("corpus", "train"):
        tokens = sum(len(ids) for ids in encoded["input_ids"])
        raise BadInputError(
            f"{table.source}: the domain corpus has {tokens} tokens, too few for two blocks of {block_size}"
        )
    return Blocks(
        torch.tensor([block["input_ids"] for block in blocks]),
        None if causal else torch.tensor([block["special_tokens_mask"] for block in blocks]),
    )

def _encoded(tokenizer: PreTrainedTokenizerBase, table: TextTable, causal: bool) -> dict[str, list[list[int]]]:
    """Token ids of every document; a causal LM's each end with the end-of-sequence token."""
    encoded = dict(tokenizer(
        table.present_texts(), return_special_tokens_mask=not causal, return_attention_mask=False,
        return_token_type_ids=False,
    ))
    if causal and tokenizer.eos_token_id is not None:
        encoded["input_ids"] = [ids if ids[-1:] == [tokenizer.eos_token_id] else [*ids, tokenizer.eos_token_id]
                                for ids in encoded["input_ids"]]
    return encoded

def _token_count(tokenizer: PreTrainedTokenizerBase, table: TextTable, causal: bool) -> int:
    return sum(len(ids) for ids in _encoded(tokenizer, table, causal)["input_ids"])

def group_texts(examples: dict[str, list[list[int]]], block_size: int) -> list[Block]:
    """run_mlm.py's `group_texts`: concatenate all documents, split into blocks, drop the remainder."""
    concatenated = {
        key: [token for document in values for token in document] for key, values in examples.items()
    }
    total_length = (len(concatenated["input_ids"]) // block_size) * block_size
    return [
        {key: tokens[start : start + block_size] for key, tokens in concatenated.items()}
        for start in range(0, total_length, block_size)
    ]

def _model_max_length(tokenizer: PreTrainedTokenizerBase) -> int:
    length = tokenizer.model_max_length
    return length if isinstance(length, int) and 0 < length < 1_000_000 else 1_000_000

def token_loss_module(lm: LanguageModel) -> torch.nn.Module:
    """A module whose `forward(input_ids, labels)` is the summed cross-entropy over the predicted tokens
    (labels other than -100; for a causal LM every next token). A module, so that DDP wraps the whole
    forward, head included. For masked LMs whose head is one module (BERT's `cls`, RoBERTa's `lm_head`)
    the vocabulary projection runs only at the ~15% masked positions: the same loss, at under half the
    CPU time of projecting every token onto 30k words."""
    import torch

    head = None if lm.causal else _masked_lm_head(lm.model)

    class TokenLoss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = lm.model

        def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            if head is None:
                logits = self.model(input_ids=input_ids).logits
                if lm.causal:
                    logits, labels = logits[:, :-1], labels[:, 1:]
                return summed_cross_entropy(logits.flatten(0, 1), labels.flatten())
            hidden = self.model.base_model(input_ids=input_ids).last_hidden_state
            predicted = labels.ne(IGNORED)
            return summed_cross_entropy(head(hidden[predicted]), labels[predicted])

    return TokenLoss()

def predicted_count(labels: torch.Tensor, causal: bool) -> int:
    """How many positions the loss covers: labelled ones for a masked LM, all but the first for a causal LM."""
    return int(labels[:, 1:].numel() if causal else labels.ne(IGNORED).sum())

def _masked_lm_head(model: PreTrainedModel) -> torch.nn.Module | None:
    heads = [child for child in model.children() if child is not model.base_model]
    return heads[0] if len(heads) == 1 else None
