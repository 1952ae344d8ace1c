"""Domain-adaptive continued pretraining: recipes for `tasks.training`, one per objective.

`pretraining.objective` picks what the encoder learns from the unlabelled domain corpus (plus the
labelled training texts: task-adaptive pretraining, Gururangan et al., "Don't Stop Pretraining", ACL 2020):

- `mlm` — masked language modelling, as Hugging Face's `run_mlm.py`: corpus → tokens → packed blocks of
  `max_seq_length` (concatenate, cut, drop the remainder; no padding) → 80/10/10 masking. A checkpoint
  that ships no MLM head first trains the head alone with the encoder frozen (`head_warmup_steps`).
- `clm` — causal language modelling on the same packed blocks, for decoders.
- `simcse` — unsupervised SimCSE (Gao et al., "SimCSE: Simple Contrastive Learning of Sentence
  Embeddings", EMNLP 2021): each sentence is encoded twice with different dropout masks and pooled the
  way the base pools; the pair is pulled together against the other sentences of the batch (InfoNCE,
  temperature 0.05). Made for sentence encoders: nothing new to learn first, and it trains the very
  pooled vector the classifier reads.
- `auto` (the default) — `clm` for decoders, `mlm` for other encoders, and none for a sentence encoder (a
  base that ships a sentence-transformers pooling config, like the packaged MiniLM). Such a base was trained
  contrastively on a billion sentence pairs, and in `bench/quality.py` SimCSE on the domain corpus did not
  reliably pay for it: −0.005 macro-F1 over 3 seeds and −0.020 on another on Kotzias, +0.006 over 2 seeds
  on fortunes (−0.001 and +0.013). Self-training on the same corpus (`tasks.self_training`) costs no
  pretraining steps and is refused when it validates significantly worse, so for these bases the corpus
  goes there. `simcse` and `tsdae` stay one config key away.

Checkpoints in `output_dir` let an interrupted run resume; the finished model is cached under
`cache_root/<key>/`, the key hashing every input that shapes it. A step's batch (and its masks) depend on
the seed and the step alone, so a resumed run and a run with N processes (`nproc`, see
`tasks.distributed`) see the same training examples as one uninterrupted process.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from steward.config import PretrainingConfig
from steward.errors import BadInputError
from tasks import checkpoints, distributed, training
from tasks.classifier import POOLING_DIR, base_pooling, copy_pooling_config, load_encoder, pool
from tasks.distributed import SINGLE_PROCESS, Ranks, table_from_json, table_to_json
from tasks.modeling import (
    Device,
    deterministic,
    is_causal_lm,
    load_tokenizer,
    pick_device,
    quiet_transformers,
    sha256_files,
    weight_format_kwargs,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tasks.data import TextTable

CACHE_FORMAT = 3  # bump when the training recipe changes, so old cache entries stop matching
HELDOUT_FRACTION = 0.05
IGNORED = -100  # the label of a position that is not predicted
SIMCSE_TEMPERATURE = 0.05  # Gao et al.'s τ
RESULT_FILE = "steward_pretrain.json"
# `pretraining.learning_rate` unset: MLM's rate from run_mlm.py-style recipes; SimCSE's from Gao et al. (3e-5
# for BERT-base): a sentence encoder's pooled space is easily knocked out of shape by more.
DEFAULT_LEARNING_RATES = {"mlm": 1e-4, "clm": 1e-4, "simcse": 3e-5, "tsdae": 3e-5}
TSDAE_DELETION = 0.6  # Wang et al.'s best noise: delete 60% of the tokens

StepCallback = training.StepCallback
Block = dict[str, list[int]]


@dataclass(frozen=True)
class PretrainResult:
    """The adapted checkpoint and how it was made. The held-out loss is the objective's own loss on the
    held-out 5% of the corpus; for language modelling its exp is the perplexity, measured `before` once the
    head is warmed up (a random head's perplexity says nothing about the domain)."""

    model_dir: Path
    cache_hit: bool
    cache_key: str
    objective: str  # "mlm", "clm", "simcse" or "tsdae" (what `auto` chose, if it was asked)
    steps: int  # optimizer steps in all: head warm-up + full phase (max_steps, or max_epochs passes if fewer)
    head_warmup_steps: int  # 0 when the base checkpoint already had a trained LM head, or for simcse
    heldout_loss_before: float
    heldout_loss_after: float
    perplexity_before: float | None  # language modelling only
    perplexity_after: float | None
    loss_curve: list[tuple[int, float]]
    resumed_from_step: int | None
    corpus_blocks: int  # training units: packed blocks (LM) or sentences (simcse), held-out ones included
    train_tokens: int
    seconds: float
    trained_tokens: int  # real tokens through the training steps of the run that made it
    training_seconds: float  # wall time of those steps alone (no evaluation, checkpoints or loading)


def result_to_json(result: PretrainResult) -> dict[str, Any]:
    return {**asdict(result), "model_dir": str(result.model_dir)}


def result_from_json(data: dict[str, Any]) -> PretrainResult:
    return PretrainResult(**{
        **data,
        "model_dir": Path(data["model_dir"]),
        "loss_curve": [(int(step), float(loss)) for step, loss in data["loss_curve"]],
    })


@dataclass(frozen=True)
class PretrainJob:
    """The inputs of one pretraining run; as JSON, the job spec of a multi-process run's workers."""

    base_model_dir: Path
    corpus: TextTable
    params: PretrainingConfig
    seed: int
    output_dir: Path
    cache_root: Path

    def to_json(self) -> dict[str, Any]:
        return {
            "base_model_dir": str(self.base_model_dir),
            "corpus": table_to_json(self.corpus),
            "params": self.params.model_dump(mode="json"),
            "seed": self.seed,
            "output_dir": str(self.output_dir),
            "cache_root": str(self.cache_root),
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
        )


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


@task(name="continue-pretraining", retries=0, cache_policy=NO_CACHE)
def continue_pretraining(
    base_model_dir: Path,
    corpus: TextTable,
    params: PretrainingConfig,
    seed: int,
    output_dir: Path,
    cache_root: Path,
    on_step: StepCallback | None = None,
    nproc: int = 1,
) -> PretrainResult:
    """Adapt `base_model_dir` to `corpus`; returns the cached result at once when the inputs match.
    `on_step(step, loss)` is called after every optimizer step (progress reporting; it runs in the training
    process, so only with `nproc` 1). `nproc` > 1 trains in that many torchrun workers."""
    started = time.perf_counter()
    job = PretrainJob(Path(base_model_dir), corpus, params, seed, Path(output_dir), Path(cache_root))
    required_objective(params.objective, job.base_model_dir)  # before any worker starts
    cached_dir = job.cache_root / cache_key(job.base_model_dir, corpus, params, seed)
    if (cached_dir / RESULT_FILE).is_file():
        return _cached_result(cached_dir, time.perf_counter() - started)
    if nproc == 1:
        return run_pretraining(job, SINGLE_PROCESS, on_step)
    if on_step is not None:
        raise ValueError("on_step runs inside the training process: it needs nproc=1")
    distributed.require_batch_per_rank(params.batch_size, nproc, "pretraining")
    job_dir = job.output_dir.with_name(f"{job.output_dir.name}.workers")
    result = result_from_json(distributed.launch("pretrain", job.to_json(), nproc, job_dir))
    return replace(result, seconds=time.perf_counter() - started)


def run_job(job: dict[str, Any], ranks: Ranks) -> dict[str, Any]:
    """A torchrun worker's entry point (see `tasks.distributed`)."""
    return result_to_json(run_pretraining(PretrainJob.from_json(job), ranks))


def resolve_objective(objective: str, base_model_dir: Path) -> str | None:
    """`auto` → `clm` for a decoder, None (no continued pretraining) for a sentence encoder (it ships a
    sentence-transformers pooling config), `mlm` otherwise; an explicit objective is kept, after checking it
    fits the base."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(base_model_dir), local_files_only=True, trust_remote_code=False)
    causal = is_causal_lm(config)
    if objective == "auto":
        return "clm" if causal else None if is_sentence_encoder(base_model_dir) else "mlm"
    if (objective == "clm") != causal:
        kind = "a decoder (causal LM)" if causal else "an encoder"
        raise BadInputError(f"pretraining.objective '{objective}' does not fit {base_model_dir}: it is {kind}")
    return objective


def is_sentence_encoder(base_model_dir: Path) -> bool:
    return (Path(base_model_dir) / POOLING_DIR).is_dir()


def required_objective(objective: str, base_model_dir: Path) -> str:
    """The objective to train; bad input when `auto` chooses none for this base."""
    resolved = resolve_objective(objective, base_model_dir)
    if resolved is None:
        raise BadInputError(f"pretraining.objective 'auto' runs no continued pretraining for the sentence encoder "
                            f"{base_model_dir} (its domain corpus feeds self-training); name one "
                            f"(simcse, tsdae, mlm) to adapt it anyway")
    return resolved


def run_pretraining(job: PretrainJob, ranks: Ranks, on_step: StepCallback | None = None) -> PretrainResult:
    """The pretraining run on this process's rank; rank 0 alone writes checkpoints and the cache entry."""
    started = time.perf_counter()
    key = cache_key(job.base_model_dir, job.corpus, job.params, job.seed)
    quiet_transformers()
    device = pick_device(ranks.local_rank)
    objective = required_objective(job.params.objective, job.base_model_dir)
    with deterministic(job.seed):
        recipe = RECIPES[objective](job, key, device, ranks)
        loop = training.train(recipe, ranks, device, f"pretrain ({objective})", on_step=on_step)
        loss_after = recipe.heldout_loss()
    before = recipe.heldout_loss_before
    result = PretrainResult(
        model_dir=job.cache_root / key,
        cache_hit=False,
        cache_key=key,
        objective=objective,
        steps=loop.steps,
        head_warmup_steps=recipe.head_warmup_steps,
        heldout_loss_before=before,
        heldout_loss_after=loss_after,
        perplexity_before=_perplexity(before) if objective in LANGUAGE_MODELLING else None,
        perplexity_after=_perplexity(loss_after) if objective in LANGUAGE_MODELLING else None,
        loss_curve=loop.loss_curve,
        resumed_from_step=loop.resumed_from_step,
        corpus_blocks=recipe.units,
        train_tokens=recipe.train_tokens,
        seconds=time.perf_counter() - started,
        trained_tokens=loop.trained_tokens,
        training_seconds=loop.training_seconds,
    )
    if ranks.is_main:
        _publish(recipe.published, recipe.tokenizer, result, job.base_model_dir)
        checkpoints.remove_checkpoints(job.output_dir)
    return result


def _perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))


