"""`steward monitor`: drift of a batch against the champion's training data."""

from __future__ import annotations

import argparse

from steward.commands.common import console, emit
from steward.config import load_config


def _print_outcome(outcome) -> None:
    from rich.table import Table

    out = console()
    table = Table(title=f"{outcome.model} (champion v{outcome.champion_version}): drift of {outcome.current}")
    for column in ("signal", "method", "score", "drifted"):
        table.add_column(column, justify="right" if column == "score" else "left")
    for signal in outcome.signals:
        mark = "[bold red]yes[/]" if signal.drifted else "no"
        table.add_row(signal.name, signal.method, f"{signal.score:.4g}", mark)
    out.print(table)
    verdict = "[bold red]drift detected[/]" if outcome.drift_detected else "[bold green]no drift[/]"
    out.print(f"{verdict}: share {outcome.drift_share:.2f} (threshold {outcome.threshold:.2f}); "
              f"{outcome.current_scored:,} of {outcome.current_rows:,} current rows scored; "
              f"{outcome.seconds:.1f}s in all")
    out.print(f"Evidently report: {outcome.report}")


def monitor(args: argparse.Namespace) -> int:
    load_config(args.config)  # fail fast on a bad config, before Prefect starts
    from flows.monitor import monitor as monitor_flow

    outcome = monitor_flow(config_path=args.config, current_path=args.current, registry_url=args.registry)
    emit(args, outcome, lambda: _print_outcome(outcome))
    return 1 if args.fail_on_drift and outcome.drift_detected else 0
