"""Orchestration overhead and start-up time of the `steward` command line, on the demo.

    .venv/bin/python bench/overhead.py [--epochs N] [--runs 5] [--json]

1. Overhead: `steward finetune --config <demo config>` as a whole process against the same work done
   by a plain Python script, also a fresh process: load the three tables, validate them with the same
   Great Expectations suite, `fine_tune`, `evaluate_model` on the test set, with no Prefect, no
   registry and no audit log. Overhead = steward − script, in seconds and in percent of the script: what
   the orchestration itself (Prefect flow and task runs, the registry, the audit log, hashing and
   registering the weights) costs. `steward finetune` is timed twice: with Prefect's temporary
   server (what a bare `steward` command starts) and against a running `prefect server start`
   (`PREFECT_API_URL`, as under `steward serve` and the UI). Both use a copy of the demo config with
   pretraining switched off, so one training is compared; `--epochs` shortens it. The fine-tuning
   stage's own time is printed too: trainings at different moments differ on a busy machine, so
   the steward run's time outside that stage is reported as well.
2. Start-up: `steward --help` and `steward registry models` (on the registry the runs above left),
   the median of `--runs` fresh processes each.

Progress goes to stderr; the table (or, with --json, one JSON object) to stdout. Timings on a shared
machine are noisy: run it alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from core.config import load_config
from steward.cli import QUIET_THIRD_PARTY_DEFAULTS
from steward.demo import write_demo

STEWARD = Path(sys.executable).with_name("steward")
TRAINING_STAGE = "fine-tuning"
STAGE_START = "▶ "
STAGE_LINE = re.compile(r"^✓ (?P<stage>.+) \((?P<seconds>[0-9.]+)s\)$")
HELP_GOAL_S, REGISTRY_GOAL_S, OVERHEAD_GOAL = 1.0, 1.5, 0.05


@dataclass(frozen=True)
class CommandRun:
    """`steward finetune` as a whole process, and the stage timings its flow printed."""

    prefect: str  # "temporary server" or "running server"
    seconds: float
    stage_seconds: dict[str, float]
    before_first_stage_seconds: float  # interpreter, imports, Prefect, registry, run record
    after_last_stage_seconds: float  # flow end, process exit

    def overhead(self, script_seconds: float) -> tuple[float, float]:
        """Seconds and percent over the plain script."""
        extra = self.seconds - script_seconds
        return extra, 100 * extra / script_seconds

    @property
    def outside_training_seconds(self) -> float:
        return self.seconds - self.stage_seconds[TRAINING_STAGE]


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


def run_plain_script(config_path: Path, output_dir: Path) -> None:
    """What `steward finetune` computes, called directly: no Prefect, no registry, no audit log."""
    from core.hashing import ModelFiles
    from tasks.data import load_table
    from tasks.evaluate import evaluate_model
    from tasks.finetune import FineTuneJob, fine_tune
    from tasks.modeling import resolve_base_model
    from tasks.validation import validate_table

    config = load_config(config_path)
    data = config.data
    tables = {
        role: load_table(config.resolve(path), data.text_column, data.label_column, role)
        for role, path in (("train", data.train), ("validation", data.validation), ("test", data.test))
    }
    allowed = sorted(set(tables["train"].labels or []) - {None})
    for table in tables.values():
        if not validate_table(table, config.validation, allowed, data.text_column, data.label_column).success:
            raise SystemExit(f"overhead: {table.source} fails validation")
    result = fine_tune(FineTuneJob(resolve_base_model(config.base_model, config.workdir), tables["train"],
                                   tables["validation"], config.finetuning, config.seed, output_dir,
                                   config.evaluation.primary_metric))
    evaluate_model(ModelFiles.of(result.model_dir), tables["test"])


def time_plain_script(config_path: Path, output_dir: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--plain-script", str(config_path), str(output_dir)], check=True)
    return time.perf_counter() - started


def time_command(config_path: Path, prefect: str, env: dict[str, str]) -> CommandRun:
    """Wall time of the whole process and the flow's own stage timings, read from its stderr as it runs."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(STEWARD), "finetune", "--config", str(config_path), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
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
    seconds = time.perf_counter() - started
    return CommandRun(prefect, seconds, stages, first_stage_at, seconds - last_stage_done_at)