def cache_key(base_model_dir: Path, corpus: TextTable, params: PretrainingConfig, seed: int) -> str:
    """sha256 of the base model's file hashes, the corpus fingerprint, the params and the seed. The
    process count is left out: it changes only which dropout noise each example gets."""
    inputs = {
        "format": CACHE_FORMAT,
        "base_model_files": sha256_files(base_model_dir),
        "corpus": corpus.fingerprint,
        "params": params.model_dump(mode="json", exclude={"enabled"}),
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


class _Adaptation:
    """What every objective's recipe shares: the run key, checkpoints every `save_steps`, no early stop,
    and the held-out loss measured before the first full-model step."""

    model: torch.nn.Module  # what trains (and what a checkpoint saves)
    published: PreTrainedModel  # what the cache entry keeps: the adapted encoder (with its LM head, if any)
    tokenizer: PreTrainedTokenizerBase
    head_warmup_steps = 0

    def __init__(self, job: PretrainJob, run_key: str, device: Device, ranks: Ranks) -> None:
        self.job, self.params, self.seed, self.run_key = job, job.params, job.seed, run_key
        self.device, self.ranks = device, ranks
        self.output_dir, self.interval = job.output_dir, job.params.save_steps
        self.heldout_loss_before = math.nan

    def full_phase(self, learning_rate: float) -> training.Phase:
        """`max_steps`, or fewer when `max_epochs` passes over the training blocks / sentences take fewer:
        a small corpus is not drilled for 200 steps (Kotzias, 1,100 sentences: 200 SimCSE steps of 32 are
        six passes; over three seeds they scored 0.006 macro-F1 below fine-tuning alone, 95% interval
        −0.024 to +0.012)."""
        epoch_steps = math.ceil(self.params.max_epochs * self.order.blocks / self.params.batch_size)
        steps = max(1, min(self.params.max_steps, epoch_steps))
        return training.Phase.warmed_up("full", steps, learning_rate, "linear")

    def heldout_loss(self) -> float:
        raise NotImplementedError

    def begin_phase(self, phase: training.Phase) -> None:
        if phase.name == "full" and math.isnan(self.heldout_loss_before):
            self.heldout_loss_before = self.heldout_loss()

    def evaluate(self, step: int) -> bool:
        return False

    def checkpoint_index(self, step: int) -> int:
        return step

    def state(self) -> dict[str, Any]:
        return {"heldout_loss_before": None if math.isnan(self.heldout_loss_before) else self.heldout_loss_before}

    def extra_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {}

    def restore(self, state: dict[str, Any], found: checkpoints.FoundCheckpoint) -> None:
        before = state["heldout_loss_before"]
        self.heldout_loss_before = math.nan if before is None else before


class LanguageModelling(_Adaptation):
    """`mlm` / `clm` on packed blocks; a missing MLM head is first trained alone, the encoder frozen."""

    def __init__(self, job: PretrainJob, run_key: str, device: Device, ranks: Ranks) -> None:
        from transformers import DataCollatorForLanguageModeling

        super().__init__(job, run_key, device, ranks)
        self.lm = load_language_model(job.base_model_dir, device)
        self.published = self.model = self.lm.model
        self.tokenizer = self.lm.tokenizer
        self.packed = pack_corpus(self.tokenizer, job.corpus, self.params.max_seq_length, self.lm.causal, self.seed)
        self.units = len(self.packed.train) + len(self.packed.heldout)
        self.train_tokens = len(self.packed.train) * self.packed.block_size
        self.head_warmup_steps = self.params.head_warmup_steps if self.lm.head_missing else 0
        self.masker = None if self.lm.causal else DataCollatorForLanguageModeling(
            self.tokenizer, mlm_probability=self.params.mlm_probability
        )
        self.heldout = self._inputs_and_labels(self.packed.heldout, mask_seed=self.seed)  # the same masks every call
        self.loss_module = token_loss_module(self.lm)
        self.order = _BlockOrder(len(self.packed.train), self.seed)

    def phases(self) -> list[training.Phase]:
        learning_rate = self.params.learning_rate or DEFAULT_LEARNING_RATES["mlm"]
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


class SimCSE(_Adaptation):
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
        self.order = _BlockOrder(len(self.sentences), self.seed)

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
            first, second = (torch.cat([self._embedded(chunk) for chunk in _chunks(mine, self.params.batch_size)])
                             for _ in range(2))
        totals = torch.tensor([float(info_nce(first, second)), float(len(mine))], dtype=torch.float64)
        loss, count = self.ranks.all_sum(totals.to(self.device.torch_device)).tolist()
        return loss / count if count else math.nan

    def _embedded(self, sentences: list[list[int]]) -> torch.Tensor:
        with self.device.autocast():
            return self.loss_module.embed(**self._padded(sentences)).float()


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


def _chunks(items: list, size: int) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]


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


