"""Drift judgment on real data: how often it cries wolf, whether it sees real shift, whether it tells a changed
class mix from changed inputs, and how long `steward monitor` takes on 100,000 rows.

    .venv/bin/python bench/drift.py [--draws 20] [--sizes 200,1000,10000] [--rows 100000] [--json]

Data (read in place, never copied):
- Kotzias et al., KDD 2015 (CC BY 4.0): 1,000 review sentences each from Amazon, IMDB and Yelp, read from
  `../shared/data/sentiment_labelled_sentences/`. Champion: `steward run` on 800 Amazon sentences.
- The Debian `fortunes` package, 12 categories (as in `bench/quality.py`). Champion: `steward run` on a
  balanced sample (40 train + 10 validation per category); its test split (50 per category) is the
  reference `steward monitor` uses by default; the other entries of each category are the natural mix.

Each scenario draws both sides `--draws` times at each size from scored pools and runs the monitor's own
comparison on them. Self-splits are bootstraps (both sides drawn with replacement from one pool, so a side can
be larger than the pool); every other scenario draws without replacement from two disjoint pools, at most all
of a pool (a text repeated on one side only is something a domain classifier learns, real batches don't):

| scenario | reference | current | wanted |
|---|---|---|---|
| self-split | a pool | the same pool | nothing (a false alarm otherwise) |
| natural mix | fortunes test split (balanced) | fortunes natural mix | no drift (prior shift is right) |
| class mix | half of Amazon, half positive | the other half, 80% positive | prior shift, no drift |
| shift | Amazon | Yelp, IMDB | drift |

Sizes above `monitoring.sample_size` (default 2,000) are what a user gets by raising it; the calibration
table shows, per signal and size, the 95th percentile of its effect on self-splits beside its threshold.
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
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml
from benchmarks import (  # bench/benchmarks.py, beside this file
    CITATION,
    DOMAIN_FILES,
    FORTUNES_CITATION,
    FORTUNES_DIR,
    data_dir,
    fortune_pool,
    fortunes_split,
    progress,
    read_domain,
)

from core.hashing import ModelFiles
from steward.cli import QUIET_THIRD_PARTY_DEFAULTS
from tasks.data import TextTable, make_table
from tasks.drift import LABEL, ScoredBatch, compare_batches, score_batch

POOL_CAP = 10_000  # rows scored per pool: every row of these pools
MAX_SEQ_LENGTH = 128
THRESHOLD = 0.3  # monitoring.drift_share_threshold's default
CLASS_MIX_POSITIVE = 0.8
FORTUNES_PER_CLASS = (40, 10, 50)  # train, validation, test


@dataclass(frozen=True)
class Scenario:
    name: str
    reference: str  # pool names
    current: str
    wanted: str  # "none", "no drift", "prior_shift" or "drift"
    current_positive_share: float | None = None  # draw the current side at this share of label "1"

    @property
    def bootstrap(self) -> bool:
        return self.reference == self.current

    def met(self, finding: str) -> bool:
        return {"none": finding == "none", "no drift": finding != "drift"}.get(self.wanted, finding == self.wanted)


@dataclass
class SignalTally:
    threshold: float
    effects: list[float] = field(default_factory=list)
    drifted: int = 0

    def summary(self) -> dict[str, float]:
        return {"threshold": self.threshold, "drifted": self.drifted,
                "effect_median": float(np.median(self.effects)), "effect_p95": float(np.percentile(self.effects, 95))}


@dataclass(frozen=True)
class Outcome:
    scenario: str
    wanted: str
    size: int
    reference_rows: int  # rows per side drawn (less than size where a pool has fewer)
    current_rows: int
    draws: int
    findings: dict[str, int]  # finding -> draws
    met: int  # draws whose finding is the wanted one
    seconds_per_check: float
    signals: dict[str, dict[str, float]]


@dataclass(frozen=True)
class CommandTiming:
    rows: int
    cold_seconds: float
    warm_seconds: float
    finding: str


SCENARIOS = (
    Scenario("self-split: amazon", "amazon", "amazon", "none"),
    Scenario("self-split: fortunes", "fortunes-natural", "fortunes-natural", "none"),
    Scenario("natural mix: fortunes", "fortunes-test", "fortunes-natural", "no drift"),
    Scenario("class mix: amazon", "amazon-a", "amazon-b", "prior_shift", CLASS_MIX_POSITIVE),
    Scenario("shift: amazon -> yelp", "amazon", "yelp", "drift"),
    Scenario("shift: amazon -> imdb", "amazon", "imdb", "drift"),
)


def write_csv(path: Path, rows: list[tuple[str | None, ...]], header: tuple[str, ...]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def table_rows(table: TextTable) -> list[tuple[str | None, str | None]]:
    return list(zip(table.texts, table.labels or [], strict=True))


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


def train_champion(project: Path, name: str, data: dict[str, list], finetuning: dict,
                   env: dict[str, str]) -> ModelFiles:
    """`steward run` (pretraining off) on the given splits; returns the champion's model files."""
    paths = {split: str(write_csv(project / "data" / f"{split}.csv", rows, ("text", "label")))
             for split, rows in data.items()}
    config = {
        "name": name, "base_model": "minilm", "seed": 13, "data": paths,
        "validation": {"min_rows": 50, "max_duplicate_fraction": 0.2},
        "pretraining": {"enabled": False},
        "finetuning": {"batch_size": 16, "max_seq_length": MAX_SEQ_LENGTH, **finetuning},
        "monitoring": {"drift_share_threshold": THRESHOLD},
    }
    (project / "steward.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    outcome = steward("run", "--config", str(project / "steward.yaml"), env=env)
    progress(f"{name} champion v{outcome['version']}: test macro-F1 {outcome['metrics']['macro_f1']:.3f}")
    registry = f"sqlite:///{project / '.steward' / 'registry.db'}"
    show = steward("registry", "show", f"{name}:{outcome['version']}", "--registry", registry, env=env)
    return ModelFiles(Path(show["version"]["artifact_path"]), {f["relative_path"]: f["sha256"] for f in show["files"]})


def kotzias_pools(project: Path, env: dict[str, str]) -> dict[str, ScoredBatch]:
    domains = {name: read_domain(name) for name in DOMAIN_FILES}
    rows = table_rows(domains["amazon"])
    random.Random(0).shuffle(rows)
    champion = train_champion(project, "reviews", {"train": rows[:800], "test": rows[800:]}, {"epochs": 1}, env)
    pools = {name: score_batch(table, champion, POOL_CAP, 13) for name, table in domains.items()}
    return {**pools, **halves(pools["amazon"], ("amazon-a", "amazon-b"))}


def fortunes_pools(project: Path, env: dict[str, str]) -> dict[str, ScoredBatch]:
    split = fortunes_split(0, *FORTUNES_PER_CLASS)
    data = {"train": table_rows(split.train), "validation": table_rows(split.validation),
            "test": table_rows(split.test)}
    champion = train_champion(project, "fortunes", data, {"epochs": 4}, env)
    return {"fortunes-test": score_batch(split.test, champion, POOL_CAP, 13),
            "fortunes-natural": score_batch(labelled(split.corpus), champion, POOL_CAP, 13)}


def labelled(corpus: TextTable) -> TextTable:
    """The corpus (every entry outside the labelled splits: the package's own class mix) with its categories."""
    category = {text: name for name, texts in fortune_pool().items() for text in texts}
    return make_table("natural", corpus.source, corpus.texts, [category[text] for text in corpus.texts],
                      {"text": "object", "label": "object"})


def draw(pool: ScoredBatch, size: int, rng: np.random.Generator, bootstrap: bool,
         positive_share: float | None = None) -> np.ndarray:
    """Row indices of `pool`: `size` drawn with replacement (bootstrap), else up to `size` without, at
    `positive_share` of label "1" when that is given."""
    if bootstrap:
        return rng.integers(0, pool.rows_scored, size)
    if positive_share is None:
        return rng.choice(pool.rows_scored, min(size, pool.rows_scored), replace=False)
    positive = np.flatnonzero(pool.frame[LABEL].to_numpy() == "1")
    negative = np.flatnonzero(pool.frame[LABEL].to_numpy() != "1")
    rows = int(min(size, len(positive) / positive_share, len(negative) / (1 - positive_share)))
    wanted = round(rows * positive_share)
    return np.concatenate([rng.choice(positive, wanted, replace=False),
                           rng.choice(negative, rows - wanted, replace=False)])


def side(pool: ScoredBatch, rows: np.ndarray, name: str, keep_labels: bool) -> ScoredBatch:
    sample = pool.frame.iloc[rows].reset_index(drop=True)
    if not keep_labels:  # a production batch comes without labels: the class mix shows in the predictions
        sample = sample.drop(columns=[LABEL], errors="ignore")
    return ScoredBatch(f"{pool.source} ({name})", len(sample), sample)


def halves(pool: ScoredBatch, names: tuple[str, str]) -> dict[str, ScoredBatch]:
    """Two seeded, disjoint halves of a pool."""
    order = np.random.default_rng(7).permutation(pool.rows_scored)
    middle = pool.rows_scored // 2
    return {name: side(pool, rows, name, keep_labels=True) for name, rows in zip(names, (order[:middle],
                                                                                      order[middle:]), strict=True)}


def run_scenario(scenario: Scenario, pools: dict[str, ScoredBatch], size: int, draws: int,
                 reports: Path) -> Outcome:
    findings: Counter[str] = Counter()
    tallies: dict[str, SignalTally] = {}
    started = time.perf_counter()
    for seed in range(draws):
        rng = np.random.default_rng([size, seed])
        source, target = pools[scenario.reference], pools[scenario.current]
        reference = side(source, draw(source, size, rng, scenario.bootstrap), "reference", keep_labels=True)
        current = side(target, draw(target, size, rng, scenario.bootstrap, scenario.current_positive_share),
                       "current", keep_labels=False)
        result = compare_batches(reference, current, THRESHOLD, reports / f"check-{size}-{seed}.html")
        findings[result.finding] += 1
        for signal in result.signals:
            tally = tallies.setdefault(signal.name, SignalTally(signal.effect_threshold))
            tally.effects.append(signal.effect)
            tally.drifted += signal.drifted
    seconds = (time.perf_counter() - started) / draws
    met = sum(count for finding, count in findings.items() if scenario.met(finding))
    progress(f"  {scenario.name} at {size:,} rows ({reference.rows_scored:,} vs {current.rows_scored:,}): "
             f"{dict(findings)} ({met}/{draws} as wanted, {seconds:.1f} s each)")
    return Outcome(scenario.name, scenario.wanted, size, reference.rows_scored, current.rows_scored, draws,
                   dict(findings), met, seconds, {name: tally.summary() for name, tally in tallies.items()})


def big_batch(path: Path, rows: int) -> Path:
    pool = [text for name in DOMAIN_FILES for text in read_domain(name).texts if text]
    rng = random.Random(1)
    return write_csv(path, [(rng.choice(pool),) for _ in range(rows)], ("text",))


def time_command(project: Path, batch: Path, rows: int, env: dict[str, str]) -> CommandTiming:
    """`steward monitor` as a whole process: cold (the reference is scored first), then warm (cached)."""
    argv = ("monitor", "--config", str(project / "steward.yaml"), "--current", str(batch))
    timings, outcome = [], {}
    for _ in ("cold", "warm"):
        started = time.perf_counter()
        outcome = steward(*argv, env=env)
        timings.append(time.perf_counter() - started)
    return CommandTiming(rows, timings[0], timings[1], outcome["finding"])


def print_tables(outcomes: list[Outcome], timing: CommandTiming) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    verdicts = Table(title="Findings per scenario and size (self-splits: bootstraps of one pool)")
    for column in ("scenario", "wanted", "rows: reference / current", "drift", "prior shift", "none", "as wanted",
                   "s / check"):
        verdicts.add_column(column)
    for o in outcomes:
        verdicts.add_row(o.scenario, o.wanted, f"{o.reference_rows:,} / {o.current_rows:,}", *(str(o.findings.get(f, 0))
                         for f in ("drift", "prior_shift", "none")), f"{o.met}/{o.draws}", f"{o.seconds_per_check:.1f}")
    console.print(verdicts)
    calibration = Table(title="Calibration: each signal's effect on self-splits (p95 over draws) vs its threshold")
    for column in ("pool", "rows per side", "signal", "threshold", "effect median", "effect p95", "drifted"):
        calibration.add_column(column)
    for o in outcomes:
        if o.scenario.startswith("self-split"):
            for name, s in o.signals.items():
                calibration.add_row(o.scenario.removeprefix("self-split: "), f"{o.size:,}", name,
                                    f"{s['threshold']:.2f}", f"{s['effect_median']:.3f}", f"{s['effect_p95']:.3f}",
                                    f"{s['drifted']:.0f}/{o.draws}")
    console.print(calibration)
    console.print(f"`steward monitor` on {timing.rows:,} rows: {timing.cold_seconds:.1f} s cold (reference scored), "
                  f"{timing.warm_seconds:.1f} s warm (cached reference); finding {timing.finding}")
    console.print(f"Data: {CITATION}; {FORTUNES_CITATION}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--sizes", default="200,1000,10000", help="rows per side, comma-separated")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the batch `steward monitor` is timed on")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for needed, hint in ((data_dir(), "set STEWARD_SHARED_DATA to the shared data folder"),
                         (FORTUNES_DIR, "apt-get install fortunes")):
        if not needed.is_dir():
            sys.exit(f"bench/drift.py: {needed} not found ({hint})")
    env = {**os.environ, **QUIET_THIRD_PARTY_DEFAULTS}
    os.environ.update(QUIET_THIRD_PARTY_DEFAULTS)
    sizes = [int(size) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="steward-drift-bench-") as tmp:
        kotzias_project = Path(tmp) / "kotzias"
        pools = {**kotzias_pools(kotzias_project, env), **fortunes_pools(Path(tmp) / "fortunes", env)}
        progress("pools: " + ", ".join(f"{name} {batch.rows_scored:,}" for name, batch in pools.items()))
        outcomes = [run_scenario(scenario, pools, size, args.draws, Path(tmp) / "reports")
                    for size in sizes for scenario in SCENARIOS]
        timing = time_command(kotzias_project, big_batch(Path(tmp) / "big.csv", args.rows), args.rows, env)
    if args.json:
        print(json.dumps({"outcomes": [asdict(o) for o in outcomes], "command": asdict(timing),
                          "pools": {name: batch.rows_scored for name, batch in pools.items()}}, indent=2))
    else:
        print_tables(outcomes, timing)


if __name__ == "__main__":
    main()
