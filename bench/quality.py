"""Cross-domain quality: TF-IDF + LR, MiniLM fine-tuned, and MiniLM adapted to the target domain then fine-tuned.

    .venv/bin/python bench/quality.py --seeds 3 --target yelp [--train-limit N] [--pretrain-steps 150] [--json]

Data: the sentiment labelled sentences of Kotzias et al., "From Group to Individual Labels using Deep
Features", KDD 2015 (CC BY 4.0): 1,000 review sentences from each of Amazon, IMDB and Yelp, read from
`../shared/data/sentiment_labelled_sentences/` beside the checkout (or $STEWARD_SHARED_DATA), never copied.

Protocol, per seed: train on the two other domains pooled (a seeded, stratified 10% of them is the
validation split for early stopping and the baseline's C). The target domain is split 50/50 (seeded,
stratified) into an unlabelled adaptation corpus (labels dropped) and a labelled test half; every method
is scored on that same test half. Adaptation is continued masked-LM pretraining on the adaptation half
(domain-adaptive pretraining, Gururangan et al., "Don't Stop Pretraining", ACL 2020), which never sees
the test sentences, so the comparison is not transductive. Nothing is tuned on the test half.
Progress goes to stderr; the table (or, with --json, one JSON object) to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from steward.cli import QUIET_THIRD_PARTY_DEFAULTS
from steward.config import FinetuningConfig, PretrainingConfig
from tasks.data import TextTable, make_table, split_validation
from tasks.evaluate import evaluate_model
from tasks.finetune import accuracy_and_macro_f1, fine_tune
from tasks.modeling import resolve_base_model
from tasks.pretrain import PretrainResult, continue_pretraining

if TYPE_CHECKING:
    from rich.console import Console
    from sklearn.pipeline import Pipeline

CITATION = 'Kotzias et al., "From Group to Individual Labels using Deep Features", KDD 2015'
GURURANGAN = "Gururangan et al., ACL 2020, report +0.4 to +12.6 F1 from domain-adaptive pretraining"
BESIDE_CHECKOUT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DOMAIN_FILES = {"amazon": "amazon_cells", "imdb": "imdb", "yelp": "yelp"}
METHODS = ("tfidf+lr", "minilm fine-tune", "minilm adapt+fine-tune")
BASELINE_C = (0.25, 1.0, 4.0, 16.0)  # LogisticRegression's C, picked on the validation split
FINETUNING = FinetuningConfig(epochs=3, batch_size=16, max_seq_length=64, learning_rate=5e-5, early_stopping_patience=2)
PRETRAIN_STEPS = 200
SCHEMA = {"sentence": "object", "score": "object"}


@dataclass(frozen=True)
class Split:
    """One seed's data for one target domain."""

    train: TextTable
    validation: TextTable
    corpus: TextTable  # the target's adaptation half, unlabelled
    test: TextTable  # the target's other half, labelled


@dataclass
class Scores:
    """Per-seed test figures of one method."""

    macro_f1: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def add(self, accuracy: float, macro_f1: float, seconds: float) -> None:
        self.accuracy.append(accuracy)
        self.macro_f1.append(macro_f1)
        self.seconds.append(seconds)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def data_dir() -> Path:
    return Path(os.environ.get("STEWARD_SHARED_DATA", BESIDE_CHECKOUT)) / "sentiment_labelled_sentences"


def read_domain(domain: str) -> TextTable:
    """One domain's `sentence<TAB>score` file, split on newlines only (IMDB has U+0085 inside sentences)."""
    path = data_dir() / f"{DOMAIN_FILES[domain]}_labelled.txt"
    rows = [line.rpartition("\t") for line in path.read_text(encoding="utf-8").split("\n")[1:] if line.strip()]
    texts: list[str | None] = [text.strip() for text, _, _ in rows]
    labels: list[str | None] = [score.strip() for _, _, score in rows]
    return make_table(domain, path, texts, labels, SCHEMA)


def stratified_indices(table: TextTable, size: int, seed: int) -> tuple[list[int], list[int]]:
    """A seeded, label-stratified choice of `size` row indices of `table`, and the other indices (both sorted)."""
    from sklearn.model_selection import train_test_split

    chosen, rest = train_test_split(range(table.rows), train_size=size, random_state=seed, stratify=table.labels)
    return sorted(chosen), sorted(rest)


def rows_of(table: TextTable, indices: list[int], role: str) -> TextTable:
    labels = None if table.labels is None else [table.labels[i] for i in indices]
    return make_table(role, table.source, [table.texts[i] for i in indices], labels, table.schema)