@contextmanager
def prefect_server(home: Path) -> Iterator[dict[str, str]]:
    """`prefect server start` on a free loopback port; the environment of a command that uses it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api, "PREFECT_UI_API_URL": api}
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not _healthy(api):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("overhead: prefect server start did not come up")
            time.sleep(0.5)
        yield env
    finally:
        server.terminate()
        server.wait(30)


def _healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


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
    progress(f"the same work as a plain script ({epochs} epochs)…")
    script_seconds = time_plain_script(config_path, workdir / "plain-output")
    progress("steward finetune, Prefect's temporary server…")
    runs = [time_command(config_path, "temporary server", dict(os.environ))]
    progress("steward finetune against a running Prefect server…")
    with prefect_server(workdir / "prefect-home") as env:
        runs.append(time_command(config_path, "running server", env))
    progress(f"start-up, {args.runs} runs each…")
    start_ups = [
        time_start_up(["--help"], args.runs),
        time_start_up(["registry", "models", "--config", str(config_path)], args.runs),
    ]
    return {
        "compared": "`steward finetune` (whole process) vs a plain script doing the same loading, validation, "
        "fine-tuning and evaluation (fresh process); demo config with pretraining disabled",
        "epochs": epochs,
        "script_seconds": script_seconds,
        "runs": [
            {**asdict(run), "overhead_seconds": run.overhead(script_seconds)[0],
             "overhead_percent": run.overhead(script_seconds)[1],
             "outside_training_seconds": run.outside_training_seconds}
            for run in runs
        ],
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
    for run in report["runs"]:
        table.add_column(f"steward, {run['prefect']}", justify="right")
    runs = report["runs"]
    table.add_row("plain script, same work (s)", *[f"{report['script_seconds']:.1f}" for _ in runs])
    table.add_row("steward finetune, whole process (s)", *[f"{run['seconds']:.1f}" for run in runs])
    table.add_row("  before the first stage", *[f"{run['before_first_stage_seconds']:.1f}" for run in runs])
    for stage in runs[0]["stage_seconds"]:
        table.add_row(f"  stage: {stage}", *[f"{run['stage_seconds'].get(stage, math.nan):.1f}" for run in runs])
    table.add_row("  after the last stage", *[f"{run['after_last_stage_seconds']:.1f}" for run in runs])
    table.add_row("overhead: steward − script",
                  *[f"{run['overhead_seconds']:.1f} s ({run['overhead_percent']:.1f}%)" for run in runs])
    console.print(table)
    console.print(f"goal: overhead ≤ {OVERHEAD_GOAL:.0%}")
    start_up = Table(title="start-up (fresh processes)")
    for column in ("command", "median s", "goal s", "runs"):
        start_up.add_column(column, justify="left" if column in ("command", "runs") else "right")
    for entry, goal in zip(report["start_up"], (HELP_GOAL_S, REGISTRY_GOAL_S), strict=True):
        runs_text = ", ".join(f"{value:.2f}" for value in entry["runs"])
        start_up.add_row(entry["command"].split(" --config")[0], f"{entry['median']:.2f}", f"< {goal}", runs_text)
    console.print(start_up)
    console.print(f"load average during the bench: {report['load_average']:.1f} on {report['cpu_cores']} cores")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs (default: the demo's)")
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per start-up figure")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plain-script", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
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
    if args.plain_script:
        run_plain_script(Path(args.plain_script[0]), Path(args.plain_script[1]))
        return 0
    with tempfile.TemporaryDirectory(prefix="steward-overhead-") as workdir:
        report = bench(args, Path(workdir))
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
