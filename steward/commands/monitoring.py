"""`steward monitor`: drift of a batch against the champion's reference data."""

from __future__ import annotations

import argparse

from core.config import load_config
from steward.commands.common import console, emit

VERDICTS = {"drift": "[bold red]drift detected[/]", "prior_shift": "[bold yellow]prior shift[/] (class mix only)",
            "none": "[bold green]no drift[/]"}


def _print_outcome(outcome) -> None:
    from rich.table import Table

    from flows.monitor import RETRAIN_SENTENCES

    out = console()
    table = Table(title=f"{outcome.model} (champion v{outcome.champion_version}): {outcome.current} "
                        f"against its {outcome.reference}")
    for column in ("signal", "kind", "effect size", "threshold", "significant", "drifted"):
        table.add_column(column, justify="right" if column in ("effect size", "threshold") else "left")
    for signal in outcome.signals:
        mark = "[bold red]yes[/]" if signal.drifted else "no"
        table.add_row(signal.name, signal.kind, f"{signal.effect:.4g} ({signal.method})",
                      f"{signal.effect_threshold:g}", "yes" if signal.significant else "no", mark)
    out.print(table)
    out.print(f"{VERDICTS[outcome.finding]}: input drift share {outcome.drift_share:.2f} "
              f"(threshold {outcome.threshold:.2f}); {outcome.current_scored:,} of {outcome.current_rows:,} "
              f"current rows scored; {outcome.seconds:.1f}s in all")
    out.print(RETRAIN_SENTENCES[outcome.retrain].replace("`", ""))
    out.print(f"Evidently report: {outcome.report}")


def monitor(args: argparse.Namespace) -> int:
    load_config(args.config)  # fail fast on a bad config, before Prefect starts
    from flows.monitor import monitor as monitor_flow

    outcome = monitor_flow(config_path=args.config, current_path=args.current, since=args.since)
    emit(args, outcome, lambda: _print_outcome(outcome))
    return 1 if args.fail_on_drift and outcome.drift_detected else 0
