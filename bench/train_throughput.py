"""Training throughput on the packaged MiniLM: Steward's tasks against plain Hugging Face, side by side.

    .venv/bin/python bench/train_throughput.py [--examples 384] [--epochs 1] [--mlm-steps 24] [--repeats 2] [--json]

One process, the project's own demo data (`steward.demo.write_demo` into a temp dir), the same model
(all-MiniLM-L6-v2, `base_model: minilm`), data and hyperparameters (the demo config's batch sizes,
sequence lengths and learning rates) on both sides:

- fine-tuning: a plain `transformers.Trainer` with its defaults (fused AdamW, linear schedule) on text
  tokenised with `padding="max_length"`, against `tasks.finetune.fine_tune` (length-grouped batches,
  dynamic padding, fused AdamW). `ratio` = Steward / HF tokens per second.
- continued pretraining: `BertForMaskedLM` through the Trainer with the standard
  `DataCollatorForLanguageModeling` (logits over the whole vocabulary at every position), against
  `tasks.pretrain.continue_pretraining` (vocabulary projection only at masked positions), both on the
  same packed blocks. `mlm_ratio` = Steward / HF.

Tokens are the real tokens that go through training steps, counted the same way on both sides: for
fine-tuning each example's own token count (its attention mask, after truncation to max_seq_length;
pad positions never count) once per epoch it is trained in; for pretraining every position of a packed
block (blocks have no padding). Seconds are the training steps' wall time: HF's `train_runtime`, and
Steward's `training_seconds` (validation, checkpoints and model loading excluded on both sides).
Achieved FLOP/s is 6 × parameters (all of them, embeddings included) × tokens/s; MFU divides it by
this machine's fp32 matmul peak. Half of MiniLM's parameters are its embeddings, which do no matmul work
(except as the tied MLM decoder), so MFU is also shown with non-embedding parameters only. The peak
is measured here with a timed 2048³ `torch.matmul` (best of five).
Timings on a shared machine are noisy: `--repeats` runs each side several times, alternating, and keeps
each side's fastest run; an untimed warm-up step comes first.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from contextlib import redirect_stdout
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.config import FinetuningConfig, PretrainingConfig, load_config
from steward.cli import QUIET_THIRD_PARTY_DEFAULTS
from steward.demo import write_demo
from tasks import training
from tasks.classifier import load_saved_classifier
from tasks.data import TextTable, load_corpus, load_table, make_table
from tasks.finetune import FineTuneJob, fine_tune
from tasks.modeling import load_tokenizer, pick_device, quiet_transformers, resolve_base_model
from tasks.objectives.base import DEFAULT_LEARNING_RATES, PretrainJob
from tasks.objectives.language_modelling import load_language_model, pack_corpus
from tasks.pretrain import continue_pretraining

if TYPE_CHECKING:
    from transformers import PreTrainedModel, Trainer

SEED = 13
MATMUL_SIZE = 2048
MATMUL_REPEATS = 5
TOKENS_DEFINITION = (
    "real tokens through training steps: fine-tuning counts each example's own (non-pad) tokens per epoch "
    "trained; pretraining counts every position of a packed block (no padding)"
)


@dataclass(frozen=True)
class Measurement:
    tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


@dataclass(frozen=True)
class Parameters:
    total: int
    non_embedding: int


@dataclass(frozen=True)
class Side:
    """One implementation's figures (its fastest run)."""

    name: str
    tokens: int
    seconds: float
    tokens_per_second: float
    parameters: int
    non_embedding_parameters: int
    flops_per_second: float
    mfu: float
    mfu_non_embedding: float


@dataclass(frozen=True)
class Workload:
    """The demo data and settings both sides train on."""

    model_dir: Path
    train: TextTable
    validation: TextTable
    corpus: TextTable
    finetuning: FinetuningConfig
    pretraining: PretrainingConfig
    workdir: Path


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rows(table: TextTable, count: int) -> TextTable:
    texts, labels = table.complete_rows()
    return make_table(table.role, table.source, texts[:count], labels[:count], table.schema)


def demo_workload(workdir: Path, args: argparse.Namespace) -> Workload:
    config = load_config(write_demo(workdir / "demo"))
    data = config.data
    train = load_table(config.resolve(data.train), data.text_column, data.label_column, "train")
    validation = load_table(config.resolve(data.validation), data.text_column, data.label_column, "validation")
    return Workload(
        model_dir=resolve_base_model("minilm"),
        train=rows(train, args.examples),
        validation=rows(validation, args.val_examples),
        corpus=load_corpus(config),
        finetuning=config.finetuning.model_copy(update={"epochs": args.epochs}),
        pretraining=config.pretraining.model_copy(
            update={"objective": "mlm", "learning_rate": DEFAULT_LEARNING_RATES["mlm"],
                    "max_steps": args.mlm_steps, "head_warmup_steps": 0, "save_steps": args.mlm_steps + 1}
        ),
        workdir=workdir,
    )


