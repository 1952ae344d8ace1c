"""Orchestration overhead and start-up time of the `steward` command line, on the demo.

    .venv/bin/python bench/overhead.py [--epochs N] [--runs 5] [--json]

1. Overhead: `steward finetune --config <demo config>` as a whole process (a fresh interpreter, the
   Prefect flow, the registry, loading and validating the data, fine-tuning, test-set evaluation,
   registration) against the fine-tuning task alone, `tasks.finetune.fine_tune.fn`, called directly in
   this process on the same tables, model and settings (its imports and the data loading not timed).
   Both use a copy of the demo config with pretraining switched off, so that one training task is
   compared (on a re-run pretraining is a cache hit anyway); `--epochs` shortens the fine-tuning.
   Overhead = whole − direct, in seconds and in percent of direct; the stage timings the flow prints on
   stderr say where the difference goes. As the two trainings run at different moments, a busy machine
   makes that difference noisy (±20% of training time on a shared 2-core box); the whole process's time
   outside its own fine-tuning stage is measured within one run and does not depend on training speed,
   so it is reported too (as a percent of that stage).
2. Start-up: `steward --help` and `steward registry models` (on the registry the run above left), the
   median of `--runs` fresh processes each.

Progress goes to stderr; the table (or, with --json, one JSON object) to stdout. Timings on a shared
machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from steward.cli import QUIET_THIRD_PARTY_DEFAULTS
from steward.config import load_config
from steward.demo import write_demo
from tasks.data import load_table
from tasks.finetune import fine_tune
from tasks.modeling import resolve_base_model

STEWARD = Path(sys.executable).with_name("steward")
TRAINING_STAGE = "fine-tuning"
STAGE_START = "▶ "
STAGE_LINE = re.compile(r"^✓ (?P<stage>.+) \((?P<seconds>[0-9.]+)s\)$")
HELP_GOAL_S, REGISTRY_GOAL_S, OVERHEAD_GOAL = 1.0, 1.5, 0.05


@dataclass(frozen=True)
class Overhead:
    direct_seconds: float  # fine_tune.fn alone
    command_seconds: float  # `steward finetune` as a whole process
    stage_seconds: dict[str, float]  # what the flow reported per stage, in order
    epochs: int

    @property
    def seconds(self) -> float:
        return self.command_seconds - self.direct_seconds

    @property
    def fraction(self) -> float:
        return self.seconds / self.direct_seconds

    @property
    def outside_training_seconds(self) -> float:
        """The whole process's time outside its fine-tuning stage: start-up, Prefect, registry, data
        loading, validation, evaluation, registration."""
        return self.command_seconds - self.stage_seconds[TRAINING_STAGE]


@dataclass(frozen=True)
class StartUp:
    command: str
    runs: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def overhead_config(workdir: Path, epochs: int | None) -> Path:
    """The demo config with pretraining off (and `epochs` when given), beside the demo's data."""
    demo = write_demo(workdir)
    raw = yaml.safe_load(demo.read_text(encoding="utf-8"))
    raw["pretraining"]["enabled"] = False
    if epochs is not None:
        raw["finetuning"]["epochs"] = epochs
    path = workdir / "steward-overhead.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def time_direct(config_path: Path, output_dir: Path) -> float:
    config = load_config(config_path)
    data = config.data
    train = load_table.fn(config.resolve(data.train), data.text_column, data.label_column, "train")
    validation = load_table.fn(config.resolve(data.validation), data.text_column, data.label_column, "validation")
    model_dir = resolve_base_model(config.base_model, config.workdir)
    started = time.perf_counter()
    fine_tune.fn(
        model_dir, train, validation, config.finetuning, config.seed, output_dir, config.evaluation.primary_metric
    )
    return time.perf_counter() - started


