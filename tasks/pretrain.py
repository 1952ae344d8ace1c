"""Domain-adaptive continued pretraining: masked LM for encoders, causal LM for decoders.

One readable path, as in Hugging Face's `run_mlm.py`: corpus text → tokens → packed blocks of
`max_seq_length` (concatenate, cut, drop the remainder) → a plain AdamW loop. When the base
checkpoint has no trained LM head (sentence encoders such as MiniLM), the head is first trained
alone with the encoder frozen. Checkpoints in `output_dir` let an interrupted run resume; the
finished model is cached under `cache_root/<key>/`, the key hashing every input that shapes it.
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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from steward.errors import BadInputError
from tasks import checkpoints
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
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from steward.config import PretrainingConfig
    from tasks.data import TextTable

CACHE_FORMAT = 1  # bump when the training recipe changes, so old cache entries stop matching
HELDOUT_FRACTION = 0.05
LR_WARMUP_FRACTION = 0.06
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
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


@dataclass(frozen=True)
class LanguageModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    causal: bool
    head_missing: bool


@dataclass(frozen=True)
class PackedCorpus:
    train: list[Block]
    heldout: list[Block]
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
) -> PretrainResult:
    """Adapt `base_model_dir` to `corpus`; returns the cached result at once when the inputs match.
    `on_step(step, loss)` is called after every optimizer step (progress reporting)."""
    started = time.perf_counter()
    key = cache_key(base_model_dir, corpus, params, seed)
    cached_dir = Path(cache_root) / key
    if (cached_dir / RESULT_FILE).is_file():
        return _cached_result(cached_dir, time.perf_counter() - started)
    quiet_transformers()
    device = pick_device()
    with deterministic(seed):
        lm = load_language_model(base_model_dir, device)
        packed = pack_corpus(lm.tokenizer, corpus, params.max_seq_length, lm.causal, seed)
        run = _Run(lm, packed, params, seed, Path(output_dir), key, device, on_step)
        run.train()
    result = PretrainResult(
        model_dir=cached_dir,
        cache_hit=False,
        cache_key=key,
        objective="causal-lm" if lm.causal else "masked-lm",
        steps=run.total_steps,
        head_warmup_steps=run.warmup_steps,
        perplexity_before=run.perplexity_before,
        perplexity_after=run.perplexity(),
        loss_curve=run.loss_curve,
        resumed_from_step=run.resumed_from_step,
        corpus_blocks=len(packed.train) + len(packed.heldout),
        train_tokens=len(packed.train) * packed.block_size,
        seconds=time.perf_counter() - started,
    )
    _publish(lm, result, cached_dir)
    checkpoints.remove_checkpoints(Path(output_dir))
    return result


def cache_key(base_model_dir: Path, corpus: TextTable, params: PretrainingConfig, seed: int) -> str:
    """sha256 of the base model's file hashes, the corpus fingerprint, the params and the seed."""
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
        tokenizer.pad_token = tokenizer.eos_token  # blocks are equal length; the collator still asks
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
    heldout = [blocks[i] for i in sorted(order[:heldout_count])]
    train = [blocks[i] for i in sorted(order[heldout_count:])]
    return PackedCorpus(train, heldout, block_size)


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