def measure_peak_flops() -> float:
    """Best of a few timed fp32 `torch.matmul`s of two 2048 × 2048 matrices (2n³ FLOPs each)."""
    import torch

    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    torch.matmul(a, b)  # warm-up
    best = math.inf
    for _ in range(MATMUL_REPEATS):
        started = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * MATMUL_SIZE**3 / best


def warm_up(work: Workload) -> None:
    """One untimed MiniLM training step, so that whichever side runs first does not pay the process's
    one-off costs (thread pools, kernel selection, first touch of the weights) in its figures."""
    import torch
    from transformers import BertForMaskedLM

    model = BertForMaskedLM.from_pretrained(str(work.model_dir))
    shape = (work.pretraining.batch_size, work.pretraining.max_seq_length)
    input_ids = torch.randint(1000, model.config.vocab_size, shape)
    model(input_ids=input_ids, labels=input_ids).loss.backward()


def trainer_arguments(output_dir: Path, batch_size: int, learning_rate: float, weight_decay: float, **extra: object):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        seed=SEED,
        report_to=[],
        disable_tqdm=True,
        save_strategy="no",
        **extra,
    )


def run_trainer(trainer: Trainer) -> float:
    return float(trainer.train().metrics["train_runtime"])


def hf_finetune(work: Workload, out: Path) -> tuple[Measurement, Parameters]:
    """The Trainer's defaults on max_length-padded text; tokens from the attention masks."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, Trainer

    params = work.finetuning
    texts, labels = work.train.complete_rows()
    names = sorted(set(labels))
    tokenizer = load_tokenizer(work.model_dir)
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=params.max_seq_length)
    dataset = Dataset.from_dict({**encoded, "labels": [names.index(label) for label in labels]})
    model = AutoModelForSequenceClassification.from_pretrained(str(work.model_dir), num_labels=len(names))
    steps = math.ceil(len(texts) / params.batch_size) * params.epochs
    arguments = trainer_arguments(
        out, params.batch_size, params.learning_rate, training.WEIGHT_DECAY,
        num_train_epochs=params.epochs, warmup_steps=math.ceil(training.LR_WARMUP_FRACTION * steps),
    )
    seconds = run_trainer(Trainer(model=model, args=arguments, train_dataset=dataset))
    tokens = sum(sum(mask) for mask in encoded["attention_mask"]) * params.epochs
    return Measurement(tokens, seconds), parameter_count(model)


def steward_finetune(work: Workload, out: Path) -> tuple[Measurement, Parameters]:
    result = fine_tune(FineTuneJob(work.model_dir, work.train, work.validation, work.finetuning, SEED, out, "macro_f1"))
    encoder = load_saved_classifier(result.model_dir, pick_device()).model.encoder
    return Measurement(result.trained_tokens, result.training_seconds), parameter_count(encoder)


def hf_pretrain(work: Workload, out: Path) -> tuple[Measurement, Parameters]:
    """run_mlm.py's recipe: the packed blocks, the standard collator, logits at every position."""
    from datasets import Dataset
    from transformers import BertForMaskedLM, DataCollatorForLanguageModeling, Trainer

    params = work.pretraining
    tokenizer = load_tokenizer(work.model_dir)
    packed = pack_corpus(tokenizer, work.corpus, params.max_seq_length, causal=False, seed=SEED)
    dataset = Dataset.from_dict({"input_ids": packed.train.input_ids.tolist()})
    model = BertForMaskedLM.from_pretrained(str(work.model_dir))
    arguments = trainer_arguments(
        out, params.batch_size, params.learning_rate, training.WEIGHT_DECAY, max_steps=params.max_steps,
        warmup_steps=math.ceil(training.LR_WARMUP_FRACTION * params.max_steps),
    )
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=params.mlm_probability)
    seconds = run_trainer(Trainer(model=model, args=arguments, train_dataset=dataset, data_collator=collator))
    tokens = params.max_steps * params.batch_size * packed.block_size
    return Measurement(tokens, seconds), parameter_count(model)


def steward_pretrain(work: Workload, out: Path) -> tuple[Measurement, Parameters]:
    result = continue_pretraining(PretrainJob(work.model_dir, work.corpus, work.pretraining, SEED, out / "work",
                                              out / "cache"))
    model = load_language_model(result.model_dir, pick_device()).model
    return Measurement(result.trained_tokens, result.training_seconds), parameter_count(model)


def parameter_count(model: PreTrainedModel) -> Parameters:
    return Parameters(model.num_parameters(), model.num_parameters(exclude_embeddings=True))