def split(target: str, seed: int, train_limit: int | None) -> Split:
    sources = [read_domain(domain) for domain in DOMAIN_FILES if domain != target]
    texts = [text for table in sources for text in table.texts]
    labels = [label for table in sources for label in table.labels or []]
    train, validation = split_validation(make_table("train", data_dir(), texts, labels, SCHEMA), 0.1, seed)
    if train_limit is not None and train_limit < train.rows:
        train = rows_of(train, stratified_indices(train, train_limit, seed)[0], "train")
    domain = read_domain(target)
    adaptation, test = stratified_indices(domain, domain.rows // 2, seed)
    corpus = make_table("corpus", domain.source, [domain.texts[i] for i in adaptation], None, {"sentence": "object"})
    return Split(train, validation, corpus, rows_of(domain, test, "test"))


def tfidf_pipeline(train: TextTable, c: float) -> Pipeline:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(C=c))
    return pipeline.fit(*train.complete_rows())


def tfidf_scores(pipeline: Pipeline, table: TextTable) -> tuple[float, float]:
    texts, labels = table.complete_rows()
    return accuracy_and_macro_f1(labels, list(pipeline.predict(texts)))


def run_baseline(data: Split) -> tuple[float, float]:
    """Test accuracy and macro F1 of the TF-IDF (word 1-2 grams) + LR whose C scores best on validation."""
    candidates = [tfidf_pipeline(data.train, c) for c in BASELINE_C]
    best = max(candidates, key=lambda pipeline: tfidf_scores(pipeline, data.validation)[1])
    return tfidf_scores(best, data.test)


def run_minilm(model_dir: Path, data: Split, seed: int, output_dir: Path) -> tuple[float, float]:
    """Fine-tune on train (best epoch by validation macro F1), then test accuracy and macro F1."""
    tuned = fine_tune.fn(model_dir, data.train, data.validation, FINETUNING, seed, output_dir, "macro_f1")
    result = evaluate_model.fn(tuned.model_dir, data.test, FINETUNING.max_seq_length)
    return result.accuracy, result.macro_f1


def timed(scores: Scores, action: Callable[[], tuple[float, float]]) -> None:
    started = time.perf_counter()
    accuracy, macro_f1 = action()
    scores.add(accuracy, macro_f1, time.perf_counter() - started)


def pretraining_config(steps: int) -> PretrainingConfig:
    """Continued MLM at the fine-tuning length; `save_steps` past the end: no mid-run checkpoints."""
    return PretrainingConfig(
        enabled=True,
        max_steps=steps,
        batch_size=32,
        max_seq_length=FINETUNING.max_seq_length,
        learning_rate=1e-4,
        mlm_probability=0.15,
        head_warmup_steps=50,
        save_steps=steps + 1_000,
    )


def run_adapted(data: Split, seed: int, params: PretrainingConfig, out: Path) -> tuple[float, float, PretrainResult]:
    """Continued MLM on the unlabelled target half, then fine-tune and test like `run_minilm`."""
    adapted = continue_pretraining.fn(resolve_base_model("minilm"), data.corpus, params, seed, out / "mlm", out)
    progress(f"  adapted: perplexity {adapted.perplexity_before:.1f} -> {adapted.perplexity_after:.1f}")
    accuracy, macro_f1 = run_minilm(adapted.model_dir, data, seed, out / "adapted-classifier")
    return accuracy, macro_f1, adapted


def bench_seed(
    target: str, seed: int, args: argparse.Namespace, scores: dict[str, Scores], workdir: Path
) -> tuple[Split, PretrainResult]:
    """All three methods on one seed's split; their figures go into `scores`."""
    data = split(target, seed, args.train_limit)
    out = workdir / f"{target}-{seed}"
    progress(f"{target}, seed {seed}: {data.train.rows} train, {data.test.rows} test, {data.corpus.rows} corpus")
    timed(scores[METHODS[0]], lambda: run_baseline(data))
    timed(scores[METHODS[1]], lambda: run_minilm(resolve_base_model("minilm"), data, seed, out / "classifier"))
    started = time.perf_counter()
    accuracy, macro_f1, adapted = run_adapted(data, seed, pretraining_config(args.pretrain_steps), out)
    scores[METHODS[2]].add(accuracy, macro_f1, time.perf_counter() - started)
    return data, adapted


def bench_target(target: str, args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    scores = {method: Scores() for method in METHODS}
    per_seed = [bench_seed(target, seed, args, scores, workdir) for seed in range(args.seeds)]
    adaptations = [adapted for _, adapted in per_seed]
    return summarise(per_seed[-1][0], scores, adaptations, pretraining_config(args.pretrain_steps))


def mean_std(values: list[float]) -> dict[str, object]:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "runs": values}