class TSDAE(_Adaptation):
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
        self.order = _BlockOrder(len(self.sentences), self.seed)

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
            for index, chunk in enumerate(_chunks(mine, self.params.batch_size)):
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
        return _summed_cross_entropy(logits[:, :-1].flatten(0, 1), labels.flatten())


LANGUAGE_MODELLING = ("mlm", "clm")
RECIPES: dict[str, type[_Adaptation]] = {
    "mlm": LanguageModelling, "clm": LanguageModelling, "simcse": SimCSE, "tsdae": TSDAE,
}


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


def pack_corpus(
    tokenizer: PreTrainedTokenizerBase, corpus: TextTable, max_seq_length: int, causal: bool, seed: int
) -> PackedCorpus:
    """Tokenise every document, pack into blocks (`group_texts`), hold out ~5% of blocks (seeded)."""
    import torch

    block_size = min(max_seq_length, _model_max_length(tokenizer))
    encoded = tokenizer(
        corpus.present_texts(),
        return_special_tokens_mask=not causal,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    blocks = group_texts(dict(encoded), block_size)
    if len(blocks) < 2:
        tokens = sum(len(ids) for ids in encoded["input_ids"])
        raise BadInputError(
            f"{corpus.source}: the domain corpus has {tokens} tokens, too few for two blocks of {block_size}"
        )
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed)).tolist()
    heldout_count = max(1, round(HELDOUT_FRACTION * len(blocks)))
    stacked = Blocks(
        torch.tensor([block["input_ids"] for block in blocks]),
        None if causal else torch.tensor([block["special_tokens_mask"] for block in blocks]),
    )
    return PackedCorpus(
        stacked.rows(sorted(order[heldout_count:])), stacked.rows(sorted(order[:heldout_count])), block_size
    )


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
                return _summed_cross_entropy(logits.flatten(0, 1), labels.flatten())
            hidden = self.model.base_model(input_ids=input_ids).last_hidden_state
            predicted = labels.ne(IGNORED)
            return _summed_cross_entropy(head(hidden[predicted]), labels[predicted])

    return TokenLoss()


