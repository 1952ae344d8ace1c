"""Drift detection on real domain shift: does it flag what it should, stay quiet otherwise, and keep up?

    .venv/bin/python bench/drift.py [--splits 20] [--rows 100000] [--json]

Data: the sentiment labelled sentences of Kotzias et al., KDD 2015 (CC BY 4.0): 1,000 review
sentences from each of Amazon, IMDB and Yelp, read from `../shared/data/sentiment_labelled_sentences/`
beside the checkout (or $STEWARD_SHARED_DATA), never copied.

1. A champion is trained by `steward run` on Amazon (the packaged MiniLM, pretraining off, one epoch),
   so the reference is what a real deployment would compare against.
2. Shift: Amazon (reference) against Yelp and against IMDB must be flagged.
3. False alarms: `--splits` seeded half-splits of each domain, one half against the other.
4. Speed: `steward monitor` on a `--rows` batch (sentences of all three domains drawn with
   replacement), as a whole process, cold (the champion's reference scored first) and warm (cached).
Progress goes to stderr; the tables (or, with --json, one JSON object) to stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from benchmarks import CITATION, DOMAIN_FILES, data_dir, progress, read_domain  # bench/benchmarks.py, beside this file

from steward.cli import QUIET_THIRD_PARTY_DEFAULTS
from tasks.data import TextTable
from tasks.drift import DriftResult, ScoredBatch, compare_batches, score_batch

SAMPLE_SIZE = 2_000
MAX_SEQ_LENGTH = 64
THRESHOLD = 0.3


@dataclass(frozen=True)
class SplitCheck:
    domain: str
    flagged: int
    splits: int
    signal_alarms: dict[str, int]  # signal -> how many splits it drifted in


@dataclass(frozen=True)
class CommandTiming:
    rows: int
    cold_seconds: float
    warm_seconds: float
    drift_detected: bool
    drift_share: float


def write_csv(path: Path, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def steward(*argv: str, env: dict[str, str]) -> dict:
    """Run the command line as a user would; its one JSON object. Stage timings are echoed to stderr."""
    done = subprocess.run([sys.executable, "-m", "steward.cli", *argv, "--json"], capture_output=True, text=True,
                          env=env, check=False)
    if done.returncode not in (0, 1):
        sys.exit(f"steward {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    for line in done.stderr.splitlines():
        if line.startswith("✓"):
            progress(f"    {line}")
    return json.loads(done.stdout)


def train_champion(project: Path, amazon: TextTable, env: dict[str, str]) -> Path:
    """`steward run` on Amazon; returns the champion's model directory."""
    rows = list(zip(amazon.texts, amazon.labels or [], strict=True))
    random.Random(0).shuffle(rows)
    data = project / "data"
    data.mkdir(parents=True)
    write_csv(data / "train.csv", rows[:800], ("text", "label"))
    write_csv(data / "test.csv", rows[800:], ("text", "label"))
    config = {
        "name": "reviews", "base_model": "minilm", "seed": 13,
        "data": {"train": "data/train.csv", "test": "data/test.csv"},
        "validation": {"min_rows": 50, "max_duplicate_fraction": 0.2},
        "pretraining": {"enabled": False},
        "finetuning": {"epochs": 1, "batch_size": 16, "max_seq_length": MAX_SEQ_LENGTH},
        "monitoring": {"drift_share_threshold": THRESHOLD, "sample_size": SAMPLE_SIZE},
    }
    (project / "steward.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    outcome = steward("run", "--config", str(project / "steward.yaml"), env=env)
    progress(f"champion v{outcome['version']}: macro-F1 {outcome['metrics']['macro_f1']:.3f} on held-out Amazon")
    registry = f"sqlite:///{project / '.steward' / 'registry.db'}"
    show = steward("registry", "show", f"reviews:{outcome['version']}", "--registry", registry, env=env)
    return Path(show["version"]["artifact_path"])


def half(batch: ScoredBatch, rows: list[int], name: str) -> ScoredBatch:
    return ScoredBatch(f"{batch.source} ({name})", len(rows), batch.frame.iloc[rows].reset_index(drop=True))


def split_checks(domain: str, batch: ScoredBatch, splits: int, reports: Path) -> SplitCheck:
    flagged, alarms = 0, {}
    for seed in range(splits):
        order = list(range(batch.rows_scored))
        random.Random(seed).shuffle(order)
        middle = len(order) // 2
        result = compare_batches.fn(half(batch, order[:middle], "a"), half(batch, order[middle:], "b"), THRESHOLD,
                                    reports / f"{domain}-split{seed}.html")
        flagged += result.drift_detected
        for name in result.drifted_signals:
            alarms[name] = alarms.get(name, 0) + 1
        progress(f"  {domain} split {seed}: share {result.drift_share:.2f} {result.drifted_signals}")
    return SplitCheck(domain, flagged, splits, alarms)


def big_batch(path: Path, tables: list[TextTable], rows: int) -> Path:
    pool = [text for table in tables for text in table.texts if text]
    rng = random.Random(1)
    return write_csv(path, [(rng.choice(pool),) for _ in range(rows)], ("text",))


def time_command(project: Path, batch: Path, rows: int, env: dict[str, str]) -> CommandTiming:
    argv = ("monitor", "--config", str(project / "steward.yaml"), "--current", str(batch))
    timings, outcome = [], {}
    for _ in ("cold", "warm"):
        started = time.perf_counter()
        outcome = steward(*argv, env=env)
        timings.append(time.perf_counter() - started)
    return CommandTiming(rows, timings[0], timings[1], outcome["drift_detected"], outcome["drift_share"])


def print_tables(shifts: dict[str, DriftResult], checks: list[SplitCheck], timing: CommandTiming) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    shift_table = Table(title="Domain shift, reference = Amazon (the champion's training data)")
    for column in ("current", "drift", "share", "drifted signals"):
        shift_table.add_column(column)
    for name, result in shifts.items():
        shift_table.add_row(name, "yes" if result.drift_detected else "no", f"{result.drift_share:.2f}",
                            ", ".join(result.drifted_signals))
    console.print(shift_table)
    split_table = Table(title="False alarms: half-splits of one domain against each other")
    for column in ("domain", "flagged", "rate", "alarms per signal"):
        split_table.add_column(column)
    for check in checks:
        alarms = ", ".join(f"{name} {count}" for name, count in sorted(check.signal_alarms.items())) or "none"
        split_table.add_row(check.domain, f"{check.flagged}/{check.splits}", f"{check.flagged / check.splits:.0%}",
                            alarms)
    console.print(split_table)
    console.print(f"`steward monitor` on {timing.rows:,} rows: {timing.cold_seconds:.1f} s cold (reference scored), "
                  f"{timing.warm_seconds:.1f} s warm (cached reference); drift share {timing.drift_share:.2f}")
    console.print(f"Data: {CITATION}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=20)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not data_dir().is_dir():
        sys.exit(f"bench/drift.py: {data_dir()} not found (set STEWARD_SHARED_DATA to the shared data folder)")
    env = {**os.environ, **QUIET_THIRD_PARTY_DEFAULTS}
    os.environ.update(QUIET_THIRD_PARTY_DEFAULTS)
    domains = {name: read_domain(name) for name in DOMAIN_FILES}
    with tempfile.TemporaryDirectory(prefix="steward-drift-bench-") as tmp:
        project, reports = Path(tmp) / "project", Path(tmp) / "reports"
        champion = train_champion(project, domains["amazon"], env)
        scored = {name: score_batch.fn(table, champion, SAMPLE_SIZE, 13, MAX_SEQ_LENGTH)
                  for name, table in domains.items()}
        shifts = {name: compare_batches.fn(scored["amazon"], scored[name], THRESHOLD, reports / f"amazon-{name}.html")
                  for name in ("yelp", "imdb")}
        checks = [split_checks(name, scored[name], args.splits, reports) for name in DOMAIN_FILES]
        batch = big_batch(Path(tmp) / "big.csv", list(domains.values()), args.rows)
        timing = time_command(project, batch, args.rows, env)
    if args.json:
        print(json.dumps({
            "shift": {name: {"drift_detected": r.drift_detected, "drift_share": r.drift_share,
                             "drifted_signals": r.drifted_signals} for name, r in shifts.items()},
            "false_alarms": [asdict(check) for check in checks],
            "command": asdict(timing),
        }, indent=2))
    else:
        print_tables(shifts, checks, timing)


if __name__ == "__main__":
    main()
