"""`steward registry models | versions | show | promote | rollback | init-roles`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from core.refs import ModelRef
from flows.events import announce_alias_move
from steward.commands.common import console, emit, open_registry

if TYPE_CHECKING:
    from datetime import datetime

    from rich.console import Console

    from governance.records import ModelVersionDetail


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "—"


def models(args: argparse.Namespace) -> int:
    from rich.table import Table

    with open_registry(args) as registry:
        summaries = registry.list_models()

    def render() -> None:
        table = Table(title=f"Registered models ({len(summaries)})")
        for column in ("name", "versions", "latest", "aliases", "approval", "created"):
            table.add_column(column)
        for model in summaries:
            aliases = ", ".join(f"{alias}→v{version}" for alias, version in sorted(model.aliases.items()))
            approval = "required" if model.require_approval else "—"
            table.add_row(model.name, str(model.version_count), f"v{model.latest_version}",
                          aliases or "—", approval, _when(model.created_at))
        console().print(table)

    emit(args, {"models": summaries}, render)
    return 0


def versions(args: argparse.Namespace) -> int:
    from rich.table import Table

    with open_registry(args) as registry:
        records = registry.list_versions(args.name)
        aliases = next((m.aliases for m in registry.list_models() if m.name == args.name), {})
    by_version: dict[int, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(version, []).append(alias)

    def render() -> None:
        table = Table(title=f"{args.name}: {len(records)} versions")
        for column in ("version", "aliases", "status", "parent", "base model", "run", "created", "by"):
            table.add_column(column)
        for record in records:
            table.add_row(
                f"v{record.version}", ", ".join(sorted(by_version.get(record.version, []))) or "—",
                record.status, f"v{record.parent_version}" if record.parent_version else "—",
                record.base_model, record.run_id[:8], _when(record.created_at), record.created_by,
            )
        console().print(table)

    emit(args, {"model": args.name, "aliases": aliases, "versions": records}, render)
    return 0


def _print_summary(out: Console, detail: ModelVersionDetail) -> None:
    version, run, gate = detail.version, detail.run, detail.gate_decision
    parent = f"v{version.parent_version}" if version.parent_version else "—"
    out.print(f"[bold]{version.model_name} v{version.version}[/]  "
              f"aliases: {', '.join(detail.aliases) or '—'}  status: {version.status}")
    out.print(f"artifact: {version.artifact_path}")
    out.print(f"base model: {version.base_model}  parent: {parent}")
    out.print(f"run: {run.id} ({run.kind}, {run.status}) by {run.author}, seed {run.seed}, "
              f"code {run.code_version}, Prefect flow run {run.flow_run_id or '—'}")
    if gate is not None:
        champion = "—" if gate.champion_score is None else f"{gate.champion_score:.4f}"
        out.print(f"gate: {gate.outcome} ({gate.primary_metric} {gate.candidate_score:.4f} "
                  f"vs champion {champion}): {'; '.join(gate.reasons)}")


def _figure(metrics: dict[str, float], key: str) -> str:
    return f"{metrics[key]:.4f}" if key in metrics else "—"


def _print_evidence(out: Console, detail: ModelVersionDetail) -> None:
    from rich.table import Table

    sections = {
        "datasets": (("role", "rows", "fingerprint", "source"),
                     [(role, str(d.rows), d.fingerprint[:16], d.source)
                      for role, d in detail.datasets.items()]),
        "metrics": (("metric", "value"), [(k, f"{v:.4f}") for k, v in sorted(detail.metrics.items())]),
        "files": (("file", "sha256", "bytes"),
                  [(f.relative_path, f.sha256, str(f.size_bytes or "")) for f in detail.files]),
        "compressed forms": (("form", "method", "gate", "bytes", "agreement", "metric drop", "reasons"),
                             [(f.form, f.method, f.status, str(f.size_bytes or "—"), _figure(f.metrics, "agreement"),
                               _figure(f.metrics, "metric_drop"), "; ".join(f.reasons)) for f in detail.forms]),
    }
    for title, (columns, rows) in sections.items():
        table = Table(*columns, title=title)
        for row in rows:
            table.add_row(*row)
        out.print(table)


def show(args: argparse.Namespace) -> int:
    name, number = ModelRef.parse_version(args.ref)
    with open_registry(args) as registry:
        detail = registry.get_version(name, number)

    def render() -> None:
        out = console()
        _print_summary(out, detail)
        _print_evidence(out, detail)

    emit(args, detail, render)
    return 0


def promote(args: argparse.Namespace) -> int:
    name, number = ModelRef.parse_version(args.ref)
    with open_registry(args) as registry:
        move = registry.promote(name, number, alias=args.alias, approver=args.approver, reason=args.reason)
    announce_alias_move(move)
    previous = f" (was v{move.previous_version})" if move.previous_version else ""
    emit(args, move, lambda: console().print(
        f"{name}: {move.alias} → v{move.version}{previous}, approved by {move.actor}"))
    return 0


def rollback(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        move = registry.rollback(args.name, reason=args.reason)
    announce_alias_move(move)
    emit(args, move, lambda: console().print(
        f"{args.name}: champion rolled back v{move.previous_version} → v{move.version} by {move.actor}"))
    return 0


def init_roles(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        roles = registry.init_roles()
    emit(args, {"roles": roles}, lambda: console().print(
        "Roles ready: " + ", ".join(f"{role.name} ({role.grants})" for role in roles)))
    return 0
