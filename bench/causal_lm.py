"""Domain-adaptive continued pretraining of the packaged decoder: Steward against the `run_clm.py` recipe.

    .venv/bin/python bench/causal_lm.py [--corpora python-docs fortunes] [--steps 40] [--json]

One run, per corpus, on the same documents, split, token budget and seed:

- `steward-lora`: `tasks.pretrain.continue_pretraining` with `pretraining.method: lora` (the causal-lm default:
  rank 16 on every linear layer, no dropout, bf16 autocast on a CPU that computes bf16; the learning rate of
  `steward demo --task causal-lm`), early stopping on the validation documents every 10 steps;
- `steward-full`: the same loop training every weight (`method: full`, its default learning rate);
- `run_clm`: what a user would otherwise run: Hugging Face's `run_clm.py` recipe (documents tokenised,
  concatenated and cut into blocks, `Trainer` with its defaults: AdamW at 5e-5, linear decay, no warm-up) with
  `DataCollatorForLanguageModeling(mlm=False)`.

Every method trains `steps` × 8 blocks of 128 tokens on the training documents of the packaged SmolLM2-135M-Instruct
(`base_model: smollm2`). Then, for each: the test documents' token-weighted perplexity with a bootstrap 95%
interval over documents, the paired gain over the base, forgetting (the relative increase of cross-entropy on texts
sampled from the base with a fixed seed: an estimate of the drift from the base), the whole training call's wall
time (model loading, validation and checkpoints included: what a user waits for), tokens per second of the
training steps alone, the process's peak resident memory, and the size of what a version stores (LoRA: the
adapter). For `steward-lora` also the cost of loading a registered adapter version (verified, merged) over loading
the base alone. Each method runs in its own process, so peak memory is its own.

Corpora (real third-party text installable here; never the Debian package descriptions or changelogs):
`python-docs`, the docstrings of this Python's standard library (`steward.demo.python_docs`); `fortunes`, the
quotations of Debian's `fortunes` package (`apt-get install fortunes`), one document per fortune, a seeded sample.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from core.config import LoraConfig, PretrainingConfig
from core.hashing import ModelFiles
from steward.cli import QUIET_THIRD_PARTY_DEFAULTS
from tasks.data import TextTable, make_table, split_documents
from tasks.modeling import load_tokenizer, quiet_transformers, resolve_base_model
from tasks.perplexity import DocumentLosses, document_losses, relative_gain, relative_increase, sample_reference

SEED = 13
BATCH, BLOCK = 8, 128
LORA_RATE = 1e-3  # steward demo --task causal-lm's learning rate
REFERENCE_SAMPLES = 16
FORTUNES_DIR = Path("/usr/share/games/fortunes")
FORTUNES_SAMPLE = 1500
METHODS = ("steward-lora", "steward-full", "run_clm")


def python_docs() -> list[str]:
    from steward.demo.python_docs import docstrings

    return list(docstrings().values())


def fortunes() -> list[str]:
    """Every fortune of the installed `fortunes` package (its `.u8` files are UTF-8), a seeded sample."""
    files = sorted(FORTUNES_DIR.glob("*.u8"))
    if not files:
        raise SystemExit(f"no fortunes in {FORTUNES_DIR}: apt-get install fortunes fortunes-min")
    texts = []
    for file in files:
        texts += [part.strip() for part in file.read_text(encoding="utf-8").split("\n%\n") if len(part.strip()) > 40]
    unique = sorted(set(texts))
    return sorted(random.Random(SEED).sample(unique, min(FORTUNES_SAMPLE, len(unique))))


CORPORA = {"python-docs": python_docs, "fortunes": fortunes}


def splits_of(corpus: str) -> tuple[TextTable, TextTable, TextTable]:
    documents = CORPORA[corpus]()
    table = make_table("corpus", Path(corpus), list(documents), None, {"text": "object"})
    splits = split_documents(table, 0.05, 0.1, SEED)
    return splits.train, splits.validation, splits.test


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_steward(method: str, train: TextTable, validation: TextTable, steps: int, work: Path) -> dict[str, Any]:
    from tasks.objectives.base import PretrainJob
    from tasks.pretrain import continue_pretraining

    lora = method == "steward-lora"
    params = PretrainingConfig(method="lora" if lora else "full", lora=LoraConfig(), max_steps=steps,
                               batch_size=BATCH, max_seq_length=BLOCK, learning_rate=LORA_RATE if lora else None,
                               save_steps=10, early_stopping_patience=2, max_epochs=100.0)
    base_dir = resolve_base_model("smollm2")
    job = PretrainJob(base_dir, train, params, SEED, work / "out", work / "cache", validation)
    result = continue_pretraining(job)
    stored = "adapter_model.safetensors" if lora else "model.safetensors"
    return {"model_dir": str(result.model_dir), "wall_seconds": result.seconds, "steps": result.steps,
            "trained_tokens": result.trained_tokens, "training_seconds": result.training_seconds,
            "stored_bytes": (result.model_dir / stored).stat().st_size}


def train_run_clm(train: TextTable, steps: int, work: Path) -> dict[str, Any]:
    """`run_clm.py`'s data preparation and Trainer, its defaults, with `DataCollatorForLanguageModeling(mlm=False)`."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments

    started = time.perf_counter()
    base_dir = resolve_base_model("smollm2")
    tokenizer = load_tokenizer(base_dir)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    tokenized = Dataset.from_dict({"text": train.present_texts()}).map(
        lambda batch: tokenizer(batch["text"]), batched=True, remove_columns=["text"])

    def group_texts(examples: dict[str, list]) -> dict[str, list]:
        concatenated = {key: list(itertools.chain.from_iterable(examples[key])) for key in examples}
        total = (len(concatenated["input_ids"]) // BLOCK) * BLOCK
        return {key: [ids[i : i + BLOCK] for i in range(0, total, BLOCK)] for key, ids in concatenated.items()}

    blocks = tokenized.map(group_texts, batched=True, batch_size=len(tokenized))
    arguments = TrainingArguments(output_dir=str(work / "run_clm"), per_device_train_batch_size=BATCH, max_steps=steps,
                                  seed=SEED, save_strategy="no", report_to=[], logging_steps=10,
                                  disable_tqdm=True, dataloader_drop_last=True)
    trainer = Trainer(model=model, args=arguments, train_dataset=blocks,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    output = trainer.train()
    trainer.save_model(str(work / "run_clm" / "model"))
    tokenizer.save_pretrained(str(work / "run_clm" / "model"))
    return {"model_dir": str(work / "run_clm" / "model"), "wall_seconds": time.perf_counter() - started,
            "steps": steps, "trained_tokens": steps * BATCH * BLOCK,
            "training_seconds": output.metrics["train_runtime"],
            "stored_bytes": (work / "run_clm" / "model" / "model.safetensors").stat().st_size}


def load_trained(method: str, model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    if method != "steward-lora":
        return AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(str(resolve_base_model("smollm2")))
    return PeftModel.from_pretrained(base, str(model_dir)).merge_and_unload().eval()


def adapter_load_overhead(model_dir: Path, work: Path) -> float:
    """Seconds to load a registered LoRA version (files verified against the base's fingerprint, merged) minus
    seconds to load the base alone."""
    from transformers import AutoModelForCausalLM

    from tasks.causal_lm import package_model
    from tasks.language_model import load_causal_lm

    base_dir = resolve_base_model("smollm2")
    folder = package_model(model_dir, work / "version", "smollm2", base_dir, BLOCK)
    started = time.perf_counter()
    AutoModelForCausalLM.from_pretrained(str(base_dir))
    base_seconds = time.perf_counter() - started
    started = time.perf_counter()
    load_causal_lm(folder)
    return time.perf_counter() - started - base_seconds


def one_method(method: str, corpus: str, steps: int, reference: list[str]) -> dict[str, Any]:
    """Train, then score the test documents and the reference texts (runs in its own process)."""
    quiet_transformers()
    train, validation, test = splits_of(corpus)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        trained = train_run_clm(train, steps, work) if method == "run_clm" else \
            train_steward(method, train, validation, steps, work)
        model = load_trained(method, Path(trained["model_dir"]))
        tokenizer = load_tokenizer(resolve_base_model("smollm2"))
        scores = {"test": document_losses(model, tokenizer, test.present_texts(), BLOCK).to_json(),
                  "reference": document_losses(model, tokenizer, reference, BLOCK).to_json()}
        if method == "steward-lora":
            trained["adapter_load_overhead_seconds"] = adapter_load_overhead(Path(trained["model_dir"]), work)
    return {**trained, **scores, "peak_rss_mb": peak_rss_mb()}


def in_subprocess(method: str, corpus: str, steps: int, reference: list[str]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(reference, handle)
    command = [sys.executable, __file__, "--one", method, "--corpora", corpus, "--steps", str(steps),
               "--reference", handle.name]
    env = {**os.environ, **QUIET_THIRD_PARTY_DEFAULTS, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    os.unlink(handle.name)
    if done.returncode != 0:
        raise SystemExit(f"{method} on {corpus} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def base_scores(corpus: str) -> tuple[DocumentLosses, DocumentLosses, list[str]]:
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    _, _, test = splits_of(corpus)
    base_dir = resolve_base_model("smollm2")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(str(base_dir)).eval(), load_tokenizer(base_dir)
    reference = sample_reference(model, tokenizer, REFERENCE_SAMPLES, BLOCK, SEED)
    return (document_losses(model, tokenizer, test.present_texts(), BLOCK),
            document_losses(model, tokenizer, reference, BLOCK), reference)


def summary(method: str, run: dict[str, Any], base_test: DocumentLosses, base_reference: DocumentLosses,
            base_bytes: int) -> dict[str, Any]:
    test, reference = DocumentLosses.from_json(run["test"]), DocumentLosses.from_json(run["reference"])
    gain = relative_gain(base_test, test, SEED)
    forgetting = relative_increase(base_reference, reference, SEED)
    row = {
        "method": method, "perplexity": test.perplexity, "perplexity_ci": list(test.interval(SEED)),
        "gain": gain.value, "gain_ci": [gain.low, gain.high],
        "forgetting": forgetting.value, "forgetting_ci": [forgetting.low, forgetting.high],
        "steps": run["steps"], "wall_seconds": run["wall_seconds"],
        "tokens_per_second": run["trained_tokens"] / run["training_seconds"], "peak_rss_mb": run["peak_rss_mb"],
        "stored_bytes": run["stored_bytes"], "stored_share_of_base": run["stored_bytes"] / base_bytes,
    }
    if "adapter_load_overhead_seconds" in run:
        row["adapter_load_overhead_seconds"] = run["adapter_load_overhead_seconds"]
    return row


def bench_corpus(corpus: str, steps: int) -> dict[str, Any]:
    base_test, base_reference, reference = base_scores(corpus)
    base_bytes = (resolve_base_model("smollm2") / "model.safetensors").stat().st_size
    low, high = base_test.interval(SEED)
    rows = [summary(method, in_subprocess(method, corpus, steps, reference), base_test, base_reference, base_bytes)
            for method in METHODS]
    clm = next(row for row in rows if row["method"] == "run_clm")
    for row in rows:
        row["wall_vs_run_clm"] = row["wall_seconds"] / clm["wall_seconds"]
    return {"corpus": corpus, "test_documents": len(base_test), "test_tokens": int(base_test.tokens.sum()),
            "base_perplexity": base_test.perplexity, "base_perplexity_ci": [low, high],
            "token_budget": steps * BATCH * BLOCK, "base_fingerprint": ModelFiles.of(resolve_base_model("smollm2"))
            .fingerprint[:16], "methods": rows}


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{result['corpus']}: {result['test_documents']} test documents, {result['test_tokens']} tokens; base "
          f"perplexity {result['base_perplexity']:.2f} ({result['base_perplexity_ci'][0]:.2f}–"
          f"{result['base_perplexity_ci'][1]:.2f}); {result['token_budget']} training tokens")
    print(f"{'method':14} {'ppl':>7} {'gain':>7} {'gain 95%':>15} {'forget':>7} {'wall s':>7} {'× clm':>6} "
          f"{'tok/s':>6} {'RSS MB':>7} {'stored':>9}")
    for row in result["methods"]:
        print(f"{row['method']:14} {row['perplexity']:7.2f} {row['gain']:7.1%} "
              f"{row['gain_ci'][0]:7.1%}–{row['gain_ci'][1]:6.1%} {row['forgetting']:+7.1%} "
              f"{row['wall_seconds']:7.0f} {row['wall_vs_run_clm']:6.2f} {row['tokens_per_second']:6.0f} "
              f"{row['peak_rss_mb']:7.0f} {row['stored_share_of_base']:8.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)  # a worker process
    parser.add_argument("--reference", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        reference = json.loads(Path(args.reference).read_text())
        print(json.dumps(one_method(args.one, args.corpora[0], args.steps, reference)))
        return
    results = []
    for corpus in args.corpora:  # each table as soon as its corpus is done (one takes about 15 minutes)
        results.append(bench_corpus(corpus, args.steps))
        print_table(results[-1])
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