def time_command(config_path: Path) -> tuple[float, dict[str, float], float, float]:
    """Wall time of the whole process, the flow's own stage timings, and when (seconds from the start)
    the first stage began and the last one ended, read from its stderr as it runs."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(STEWARD), "finetune", "--config", str(config_path), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    stages: dict[str, float] = {}
    first_stage_at = last_stage_done_at = math.nan
    last_line = ""
    for line in process.stderr:
        now, last_line = time.perf_counter() - started, line.strip() or last_line
        if line.startswith(STAGE_START) and math.isnan(first_stage_at):
            first_stage_at = now
        if match := STAGE_LINE.match(line.strip()):
            stages[match["stage"]] = float(match["seconds"])
            last_stage_done_at = now
    process.stdout.read()
    if process.wait() != 0:
        raise SystemExit(f"overhead: steward finetune failed: {last_line}")
    return time.perf_counter() - started, stages, first_stage_at, last_stage_done_at


def time_start_up(arguments: list[str], runs: int) -> StartUp:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(STEWARD), *arguments], capture_output=True, check=True)
        timings.append(time.perf_counter() - started)
    return StartUp(" ".join(["steward", *arguments]), timings)


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    config_path = overhead_config(workdir, args.epochs)
    epochs = load_config(config_path).finetuning.epochs
    progress(f"fine-tune task called directly ({epochs} epochs)…")
    direct = time_direct(config_path, workdir / "direct-output")
    progress("steward finetune as a whole process…")
    command_seconds, stages, first_stage_at, last_stage_done_at = time_command(config_path)
    overhead = Overhead(direct, command_seconds, stages, epochs)
    progress(f"start-up, {args.runs} runs each…")
    start_ups = [
        time_start_up(["--help"], args.runs),
        time_start_up(["registry", "models", "--config", str(config_path)], args.runs),
    ]
    return {
        "compared": "`steward finetune` (whole process) vs tasks.finetune.fine_tune.fn in-process; demo config "
        "with pretraining disabled",
        "epochs": epochs,
        "direct_seconds": overhead.direct_seconds,
        "command_seconds": overhead.command_seconds,
        "overhead_seconds": overhead.seconds,
        "overhead_percent": 100 * overhead.fraction,
        "outside_training_seconds": overhead.outside_training_seconds,
        "outside_training_percent": 100 * overhead.outside_training_seconds / stages[TRAINING_STAGE],
        "stage_seconds": overhead.stage_seconds,
        "before_first_stage_seconds": first_stage_at,  # interpreter, imports, Prefect, registry, run record
        "after_last_stage_seconds": command_seconds - last_stage_done_at,  # flow end, process exit
        "start_up": [{**asdict(start_up), "median": start_up.median} for start_up in start_ups],
        "cpu_cores": os.cpu_count(),
        "load_average": os.getloadavg()[0],
    }


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    table = Table(title=f"steward finetune on the demo ({report['epochs']} epochs, pretraining off)")
    table.add_column("what")
    table.add_column("seconds", justify="right")
    table.add_row("fine_tune.fn called directly", f"{report['direct_seconds']:.1f}")
    table.add_row("steward finetune, whole process", f"{report['command_seconds']:.1f}")
    table.add_row("  before the first stage (start-up, imports, Prefect, registry)",
                  f"{report['before_first_stage_seconds']:.1f}")
    for stage, seconds in report["stage_seconds"].items():
        table.add_row(f"  stage: {stage}", f"{seconds:.1f}")
    table.add_row("  after the last stage (flow end, exit)", f"{report['after_last_stage_seconds']:.1f}")
    table.add_row("overhead: whole − direct", f"{report['overhead_seconds']:.1f} ({report['overhead_percent']:.1f}%)")
    table.add_row(
        "whole process outside its fine-tuning stage",
        f"{report['outside_training_seconds']:.1f} ({report['outside_training_percent']:.1f}% of the stage)",
    )
    console.print(table)
    console.print(f"goal: overhead ≤ {OVERHEAD_GOAL:.0%} of the fine-tuning time")
    start_up = Table(title="start-up (fresh processes)")
    for column in ("command", "median s", "goal s", "runs"):
        start_up.add_column(column, justify="left" if column in ("command", "runs") else "right")
    for entry, goal in zip(report["start_up"], (HELP_GOAL_S, REGISTRY_GOAL_S), strict=True):
        runs = ", ".join(f"{value:.2f}" for value in entry["runs"])
        start_up.add_row(entry["command"].split(" --config")[0], f"{entry['median']:.2f}", f"< {goal}", runs)
    console.print(start_up)
    console.print(f"load average during the bench: {report['load_average']:.1f} on {report['cpu_cores']} cores")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs (default: the demo's)")
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per start-up figure")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    for name in ("epochs", "runs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1, got {value}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for key, value in QUIET_THIRD_PARTY_DEFAULTS.items():
        os.environ.setdefault(key, value)
    with tempfile.TemporaryDirectory(prefix="steward-overhead-") as workdir:
        report = bench(args, Path(workdir))
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
