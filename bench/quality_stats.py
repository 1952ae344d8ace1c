"""The figures `bench/quality.py` reports: per-method spreads over seeds and paired per-seed gains."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from quality_methods import Scores  # bench/quality_methods.py, beside this file


@dataclass(frozen=True)
class Run:
    seed: int
    method: str
    scores: Scores
    seconds: float  # wall
    cpu_seconds: float  # this process's and its finished children's, all threads: steadier on a shared machine


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
