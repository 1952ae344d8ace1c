"""Data risks before training: how well `tasks.label_issues` finds flipped labels and `tasks.pii` personal data.

    .venv/bin/python bench/data_risks.py [--parts labels pii] [--seeds 3] [--per-type 500] [--lines 100000] [--json]

Label errors (`tasks.label_issues`, `validation.label_issues`), on Kotzias (train amazon+imdb pooled, test yelp's
held-out half) and fortunes (12 categories, 100 training rows each, 100 test rows), per noise rate (5%, 10%) and
seed: a seeded share of the training labels flipped to another class at random; Steward's check (frozen MiniLM
embeddings, out-of-fold logistic regression, cleanlab) flags rows; precision and recall of the flipped rows. Then
the test macro-F1 of a classifier trained on the clean labels, on the noisy ones (`report`: trained as they are) and
on the noisy ones less the flagged rows (`drop`); the classifier is a logistic regression on the same frozen
embeddings (one of `bench/quality.py`'s methods: the share of the noise's cost `drop` recovers, not the best score).

Personal data (`tasks.pii`, `validation.pii`):
- recall: for each type, `per-type` identifiers made by `bench/pii_samples.py` (each passes its type's check),
  each put between two words of a real sentence (Kotzias et al.'s review sentences from `../shared/data`, Debian's
  `fortunes`, this Python's standard-library docstrings); a hit is a finding of that type covering exactly the value;
- look-alikes: the checked types' values with the check character changed, embedded the same way: every finding
  on them (overlapping the look-alike; the host sentence's own addresses are not counted) is false;
- untouched real text: every finding in the real texts as they are (printed for review: a real address in a
  docstring is a true finding, not a false one);
- throughput: scanning `lines` real lines (the texts cycled) against tokenising the same lines with the packaged
  MiniLM's tokenizer, the first thing every training run does to them, in the same run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import data_dir, fortunes_split, kotzias_split  # bench/benchmarks.py, beside this file
from pii_samples import CHECKED, GENERATORS, embedded, look_alike

from tasks.pii import Scanner

SEED = 7
FORTUNES = Path("/usr/share/games/fortunes")


def kotzias_sentences() -> list[str]:
    lines = []
    for path in sorted(data_dir().glob("*_labelled.txt")):
        lines += [line.rsplit("\t", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()[1:] if line]
    return lines


def fortunes() -> list[str]:
    texts = []
    for path in sorted(FORTUNES.glob("*.u8")):
        texts += [part.strip() for part in path.read_text(encoding="utf-8").split("\n%\n") if part.strip()]
    if not texts:
        raise SystemExit(f"no fortunes in {FORTUNES}: apt-get install fortunes fortunes-min")
    return texts


def docstring_lines() -> list[str]:
    from steward.demo.python_docs import docstrings

    return [line.strip() for text in docstrings().values() for line in text.splitlines() if line.strip()]


def real_texts() -> dict[str, list[str]]:
    return {"kotzias": kotzias_sentences(), "fortunes": fortunes(), "python-docs": docstring_lines()}


def covered(scanner: Scanner, text: str, value: str, kind: str) -> bool:
    start = text.index(value)
    return any(f.kind == kind and (f.start, f.end) == (start, start + len(value)) for f in scanner.find(text))


def recall(scanner: Scanner, sentences: list[str], per_type: int) -> dict[str, dict[str, Any]]:
    rng = random.Random(SEED)
    rows = {}
    for kind, make in GENERATORS.items():
        values = [make(rng) for _ in range(per_type)]
        texts = [embedded(rng.choice(sentences), value, rng) for value in values]
        hits = sum(covered(scanner, text, value, kind) for text, value in zip(texts, values, strict=True))
        missed = [value for text, value in zip(texts, values, strict=True) if not covered(scanner, text, value, kind)]
        rows[kind] = {"values": per_type, "recall": hits / per_type, "missed_examples": missed[:3]}
    return rows


def look_alikes(scanner: Scanner, sentences: list[str], per_type: int) -> dict[str, dict[str, Any]]:
    rng = random.Random(SEED + 1)
    rows = {}
    for kind in CHECKED:
        values = [look_alike(GENERATORS[kind](rng)) for _ in range(per_type)]
        texts = [embedded(rng.choice(sentences), value, rng) for value in values]
        false = [f for text, value in zip(texts, values, strict=True) for f in scanner.find(text)
                 if f.start < text.index(value) + len(value) and text.index(value) < f.end]  # on the look-alike
        rows[kind] = {"look_alikes": per_type, "false_findings": len(false)}
    return rows


def untouched(scanner: Scanner, corpora: dict[str, list[str]]) -> dict[str, Any]:
    findings = []
    for name, texts in corpora.items():
        for text in texts:
            findings += [(name, f.kind, text[f.start : f.end]) for f in scanner.find(text)]
    texts = sum(len(texts) for texts in corpora.values())
    return {"texts": texts, "findings": len(findings), "per_10000": 10_000 * len(findings) / texts,
            "listed": [{"corpus": c, "type": k, "value": v} for c, k, v in findings]}


def throughput(scanner: Scanner, corpora: dict[str, list[str]], lines: int) -> dict[str, float]:
    from tasks.modeling import load_tokenizer, resolve_base_model

    sample = list(itertools.islice(itertools.cycle(itertools.chain(*corpora.values())), lines))
    started = time.perf_counter()
    for text in sample:
        scanner.redact(text)
    scan_seconds = time.perf_counter() - started
    tokenizer = load_tokenizer(resolve_base_model("minilm"))
    started = time.perf_counter()
    for start in range(0, lines, 1000):
        tokenizer(sample[start : start + 1000], truncation=True, max_length=128)
    tokenize_seconds = time.perf_counter() - started
    return {"lines": lines, "scan_seconds": scan_seconds, "tokenize_seconds": tokenize_seconds,
            "scan_vs_tokenize": scan_seconds / tokenize_seconds}


NOISE_RATES = (0.05, 0.10)
MAX_SEQ_LENGTH = 64
SPLITS = {"kotzias": lambda seed: kotzias_split("yelp", seed, None),
          "fortunes": lambda seed: fortunes_split(seed, 100, 10, 100)}


def flipped(labels: list[str], classes: list[str], rate: float, seed: int) -> tuple[list[str], set[int]]:
    """`rate` of the labels (seeded) changed to another class, chosen at random; and which rows."""
    rng = random.Random(seed)
    rows = set(rng.sample(range(len(labels)), round(rate * len(labels))))
    noisy = [rng.choice([c for c in classes if c != label]) if row in rows else label
             for row, label in enumerate(labels)]
    return noisy, rows


def macro_f1(train_x: Any, train_labels: list[str], test_x: Any, test_labels: list[str]) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    model = LogisticRegression(max_iter=2000).fit(train_x, train_labels)
    return float(f1_score(test_labels, model.predict(test_x), average="macro"))


def label_noise(benchmark: str, seed: int, embed: Any) -> list[dict[str, Any]]:
    import numpy as np

    from tasks.label_issues import out_of_fold_probabilities, ranked_issues

    split = SPLITS[benchmark](seed)
    texts, labels = split.train.complete_rows()
    test_texts, test_labels = split.test.complete_rows()
    train_x, test_x, classes = embed(texts), embed(test_texts), split.classes
    clean = macro_f1(train_x, labels, test_x, test_labels)
    rows = []
    for rate in NOISE_RATES:
        noisy, truly = flipped(labels, classes, rate, seed)
        codes = np.array([classes.index(label) for label in noisy])
        started = time.perf_counter()
        flagged = set(ranked_issues(codes, out_of_fold_probabilities(train_x, codes, seed)))
        seconds = time.perf_counter() - started
        kept = [row for row in range(len(noisy)) if row not in flagged]
        found = len(flagged & truly)
        report = macro_f1(train_x, noisy, test_x, test_labels)
        drop = macro_f1(train_x[kept], [noisy[row] for row in kept], test_x, test_labels)
        rows.append({"benchmark": benchmark, "seed": seed, "noise": rate, "train_rows": len(labels),
                     "flipped": len(truly), "flagged": len(flagged),
                     "precision": found / len(flagged) if flagged else 0.0, "recall": found / len(truly),
                     "f1_clean": clean, "f1_report": report, "f1_drop": drop,
                     "recovered": (drop - report) / (clean - report) if clean > report else None,
                     "check_seconds": seconds})
        progress(f"{benchmark} seed {seed} noise {rate:.0%}: precision {rows[-1]['precision']:.2f} recall "
                 f"{rows[-1]['recall']:.2f}; macro-F1 clean {clean:.3f} report {report:.3f} drop {drop:.3f}")
    return rows


def labels_part(seeds: int) -> list[dict[str, Any]]:
    from tasks.label_issues import embedder
    from tasks.modeling import resolve_base_model

    embed = embedder(resolve_base_model("minilm"), MAX_SEQ_LENGTH)
    return [row for benchmark in SPLITS for seed in range(seeds) for row in label_noise(benchmark, seed, embed)]


def print_labels(rows: list[dict[str, Any]]) -> None:
    import statistics

    print(f"{'benchmark':10} {'noise':>5} {'precision':>9} {'recall':>6} {'F1 clean':>8} {'report':>7} {'drop':>7} "
          f"{'recovered':>9}   (means over {len({r['seed'] for r in rows})} seeds)")
    for benchmark in SPLITS:
        for rate in NOISE_RATES:
            group = [r for r in rows if r["benchmark"] == benchmark and r["noise"] == rate]
            mean = {key: statistics.fmean(r[key] for r in group if r[key] is not None)
                    for key in ("precision", "recall", "f1_clean", "f1_report", "f1_drop")}
            recovered = [r["recovered"] for r in group if r["recovered"] is not None]
            print(f"{benchmark:10} {rate:5.0%} {mean['precision']:9.3f} {mean['recall']:6.3f} {mean['f1_clean']:8.3f} "
                  f"{mean['f1_report']:7.3f} {mean['f1_drop']:7.3f} "
                  f"{statistics.fmean(recovered) if recovered else float('nan'):9.2f}")


def pii_part(per_type: int, lines: int) -> dict[str, Any]:
    scanner, corpora = Scanner(), real_texts()
    sentences = [text for text in itertools.chain(*corpora.values()) if 20 <= len(text) <= 300]
    return {"recall": recall(scanner, sentences, per_type), "look_alikes": look_alikes(scanner, sentences, per_type),
            "untouched": untouched(scanner, corpora), "throughput": throughput(scanner, corpora, lines)}


def print_pii(result: dict[str, Any]) -> None:
    for kind, row in result["recall"].items():
        print(f"{kind:10} recall {row['recall']:.3f} of {row['values']}  missed e.g. {row['missed_examples']}")
    for kind, row in result["look_alikes"].items():
        print(f"{kind:10} {row['false_findings']} false findings on {row['look_alikes']} look-alikes")
    plain = result["untouched"]
    print(f"untouched real texts: {plain['findings']} findings in {plain['texts']:,} texts "
          f"({plain['per_10000']:.2f} per 10,000)")
    for row in plain["listed"]:
        print(f"  {row['corpus']:12} {row['type']:10} {row['value']}")
    speed = result["throughput"]
    print(f"scan of {speed['lines']:,} lines: {speed['scan_seconds']:.1f} s; tokenising them: "
          f"{speed['tokenize_seconds']:.1f} s ({speed['scan_vs_tokenize']:.2f}x)")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-type", type=int, default=500)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--parts", nargs="+", default=["labels", "pii"], choices=["labels", "pii"])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    result: dict[str, Any] = {}
    if "labels" in args.parts:
        result["labels"] = labels_part(args.seeds)
        print_labels(result["labels"])
    if "pii" in args.parts:
        result["pii"] = pii_part(args.per_type, args.lines)
        print_pii(result["pii"])
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
