"""`steward demo | run | validate | pretrain | finetune | evaluate`: run a flow, print its outcome."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.config import load_config
from core.refs import ModelRef
from steward.commands.common import console, emit


def _metrics_table(title: str, metrics: dict[str, float], baseline: dict[str, float] | None = None):
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("candidate", justify="right")
    if baseline is not None:
        table.add_column("champion", justify="right")
        table.add_column("delta", justify="right")
    for name, value in sorted(metrics.items()):
        row = [name, f"{value:.4f}"]
        if baseline is not None:
            old = baseline.get(name)
            row += ["—", "—"] if old is None else [f"{old:.4f}", f"{value - old:+.4f}"]
        table.add_row(*row)
    return table


def _classical_line(metrics: dict[str, float]) -> str:
    from core.vocabulary import CLASSICAL_BASELINE_NAME

    return f"Classical baseline ({CLASSICAL_BASELINE_NAME}, same split): " + ", ".join(
        f"{name} {value:.4f}" for name, value in sorted(metrics.items())
    )


def _base_line(metrics: dict[str, float]) -> str:
    return (f"Base model (same test documents): perplexity {metrics['perplexity']:.3f} "
            f"(95% interval {metrics['perplexity_ci_low']:.3f}–{metrics['perplexity_ci_high']:.3f})")


def _risk_lines(slices: list[dict], robustness: list[dict]) -> list[str]:
    """The weakest slice against its reference and the overall flip rate, beside the champion's."""
    from core.results import overall_flip_rate, weakest_slice

    lines = []
    worst, overall = weakest_slice(slices), overall_flip_rate(robustness)
    if worst is not None:
        lines.append(f"Weakest slice: {worst['name']} ({worst['rows']} rows) {worst['metric']} {worst['score']:.4f} "
                     f"vs the {worst['reference_name']}'s {worst['reference']:.4f}")
    if overall is not None:
        champion = "" if overall["champion_rate"] is None else f" (champion {overall['champion_rate']:.1%})"
        lines.append(f"Flip rate under perturbation: {overall['rate']:.1%} of {overall['rows']} texts{champion}")
    return lines


def _print_retrain(outcome) -> None:
    out = console()
    baseline = f" against champion v{outcome.baseline_version}" if outcome.baseline_version else ""
    scalar = {name: value for name, value in outcome.metrics.items() if isinstance(value, int | float)}
    out.print(_metrics_table(f"{outcome.model} v{outcome.version}: test metrics{baseline}",
                             scalar, outcome.baseline_metrics))
    if outcome.classical_baseline_metrics is not None:
        out.print(_classical_line(outcome.classical_baseline_metrics))
    if outcome.base_metrics is not None:
        out.print(_base_line(outcome.base_metrics))
    for line in _risk_lines(outcome.slices, outcome.robustness):
        out.print(line)
    style = {"promoted": "bold green", "challenger": "bold yellow"}.get(outcome.decision, "bold red")
    out.print(f"Gate: [{style}]{outcome.decision}[/] — " + "; ".join(outcome.reasons))
    out.print(f"Audit report: {outcome.report}")


def run(args: argparse.Namespace) -> int:
    load_config(args.config)  # fail fast on a bad config, before Prefect starts
    from flows.retrain import retrain

    outcome = retrain(config_path=args.config)
    emit(args, outcome, lambda: _print_retrain(outcome))
    return 1 if outcome.decision == "rejected" else 0


def demo(args: argparse.Namespace) -> int:
    """Write the demo, then run its quick config; the full recipe is one command away."""
    if args.task == "causal-lm":
        return _language_model_demo(args)
    from steward.demo import QUICK_CONFIG_FILE, write_demo

    full_config = write_demo(Path(args.workdir))
    quick_config = full_config.with_name(QUICK_CONFIG_FILE)
    if not args.json:
        console().print(f"Demo data and configs written to {full_config.parent}; running the flow with the quick "
                        f"recipe ({quick_config.name}: one epoch, a smaller self-training round)…")
    args.config = str(quick_config)
    code = run(args)
    if not args.json:
        console().print(
            f"Next: [bold]steward run --config {full_config}[/] (the full recipe; the gate compares it with this "
            f"champion), [bold]steward registry versions {load_config(quick_config).name} --config {full_config}[/], "
            f"or [bold]steward audit verify --config {full_config}[/]."
        )
    return code


