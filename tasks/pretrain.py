"""Domain-adaptive continued pretraining: the run, its cache, and which objective (`tasks.objectives`) it trains.

`pretraining.objective` picks what the encoder learns from the unlabelled domain corpus (plus the
labelled training texts: task-adaptive pretraining, Gururangan et al., "Don't Stop Pretraining", ACL 2020):

- `mlm` / `clm` — masked / causal language modelling on packed blocks (`tasks.objectives.language_modelling`).
- `simcse` — unsupervised SimCSE, for sentence encoders (`tasks.objectives.simcse`).
- `tsdae` — a denoising auto-encoder of the pooled vector (`tasks.objectives.tsdae`).
- `auto` (the default) — `clm` for decoders, `mlm` for other encoders, and none for a sentence encoder (a
  base that ships a sentence-transformers pooling config, like the packaged MiniLM): such a base was trained
  contrastively on a billion sentence pairs, and adapting it did not reliably pay in `bench/quality.py`
  (bench/RESULTS.md), so its domain corpus feeds self-training (`tasks.self_training`) instead.

Checkpoints in `output_dir` let an interrupted run resume. The finished model is cached under
`cache_root/<key>/`, the key hashing every input that shapes it. This cache is written here rather than left to
Prefect's task cache because what it keeps is a folder of weights that later runs train from and torchrun
workers write, not a return value. A step's batch (and its masks) depend on the seed and the step alone, so a
resumed run and a run with N processes (`nproc`, see `tasks.distributed`) see the same training examples as one
uninterrupted process.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import BadInputError
from core.hashing import run_key, sha256_files
from tasks import checkpoints, distributed, training
from tasks.classifier import POOLING_DIR, copy_pooling_config
from tasks.distributed import SINGLE_PROCESS, Ranks
from tasks.modeling import deterministic, is_causal_lm, pick_device, quiet_transformers
from tasks.objectives import LANGUAGE_MODELLING, RECIPES
from tasks.objectives.base import PretrainJob

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


CACHE_FORMAT = 5  # bump when the training recipe changes, so old cache entries stop matching

RESULT_FILE = "steward_pretrain.json"

StepCallback = training.StepCallback


@dataclass(frozen=True)
class PretrainResult:
    """The adapted checkpoint and how it was made. The held-out loss is the objective's own loss on the
    held-out 5% of the corpus; for language modelling its exp is the perplexity, measured `before` once the
    head is warmed up (a random head's perplexity says nothing about the domain)."""

    model_dir: Path
    cache_hit: bool
    cache_key: str
    objective: str  # "mlm", "clm", "simcse", "tsdae" (what `auto` chose, if it was asked) or "instructions"
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

def continue_pretraining(job: PretrainJob, nproc: int = 1, on_step: StepCallback | None = None) -> PretrainResult:
    """Adapt `job.base_model_dir` to `job.corpus`; returns the cached result at once when the inputs match.
    `nproc` > 1 trains in that many torchrun workers. `on_step(step, loss)` is called after every optimizer step
    (progress reporting; it runs in the training process, so only with `nproc` 1)."""
    started = time.perf_counter()
    job_objective(job)  # before any worker starts
    cached_dir = job.cache_root / cache_key(job)
    if (cached_dir / RESULT_FILE).is_file():
        return _cached_result(cached_dir, time.perf_counter() - started)
    if nproc == 1:
        return run_pretraining(job, SINGLE_PROCESS, on_step)
    if on_step is not None:
        raise ValueError("on_step runs inside the training process: it needs nproc=1")
    distributed.require_batch_per_rank(job.params.batch_size, nproc, "pretraining")
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

def job_objective(job: PretrainJob) -> str:
    """The job's own objective (instruction tuning), else `pretraining.objective` resolved for its base."""
    return job.objective or required_objective(job.params.objective, job.base_model_dir)

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
    key = cache_key(job)
    quiet_transformers()
    device = pick_device(ranks.local_rank, job.params.cpu_bf16)
    objective = job_objective(job)
    with deterministic(job.seed):
        recipe = RECIPES[objective](job, key, device, ranks)
        loop = training.train(recipe, ranks, device, f"pretrain ({objective})", on_step=on_step)
        recipe.keep_best()
        loss_after = recipe.kept_heldout_loss()
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

def cache_key(job: PretrainJob) -> str:
    """sha256 of the base model's file hashes, the corpus fingerprint, the params and the seed. The
    process count is left out: it changes only which dropout noise each example gets."""
    return run_key({
        "format": CACHE_FORMAT,
        "base_model_files": sha256_files(job.base_model_dir),
        "corpus": job.corpus.fingerprint,
        "validation": job.validation.fingerprint if job.validation is not None else None,
        "params": job.params.model_dump(mode="json", exclude={"enabled"}),
        "seed": job.seed,
        "objective": job.objective,
        "start": None if job.start_dir is None else sha256_files(job.start_dir),
    })

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