def language_model_loss(lm: LanguageModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the predicted tokens. For masked LMs whose head is one module (BERT's
    `cls`, RoBERTa's `lm_head`) the vocabulary projection runs only at the ~15% masked positions:
    the same loss, at under half the CPU time of projecting every token onto 30k words."""
    import torch

    head = None if lm.causal else _masked_lm_head(lm.model)
    if head is None:
        return lm.model(**batch).loss
    inputs = {name: tensor for name, tensor in batch.items() if name != "labels"}
    hidden = lm.model.base_model(**inputs).last_hidden_state
    predicted = batch["labels"].ne(-100)
    if not predicted.any():  # a batch where masking picked nothing: no loss, no gradient
        return hidden.sum() * 0.0
    logits = head(hidden[predicted])
    return torch.nn.functional.cross_entropy(logits.float(), batch["labels"][predicted])


def _masked_lm_head(model: PreTrainedModel) -> torch.nn.Module | None:
    heads = [child for child in model.children() if child is not model.base_model]
    return heads[0] if len(heads) == 1 else None


class _Run:
    """The training loop's state: nanoGPT-sized, one method per thing it does."""

    def __init__(
        self,
        lm: LanguageModel,
        packed: PackedCorpus,
        params: PretrainingConfig,
        seed: int,
        output_dir: Path,
        key: str,
        device: Device,
        on_step: StepCallback | None,
    ) -> None:
        from transformers import DataCollatorForLanguageModeling

        self.lm, self.packed, self.params, self.seed = lm, packed, params, seed
        self.output_dir, self.key, self.device, self.on_step = output_dir, key, device, on_step
        self.warmup_steps = params.head_warmup_steps if lm.head_missing else 0
        self.total_steps = self.warmup_steps + params.max_steps
        self.collator = DataCollatorForLanguageModeling(
            lm.tokenizer, mlm=not lm.causal, mlm_probability=params.mlm_probability
        )
        self.order = _BlockOrder(len(packed.train), seed)
        self.step = 0
        self.phase = "full"
        self.loss_curve: list[tuple[int, float]] = []
        self.perplexity_before: float = math.nan
        self.resumed_from_step: int | None = None

    def train(self) -> None:
        from tqdm.auto import tqdm

        optimizer, scheduler = self._resume_or_start()
        progress = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="pretrain",
            file=sys.stderr,
            disable=not sys.stderr.isatty(),
        )
        while self.step < self.total_steps:
            if self.step == self.warmup_steps and self.phase == "head":
                optimizer, scheduler = self._optimizer("full")
            if self.step == self.warmup_steps and math.isnan(self.perplexity_before):
                self.perplexity_before = self.perplexity()
            loss = self._train_step(optimizer, scheduler)
            self.step += 1
            self.loss_curve.append((self.step, loss))
            progress.update(1)
            progress.set_postfix(loss=f"{loss:.3f}")
            if self.step % self.params.save_steps == 0 and self.step < self.total_steps:
                self._save_checkpoint(optimizer, scheduler)
            if self.on_step is not None:
                self.on_step(self.step, loss)
        progress.close()

    def _train_step(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> float:
        import torch

        model = self.lm.model
        model.train()
        indices = self.order.batch(self.step, self.params.batch_size)
        batch = self._collate([self.packed.train[i] for i in indices], self.collator)
        with self.device.autocast():
            loss = language_model_loss(self.lm, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def _collate(self, blocks: list[Block], collator: Any) -> dict[str, torch.Tensor]:
        return {name: tensor.to(self.device.torch_device) for name, tensor in collator(blocks).items()}

    def perplexity(self) -> float:
        """exp(mean loss per predicted token) on the held-out blocks, with the same masks every call."""
        import torch
        from transformers import DataCollatorForLanguageModeling

        fixed_masks = DataCollatorForLanguageModeling(
            self.lm.tokenizer,
            mlm=not self.lm.causal,
            mlm_probability=self.params.mlm_probability,
            seed=self.seed,
        )
        model, heldout, size = self.lm.model, self.packed.heldout, self.params.batch_size
        model.eval()
        total_loss, total_tokens = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(heldout), size):
                batch = self._collate(heldout[start : start + size], fixed_masks)
                with self.device.autocast():
                    loss = language_model_loss(self.lm, batch)
                tokens = int((batch["labels"][:, 1:] if self.lm.causal else batch["labels"]).ne(-100).sum())
                total_loss, total_tokens = total_loss + float(loss) * tokens, total_tokens + tokens
        return math.exp(min(total_loss / total_tokens, 700.0)) if total_tokens else math.nan

    def _optimizer(self, phase: str) -> tuple[torch.optim.Optimizer, Any]:
        """Head phase: encoder frozen, constant LR. Full phase: everything, linear decay with warmup."""
        import torch
        from transformers import get_constant_schedule, get_linear_schedule_with_warmup

        model = self.lm.model
        model.requires_grad_(True)
        if phase == "head":
            model.base_model.requires_grad_(False)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            trainable, lr=self.params.learning_rate, weight_decay=WEIGHT_DECAY, foreach=True
        )
        self.phase = phase
        if phase == "head":
            return optimizer, get_constant_schedule(optimizer)
        warmup = math.ceil(LR_WARMUP_FRACTION * self.params.max_steps)
        return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, self.params.max_steps)

    def _resume_or_start(self) -> tuple[torch.optim.Optimizer, Any]:
        found = checkpoints.latest_checkpoint(self.output_dir, self.key)
        if found is None:
            checkpoints.remove_checkpoints(self.output_dir)  # stale ones from other inputs would confuse
            return self._optimizer("head" if self.warmup_steps else "full")
        checkpoint = Checkpoint(**found.record)
        optimizer, scheduler = self._optimizer(checkpoint.phase)
        state = checkpoints.restore(found, self.lm.model, self.device.torch_device)
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
        checkpoints.write_checkpoint(self.output_dir, self.step, self.lm.model, state, asdict(checkpoint))


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
    record["loss_curve"] = [(int(step), float(loss)) for step, loss in record["loss_curve"]]
    return PretrainResult(**{**record, "model_dir": cached_dir, "cache_hit": True, "seconds": seconds})