def _summed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum (not mean) so that shares from several ranks add up; 0 with a gradient when nothing is predicted."""
    import torch

    return torch.nn.functional.cross_entropy(logits.float(), labels, ignore_index=IGNORED, reduction="sum")


def predicted_count(labels: torch.Tensor, causal: bool) -> int:
    """How many positions the loss covers: labelled ones for a masked LM, all but the first for a causal LM."""
    return int(labels[:, 1:].numel() if causal else labels.ne(IGNORED).sum())


def _masked_lm_head(model: PreTrainedModel) -> torch.nn.Module | None:
    heads = [child for child in model.children() if child is not model.base_model]
    return heads[0] if len(heads) == 1 else None


class _BlockOrder:
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


def _publish(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, result: PretrainResult,
             base_model_dir: Path) -> None:
    """Save model, tokenizer, the base's pooling config and the result into a temp dir beside the cache
    entry, then rename it in."""
    cached_dir = result.model_dir
    staging = cached_dir.with_name(f".{cached_dir.name}.{uuid.uuid4().hex}.tmp")
    staging.mkdir(parents=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    copy_pooling_config(base_model_dir, staging)
    record = {k: v for k, v in asdict(result).items() if k not in ("model_dir", "cache_hit")}
    (staging / RESULT_FILE).write_text(json.dumps(record, indent=2))
    try:
        os.replace(staging, cached_dir)
    except OSError:  # another run published the same key first; theirs is identical in content
        shutil.rmtree(staging, ignore_errors=True)


def _cached_result(cached_dir: Path, seconds: float) -> PretrainResult:
    record = json.loads((cached_dir / RESULT_FILE).read_text())
    return result_from_json({**record, "model_dir": str(cached_dir), "cache_hit": True, "seconds": seconds})