def side(name: str, runs: list[tuple[Measurement, Parameters]], peak: float) -> Side:
    """The fastest run: on a shared machine the least disturbed one (what `timeit` reports, too)."""
    measurement, parameters = max(runs, key=lambda run: run[0].tokens_per_second)
    flops = 6 * parameters.total * measurement.tokens_per_second
    non_embedding_flops = 6 * parameters.non_embedding * measurement.tokens_per_second
    return Side(
        name, measurement.tokens, measurement.seconds, measurement.tokens_per_second, parameters.total,
        parameters.non_embedding, flops, flops / peak, non_embedding_flops / peak,
    )


def compare(label: str, baseline, steward, work: Workload, repeats: int, peak: float) -> tuple[Side, Side]:
    """Alternate the two sides `repeats` times, each run in a fresh output folder."""
    base_runs, steward_runs = [], []
    for attempt in range(repeats):
        progress(f"{label}: HF baseline, run {attempt + 1}/{repeats}")
        base_runs.append(baseline(work, Path(tempfile.mkdtemp(dir=work.workdir))))
        progress(f"{label}: Steward, run {attempt + 1}/{repeats}")
        steward_runs.append(steward(work, Path(tempfile.mkdtemp(dir=work.workdir))))
    return side("HF Trainer", base_runs, peak), side("Steward", steward_runs, peak)


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    import torch

    quiet_transformers()
    work = demo_workload(workdir, args)
    warm_up(work)
    peak = measure_peak_flops()
    finetune = compare("fine-tuning", hf_finetune, steward_finetune, work, args.repeats, peak)
    pretrain = compare("pretraining", hf_pretrain, steward_pretrain, work, args.repeats, peak)
    return {
        "model": "all-MiniLM-L6-v2 (packaged, base_model: minilm)",
        "tokens": TOKENS_DEFINITION,
        "torch_threads": torch.get_num_threads(),
        "cpu_cores": os.cpu_count(),
        "peak_fp32_matmul_flops": peak,
        "finetune": {
            "examples": work.train.rows, "epochs": args.epochs, **work.finetuning.model_dump(exclude={"epochs"}),
            "hf_trainer": asdict(finetune[0]), "steward": asdict(finetune[1]),
        },
        "ratio": finetune[1].tokens_per_second / finetune[0].tokens_per_second,
        "pretrain": {
            "steps": args.mlm_steps, **work.pretraining.model_dump(include={"batch_size", "max_seq_length"}),
            "hf_masked_lm": asdict(pretrain[0]), "steward": asdict(pretrain[1]),
        },
        "mlm_ratio": pretrain[1].tokens_per_second / pretrain[0].tokens_per_second,
        "repeats": args.repeats,
    }


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Training throughput, MiniLM, one process (fastest of {report['repeats']} runs per side)")
    for column in ("stage", "implementation", "tokens", "step seconds", "tokens/s", "GFLOP/s", "MFU", "MFU non-emb."):
        table.add_column(column, justify="left" if column in ("stage", "implementation") else "right")
    for stage, baseline_key in (("finetune", "hf_trainer"), ("pretrain", "hf_masked_lm")):
        for key in (baseline_key, "steward"):
            figures = report[stage][key]
            table.add_row(
                stage, figures["name"], f"{figures['tokens']:,}", f"{figures['seconds']:.1f}",
                f"{figures['tokens_per_second']:,.0f}", f"{figures['flops_per_second'] / 1e9:.1f}",
                f"{figures['mfu']:.1%}", f"{figures['mfu_non_embedding']:.1%}",
            )
    console = Console(width=120)
    console.print(table)
    console.print(f"fine-tuning ratio (Steward / HF Trainer, tokens/s): [bold]{report['ratio']:.2f}[/] (goal ≥ 1.3)")
    console.print(f"pretraining ratio (Steward / HF MLM, tokens/s): [bold]{report['mlm_ratio']:.2f}[/] (goal ≥ 1.5)")
    console.print(
        f"peak fp32 matmul: {report['peak_fp32_matmul_flops'] / 1e9:.1f} GFLOP/s "
        f"({report['torch_threads']} torch threads, {report['cpu_cores']} cores); tokens = {report['tokens']}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=384, help="training tickets for fine-tuning")
    parser.add_argument("--val-examples", type=int, default=64, help="validation tickets (Steward's epoch check)")
    parser.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs")
    parser.add_argument("--mlm-steps", type=int, default=24, help="masked-LM optimizer steps")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side, alternating; the fastest counts")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    for name in ("examples", "val_examples", "epochs", "mlm_steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for key, value in QUIET_THIRD_PARTY_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # The Trainer prints its logs on stdout; stdout is for the report alone.
    with tempfile.TemporaryDirectory(prefix="steward-throughput-") as workdir, redirect_stdout(sys.stderr):
        report = bench(args, Path(workdir))
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
