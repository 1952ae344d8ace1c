"""Domain-adaptive continued pretraining: masked LM for encoders, causal LM for decoders.

One readable path, as in Hugging Face's `run_mlm.py`: corpus text → tokens → packed blocks of
`max_seq_length` (concatenate, cut, drop the remainder; no padding anywhere) → a plain AdamW loop. When
the base checkpoint has no trained LM head (sentence encoders such as MiniLM), the head is first trained
alone with the encoder frozen. Checkpoints in `output_dir` let an interrupted run resume; the finished
model is cached under `cache_root/<key>/`, the key hashing every input that shapes it.

A step's masks depend on the seed and the step alone, so a resumed run and a run with N processes
(`nproc`, see `tasks.distributed`: each rank takes its share of every global batch) see the same
training examples as one uninterrupted process.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from steward.config import PretrainingConfig
from steward.errors import BadInputError
from tasks import checkpoints, distributed
from tasks.distributed import SINGLE_PROCESS, Ranks, table_from_json, table_to_json
from tasks.modeling import (
    Device,
    TrainingClock,
    adamw,
    deterministic,
    is_causal_lm,
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

CACHE_FORMAT = 2  # bump when the training recipe changes, so old cache entries stop matching
HELDOUT_FRACTION = 0.05
LR_WARMUP_FRACTION = 0.06
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
IGNORED = -100  # the label of a position that is not predicted
RESULT_FILE = "steward_pretrain.json"

StepCallback = Callable[[int, float], None]
Block = dict[str, list[int]]


@dataclass(frozen=True)
class PretrainResult:
    """The adapted checkpoint and how it was made. `perplexity_before` is measured on the held-out
    blocks once the head is warmed up (a random head's perplexity says nothing about the domain)."""

    model_dir: Path
    cache_hit: bool
    cache_key: str
    objective: str  # "masked-lm" or "causal-lm"
    steps: int  # optimizer steps in all: head warm-up + max_steps
    head_warmup_steps: int  # 0 when the base checkpoint already had a trained LM head
    perplexity_before: float
    perplexity_after: float
    loss_curve: list[tuple[int, float]]
    resumed_from_step: int | None
    corpus_blocks: int
    train_tokens: int
    seconds: float
    trained_tokens: int  # tokens through the training steps of the run that made it (blocks have no padding)
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


@dataclass(frozen=True)
class Checkpoint:
    """What a resumed run needs besides the weights and optimizer state."""

    run_key: str
    step: int
    phase: str  # "head" (encoder frozen) or "full"
    loss_curve: list[tuple[int, float]]
    perplexity_before: float | None


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


def run_pretraining(job: PretrainJob, ranks: Ranks, on_step: StepCallback | None = None) -> PretrainResult:
    """The pretraining run on this process's rank; rank 0 alone writes checkpoints and the cache entry."""
    started = time.perf_counter()
    key = cache_key(job.base_model_dir, job.corpus, job.params, job.seed)
    quiet_transformers()
    device = pick_device(ranks.local_rank)
    with deterministic(job.seed):
        lm = load_language_model(job.base_model_dir, device)
        packed = pack_corpus(lm.tokenizer, job.corpus, job.params.max_seq_length, lm.causal, job.seed)
        run = _Run(lm, packed, job, key, device, ranks, on_step)
        run.train()
        perplexity_after = run.perplexity()
    result = PretrainResult(
        model_dir=job.cache_root / key,
        cache_hit=False,
        cache_key=key,
        objective="causal-lm" if lm.causal else "masked-lm",
        steps=run.total_steps,
        head_warmup_steps=run.warmup_steps,
        perplexity_before=run.perplexity_before,
        perplexity_after=perplexity_after,
        loss_curve=run.loss_curve,
        resumed_from_step=run.resumed_from_step,
        corpus_blocks=len(packed.train) + len(packed.heldout),
        train_tokens=len(packed.train) * packed.block_size,
        seconds=time.perf_counter() - started,
        trained_tokens=run.trained_tokens,
        training_seconds=run.clock.seconds,
    )
    if ranks.is_main:
        _publish(lm, result, result.model_dir)
        checkpoints.remove_checkpoints(job.output_dir)
    return result


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


class _Run:
    """The training loop's state: nanoGPT-sized, one method per thing it does."""

    def __init__(
        self,
        lm: LanguageModel,
        packed: PackedCorpus,
        job: PretrainJob,
        key: str,
        device: Device,
        ranks: Ranks,
        on_step: StepCallback | None,
    ) -> None:
        from transformers import DataCollatorForLanguageModeling

        self.lm, self.packed, self.job, self.params, self.seed = lm, packed, job, job.params, job.seed
        self.key, self.device, self.ranks, self.on_step = key, device, ranks, on_step
        self.warmup_steps = self.params.head_warmup_steps if lm.head_missing else 0
        self.total_steps = self.warmup_steps + self.params.max_steps
        self.masker = None if lm.causal else DataCollatorForLanguageModeling(
            lm.tokenizer, mlm_probability=self.params.mlm_probability
        )
        self.heldout = self._inputs_and_labels(packed.heldout, mask_seed=self.seed)  # the same masks every call
        self.loss_module = token_loss_module(lm)
        self.trainer = self.loss_module
        self.order = _BlockOrder(len(packed.train), self.seed)
        self.step = 0
        self.phase = "full"
        self.loss_curve: list[tuple[int, float]] = []
        self.perplexity_before: float = math.nan
        self.resumed_from_step: int | None = None
        self.trained_tokens = 0
        self.clock = TrainingClock(device)

    def train(self) -> None:
        """Steps in segments that end where the loop must look up: end of head warm-up, a checkpoint, the end."""
        from tqdm.auto import tqdm

        optimizer, scheduler = self._resume_or_start()
        progress = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="pretrain",
            file=sys.stderr,
            disable=not sys.stderr.isatty() or not self.ranks.is_main,
        )
        while self.step < self.total_steps:
            if self.step == self.warmup_steps and self.phase == "head":
                optimizer, scheduler = self._optimizer("full")
            if self.step == self.warmup_steps and math.isnan(self.perplexity_before):
                self.perplexity_before = self.perplexity()
            done = self.step
            self._train_segment(self._segment_end(), optimizer, scheduler)
            progress.update(self.step - done)
            progress.set_postfix(loss=f"{self.loss_curve[-1][1]:.3f}")
            if self.step % self.params.save_steps == 0 and self.step < self.total_steps and self.ranks.is_main:
                self._save_checkpoint(optimizer, scheduler)
        progress.close()

    def _segment_end(self) -> int:
        stops = [self.total_steps, (self.step // self.params.save_steps + 1) * self.params.save_steps]
        return min(stops + ([self.warmup_steps] if self.step < self.warmup_steps else []))

    def _train_segment(self, end: int, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        """Steps up to `end`; their losses stay on the device and meet across ranks in one all-reduce."""
        import torch

        shares = []
        self.trainer.train()
        with self.clock.running():
            while self.step < end:
                shares.append(self._train_step(optimizer, scheduler))
                self.step += 1
                if self.on_step is not None:  # single process only: its share is the whole loss
                    self.on_step(self.step, float(shares[-1]))
            losses = self.ranks.all_sum(torch.stack(shares).double()).tolist()
        first = self.step - len(losses) + 1
        self.loss_curve += list(enumerate(losses, start=first))

    def _train_step(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> torch.Tensor:
        """This rank's share of the global batch; returns its share of the global mean loss. The loss is
        divided by the global count of predicted tokens, so DDP's gradient average is the one-process one."""
        import torch

        indices = self.order.batch(self.step, self.params.batch_size)
        inputs, labels = self._inputs_and_labels(self.packed.train.rows(indices), self._mask_seed(self.step))
        predicted = max(predicted_count(labels, self.lm.causal), 1)
        mine = self.ranks.shard(range(len(indices)))
        inputs, labels = inputs[mine].to(self.device.torch_device), labels[mine].to(self.device.torch_device)
        with self.device.autocast():
            share = self.trainer(inputs, labels) / predicted
        (share * self.ranks.world_size).backward()
        trainable = [p for p in self.lm.model.parameters() if p.requires_grad]
        torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        self.trained_tokens += len(indices) * self.packed.block_size
        return share.detach()

    def _mask_seed(self, step: int) -> int:
        return (self.seed + 1) * 1_000_003 + step

    def _inputs_and_labels(self, blocks: Blocks, mask_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal LM: the block is both. Masked LM: the collator's 80/10/10 masking of the whole global
        batch, drawn from a generator seeded with `mask_seed`, so every rank draws the same masks."""
        import torch

        if self.masker is None:
            return blocks.input_ids, blocks.input_ids.clone()
        self.masker.generator = torch.Generator().manual_seed(mask_seed)
        return self.masker.torch_mask_tokens(blocks.input_ids.clone(), special_tokens_mask=blocks.special_tokens_mask)

    def perplexity(self) -> float:
        """exp(mean loss per predicted token) on the held-out blocks (masks fixed at the start), each rank
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
        return math.exp(min(loss / tokens, 700.0)) if tokens else math.nan

    def _optimizer(self, phase: str) -> tuple[torch.optim.Optimizer, Any]:
        """Head phase: encoder frozen, constant LR. Full phase: everything, linear decay with warmup.
        DDP is set up again for each phase: it tracks the parameters that had gradients when wrapped."""
        from transformers import get_constant_schedule, get_linear_schedule_with_warmup

        model = self.lm.model
        model.requires_grad_(True)
        if phase == "head":
            model.base_model.requires_grad_(False)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = adamw(trainable, self.params.learning_rate, WEIGHT_DECAY)
        self.phase = phase
        self.trainer = self.ranks.wrap(self.loss_module, self.device)
        if phase == "head":
            return optimizer, get_constant_schedule(optimizer)
        warmup = math.ceil(LR_WARMUP_FRACTION * self.params.max_steps)
        return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, self.params.max_steps)

    def _resume_or_start(self) -> tuple[torch.optim.Optimizer, Any]:
        found = checkpoints.latest_checkpoint(self.job.output_dir, self.key)
        self.ranks.barrier()  # every rank has looked before rank 0 clears stale checkpoints
        if found is None:
            if self.ranks.is_main:
                checkpoints.remove_checkpoints(self.job.output_dir)  # stale ones from other inputs would confuse
            return self._optimizer("head" if self.warmup_steps else "full")
        checkpoint = Checkpoint(**found.record)
        state = checkpoints.restore(found, self.lm.model, self.device.torch_device)
        optimizer, scheduler = self._optimizer(checkpoint.phase)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        self.step, self.resumed_from_step = checkpoint.step, checkpoint.step
        self.loss_curve = [(int(step), float(loss)) for step, loss in checkpoint.loss_curve]
        if checkpoint.perplexity_before is not None:
            self.perplexity_before = checkpoint.perplexity_before
        return optimizer, scheduler

    def _save_checkpoint(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        before = None if math.isnan(self.perplexity_before) else self.perplexity_before
        checkpoint = Checkpoint(self.key, self.step, self.phase, self.loss_curve, before)
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        checkpoints.write_checkpoint(self.job.output_dir, self.step, self.lm.model, state, asdict(checkpoint))


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
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self.epoch, self.order = epoch, torch.randperm(self.blocks, generator=generator).tolist()
        return self.order


def _publish(lm: LanguageModel, result: PretrainResult, cached_dir: Path) -> None:
    """Save model, tokenizer and result into a temp dir beside the cache entry, then rename it in."""
    staging = cached_dir.with_name(f".{cached_dir.name}.{uuid.uuid4().hex}.tmp")
    staging.mkdir(parents=True)
    lm.model.save_pretrained(staging)
    lm.tokenizer.save_pretrained(staging)
    record = {k: v for k, v in asdict(result).items() if k not in ("model_dir", "cache_hit")}
    (staging / RESULT_FILE).write_text(json.dumps(record, indent=2))
    try:
        os.replace(staging, cached_dir)
    except OSError:  # another run published the same key first; theirs is identical in content
        shutil.rmtree(staging, ignore_errors=True)


def _cached_result(cached_dir: Path, seconds: float) -> PretrainResult:
    record = json.loads((cached_dir / RESULT_FILE).read_text())
    return result_from_json({**record, "model_dir": str(cached_dir), "cache_hit": True, "seconds": seconds})