def _language_model_demo(args: argparse.Namespace) -> int:
    """Write the Python-documentation corpus and its config, then adapt the packaged decoder to it."""
    from steward.demo.python_docs import CORPUS_DIR, write_lm_demo

    config = write_lm_demo(Path(args.workdir))
    if not args.json:
        console().print(f"Corpus ({CORPUS_DIR}/: the docstrings of this Python's standard library) and config written "
                        f"to {config.parent}; adapting SmolLM2-135M-Instruct to it with LoRA…")
    args.config = str(config)
    code = run(args)
    if not args.json:
        console().print(f"Next: [bold]steward predict --model python-docs-lm@champion --input FILE --generate "
                        f"--config {config}[/], [bold]steward serve-model --model python-docs-lm@champion --config "
                        f"{config}[/] (the OpenAI API), or [bold]steward audit verify --config {config}[/].")
    return code


def _classification_only(config_path: str, command: str) -> None:
    """`steward validate | finetune | evaluate` are stages of a classifier; a causal-lm config is refused in one
    line that says what to run instead (before Prefect starts)."""
    from core.errors import BadInputError
    from core.vocabulary import CAUSAL_LM

    if load_config(config_path).task == CAUSAL_LM:
        raise BadInputError(f"{config_path}: steward {command} is for task text-classification; a causal-lm model "
                            "is validated, adapted and evaluated by `steward run` (or `steward pretrain` alone)")


def validate(args: argparse.Namespace) -> int:
    _classification_only(args.config, "validate")
    from flows.single_stage import validate_only

    outcome = validate_only(config_path=args.config, data_path=args.data)

    def render() -> None:
        out = console()
        checked = ", ".join(f"{role}: {count} expectations" for role, count in outcome.checked.items())
        if outcome.success:
            out.print(f"[green]Validation passed[/] ({checked})")
            return
        out.print(f"[red]Validation failed[/] ({checked}):")
        for line in outcome.failed_expectations:
            out.print(f"  • {line}")

    emit(args, outcome, render)
    return 0 if outcome.success else 1


def pretrain(args: argparse.Namespace) -> int:
    load_config(args.config)  # fail fast on a bad config, before Prefect starts
    from flows.single_stage import pretrain_only

    result = pretrain_only(config_path=args.config, nproc=args.nproc)

    def render() -> None:
        cached = " (cached checkpoint reused)" if result.cache_hit else ""
        console().print(
            f"Adapted checkpoint{cached} ({result.objective}): {result.model_dir}\n"
            f"Held-out {result.objective} loss {result.heldout_loss_before:.3f} → {result.heldout_loss_after:.3f} "
            f"after {result.steps} steps"
        )

    emit(args, result, render)
    return 0


def finetune(args: argparse.Namespace) -> int:
    _classification_only(args.config, "finetune")
    from flows.single_stage import finetune_only

    outcome = finetune_only(config_path=args.config, nproc=args.nproc)

    def render() -> None:
        out = console()
        out.print(_metrics_table(f"{outcome.model} v{outcome.version} (registered, no alias)", outcome.metrics))
        out.print(_classical_line(outcome.classical_baseline_metrics))

    emit(args, outcome, render)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    _classification_only(args.config, "evaluate")
    from flows.single_stage import evaluate_version

    name, version = ModelRef.parse_version(args.model)
    outcome = evaluate_version(config_path=args.config, model_name=name, version=version)
    def show() -> None:
        console().print(_metrics_table(f"{name} v{version}", outcome.metrics))
        for line in _risk_lines(outcome.slices, outcome.robustness):
            console().print(line)

    emit(args, outcome, show)
    return 0
