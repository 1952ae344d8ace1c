"""The causal-lm lifecycle's own compute, between training (`tasks.pretrain`) and the gate (`tasks.gate`): package
the adapted model as a registrable folder, score documents (`tasks.perplexity`), sample the reference texts and
answer the fixed prompts of the audit report.

Scores are returned as plain JSON (`DocumentLosses.to_json`) so Prefect can cache them by the model's recorded
file hashes and the documents' fingerprint: the base and the champion are scored on a test split once.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.hashing import ModelFiles
from core.vocabulary import CAUSAL_LM, FP32
from tasks import perplexity
from tasks.data import TextTable
from tasks.manifest import MANIFEST_FILE, ModelManifest
from tasks.modeling import cpu_device, load_tokenizer, quiet_transformers, weight_format_kwargs

ADAPTER_CONFIG = "adapter_config.json"
TRAINING_RECORD = "steward_pretrain.json"  # the pretraining cache's own record; the registry keeps its figures

# The audit report's spot check: every causal-lm version answers these same prompts, greedily, beside its base.
# Fixed (never per run or per config) so that reports of different versions and models compare answer by answer;
# changing them breaks that comparison with every version registered before. Short and neutral: three openings
# of reference documentation (what a documentation corpus adapts a general decoder to) and two general ones (what
# the adaptation should leave alone).
PROMPTS = (
    "The function returns",
    "Example:",
    "Raises",
    "The capital of France is",
    "Once upon a time",
)
PROMPT_TOKENS = 48  # new tokens per answer: a sentence or two, enough to see the style change


def package_model(adapted_dir: Path, output_dir: Path, base_model: str, base_dir: Path, max_length: int) -> Path:
    """Copy the adapted model (a LoRA adapter, or the full weights) and its tokenizer into `output_dir`, with the
    manifest that names the base and its fingerprint, so the folder loads on its own."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(adapted_dir, output_dir, ignore=shutil.ignore_patterns(TRAINING_RECORD, "README.md"))
    adapter = (output_dir / ADAPTER_CONFIG).is_file()
    base_fingerprint = ModelFiles.of(base_dir).fingerprint
    ModelManifest(task=CAUSAL_LM, form=FP32, max_length=max_length, base_fingerprint=base_fingerprint,
                  base_model=base_model, adapter=adapter).write(output_dir)
    return output_dir


def score_documents(model: ModelFiles, table: TextTable, max_length: int,
                    base_dir: str | None = None) -> dict[str, Any]:
    """Per-document losses of `table` under `model` (a packaged Steward model, or a bare base folder), as JSON."""
    causal_lm, tokenizer = _load(model, base_dir)
    return perplexity.document_losses(causal_lm, tokenizer, table.present_texts(), max_length).to_json()


def sample_reference(model: ModelFiles, count: int, max_new_tokens: int, seed: int) -> list[str]:
    """Texts sampled from the base itself with a fixed seed: the default reference of the forgetting measure."""
    causal_lm, tokenizer = _load(model, None)
    return perplexity.sample_reference(causal_lm, tokenizer, count, max_new_tokens, seed)


def answer_prompts(model: ModelFiles, prompts: Sequence[str], max_new_tokens: int,
                   base_dir: str | None = None) -> list[str]:
    """Greedy continuations of `prompts` by `model` (a packaged Steward model, or a bare base folder), in one batch
    through `Generator` (what `steward predict --generate` and the server run), so the report shows what users get.
    Greedy: the same model and prompts give the same answers, so a difference beside the base is the model's."""
    from tasks.language_model import Generator

    causal_lm, tokenizer = _load(model, base_dir)
    if tokenizer.pad_token is None:  # as `load_causal_lm` does for a packaged model
        tokenizer.pad_token = tokenizer.eos_token
    folder = model.folder  # verified by `_load`
    if (folder / MANIFEST_FILE).is_file():
        manifest = ModelManifest.read(folder)
    else:  # a bare base, described as itself (`max_length` is read by `Generator.score` alone, not used here)
        window = getattr(causal_lm.config, "max_position_embeddings", None) or max_new_tokens
        manifest = ModelManifest(task=CAUSAL_LM, form=FP32, max_length=window, base_fingerprint=model.fingerprint)
    generator = Generator(causal_lm, tokenizer, manifest, cpu_device(), name=folder.name)
    return [completion.text for completion in generator.generate(list(prompts), max_new_tokens, temperature=0.0)]


def _load(model: ModelFiles, base_dir: str | None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM

    from tasks.language_model import load_causal_lm

    quiet_transformers()
    folder = model.verified()
    if (folder / MANIFEST_FILE).is_file():
        loaded, tokenizer, _ = load_causal_lm(folder, cpu_device(), Path(base_dir) if base_dir else None)
        return loaded, tokenizer
    loaded = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, **weight_format_kwargs(folder))
    return loaded.eval(), load_tokenizer(folder)