def summarise(
    data: Split, scores: dict[str, Scores], adaptations: list[PretrainResult], params: PretrainingConfig
) -> dict[str, object]:
    gains = [a - f for a, f in zip(scores[METHODS[2]].macro_f1, scores[METHODS[1]].macro_f1, strict=True)]
    return {
        "rows": {"train": data.train.rows, "validation": data.validation.rows, "test": data.test.rows},
        "methods": {
            method: {
                "macro_f1": mean_std(s.macro_f1),
                "accuracy": mean_std(s.accuracy),
                "seconds": mean_std(s.seconds),
            }
            for method, s in scores.items()
        },
        "adaptation_gain_macro_f1": mean_std(gains),
        "adaptation": {
            "corpus_sentences": data.corpus.rows,
            "train_tokens": [a.train_tokens for a in adaptations],
            "head_warmup_steps": adaptations[0].head_warmup_steps,
            "mlm_steps": params.max_steps,
            "passes_over_corpus": [
                params.max_steps * params.batch_size * params.max_seq_length / a.train_tokens for a in adaptations
            ],
            "heldout_perplexity_before": [a.perplexity_before for a in adaptations],
            "heldout_perplexity_after": [a.perplexity_after for a in adaptations],
            "pretrain_seconds": [a.seconds for a in adaptations],
        },
    }


def figure(stats: dict, digits: int = 3) -> str:
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def runs(values: list[float], digits: int = 3) -> str:
    return ", ".join(f"{value:.{digits}f}" for value in values)


def print_target(console: Console, target: str, result: dict) -> None:
    from rich.table import Table

    rows = result["rows"]
    sources = "+".join(domain for domain in DOMAIN_FILES if domain != target)
    table = Table(title=f"train {sources} ({rows['train']:,}) → test {target} ({rows['test']:,} held-out sentences)")
    for column in ("method", "macro-F1", "accuracy", "macro-F1 per seed", "s per seed"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for method, stats in result["methods"].items():
        f1 = stats["macro_f1"]
        table.add_row(method, figure(f1), figure(stats["accuracy"]), runs(f1["runs"]), figure(stats["seconds"], 0))
    gain = result["adaptation_gain_macro_f1"]
    table.add_row("adapt − fine-tune (paired)", f"{gain['mean']:+.3f} ± {gain['std']:.3f}", "", runs(gain["runs"]), "")
    console.print(table)
    console.print(adaptation_line(target, result["adaptation"]))


def adaptation_line(target: str, adaptation: dict) -> str:
    perplexities = zip(adaptation["heldout_perplexity_before"], adaptation["heldout_perplexity_after"], strict=True)
    return (
        f"Adaptation corpus: {adaptation['corpus_sentences']} unlabelled {target} sentences, "
        f"{runs(adaptation['train_tokens'], 0)} training tokens per seed; {adaptation['head_warmup_steps']} head "
        f"warm-up + {adaptation['mlm_steps']} MLM steps = {runs(adaptation['passes_over_corpus'], 1)} passes; "
        "MLM perplexity on the corpus's held-out 5% of blocks, after head warm-up → after: "
        + ", ".join(f"{before:.1f} → {after:.1f}" for before, after in perplexities)
        + f"; pretraining {runs(adaptation['pretrain_seconds'], 0)} s."
    )


def print_report(report: dict) -> None:
    from rich.console import Console

    console = Console(width=120)
    for target, result in report["targets"].items():
        print_target(console, target, result)
    console.print(
        f"Data: {CITATION} (CC BY 4.0). {report['seeds']} seeds; mean ± sample std. Adaptation = continued masked-LM "
        f"pretraining on the unlabelled half of the target domain ({GURURANGAN}); the test half is held out from it "
        f"(not transductive). Total {report['total_seconds']:.0f} s on a shared {os.cpu_count()}-core CPU machine: "
        "timings are noisy."
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (splits, initialisation, order)")
    parser.add_argument("--target", choices=(*DOMAIN_FILES, "all"), default="yelp", help="domain to test on")
    parser.add_argument("--train-limit", type=int, help="stratified subsample of the training rows (all by default)")
    parser.add_argument("--pretrain-steps", type=int, default=PRETRAIN_STEPS, help="MLM steps after head warm-up")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    for name in ("seeds", "train_limit", "pretrain_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for key, value in QUIET_THIRD_PARTY_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if not data_dir().is_dir():
        print(
            f"quality: error: no data at {data_dir()} (set STEWARD_SHARED_DATA to the folder that holds "
            "sentiment_labelled_sentences/)",
            file=sys.stderr,
        )
        return 2
    targets = list(DOMAIN_FILES) if args.target == "all" else [args.target]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="steward-quality-") as workdir:
        results = {target: bench_target(target, args, Path(workdir)) for target in targets}
    report = {
        "dataset": CITATION,
        "reference": GURURANGAN,
        "protocol": "cross-domain; target split 50/50 into an unlabelled adaptation corpus and a held-out test half",
        "transductive": False,
        "seeds": args.seeds,
        "finetuning": FINETUNING.model_dump(),
        "pretraining": pretraining_config(args.pretrain_steps).model_dump(),
        "targets": results,
        "total_seconds": time.perf_counter() - started,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
