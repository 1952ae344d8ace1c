"""`steward audit log | verify | report`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from steward.commands.common import console, emit, open_registry, parse_ref


def log(args: argparse.Namespace) -> int:
    from rich.table import Table

    with open_registry(args) as registry:
        events = registry.audit.events(args.name, limit=args.limit)

    def render() -> None:
        table = Table(title=f"Audit log{' of ' + args.name if args.name else ''} ({len(events)} events)")
        for column in ("seq", "time (UTC)", "actor", "event", "subject", "payload"):
            table.add_column(column, overflow="fold")
        for event in events:
            payload = ", ".join(f"{k}={v}" for k, v in sorted(event.payload.items())) if event.payload else ""
            table.add_row(str(event.seq), event.created_at[:19], event.actor, event.event_type,
                          event.subject, payload[:160])
        console().print(table)

    emit(args, {"events": events}, render)
    return 0


def verify(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        result = registry.audit.verify()

    def render() -> None:
        if result.ok:
            console().print(f"[green]Audit chain intact[/]: {result.events_checked} events verified")
        else:
            console().print(f"[red]Audit chain broken at event {result.first_broken_seq}[/]: {result.reason}")

    emit(args, result, render)
    if result.ok:
        return 0
    sys.stderr.write(f"steward: error: audit chain broken at event {result.first_broken_seq}: {result.reason}\n")
    return 1


def report(args: argparse.Namespace) -> int:
    from governance.report import write_report

    name, number = parse_ref(args.ref)
    out = Path(args.out) if args.out else Path(f"{name}-v{number}-audit.{args.format}")
    with open_registry(args) as registry:
        path = write_report(registry, name, number, out, fmt=args.format)
    emit(args, {"report": str(path)}, lambda: console().print(f"Audit report written to {path}"))
    return 0
