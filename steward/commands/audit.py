"""`steward audit log | verify | report | keygen | anchor`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.errors import BadInputError
from core.refs import ModelRef
from steward.commands.common import console, emit, open_registry, registry_url


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
    if args.anchors is not None or args.public_key is not None:
        return _verify_anchored(args)
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


def _verify_anchored(args: argparse.Namespace) -> int:
    from governance.anchors import load_public_key, registry_engine, verify_anchored

    if args.anchors is None or args.public_key is None:
        raise BadInputError("--anchors DIR and --public-key FILE go together")
    public_key = load_public_key(Path(args.public_key))
    with registry_engine(registry_url(args)) as engine:
        result = verify_anchored(engine, Path(args.anchors), public_key)

    def render() -> None:
        anchors = result.anchors
        if result.ok:
            console().print(f"[green]Audit chain intact and anchored[/]: {result.chain.events_checked} events, "
                            f"{anchors.digests_checked} digests verified (newest {anchors.newest_digest})")
        else:
            console().print(f"[red]Audit chain check failed[/]: {result.reason}")

    emit(args, result, render)
    if result.ok:
        return 0
    sys.stderr.write(f"steward: error: {result.reason}\n")
    return 1


def keygen(args: argparse.Namespace) -> int:
    from governance.anchors import write_key_pair

    keys = write_key_pair(Path(args.out))
    emit(args, keys, lambda: console().print(
        f"Anchor key pair written: {keys.private_key} (private, mode 0600: keep it off the database host) and "
        f"{keys.public_key}, fingerprint {keys.fingerprint}"
    ))
    return 0


def anchor(args: argparse.Namespace) -> int:
    from governance.anchors import anchor_registry

    written = anchor_registry(registry_url(args), Path(args.key), Path(args.out))
    emit(args, written, lambda: console().print(
        f"Anchored the audit chain at event {written.digest.head_seq}: {written.path}"
    ))
    return 0


def report(args: argparse.Namespace) -> int:
    from flows.context import prefect_ui_url
    from reports.audit import write_report

    name, number = ModelRef.parse_version(args.ref)
    out = Path(args.out) if args.out else Path(f"{name}-v{number}-audit.{args.format}")
    with open_registry(args) as registry:
        path = write_report(registry, name, number, out, fmt=args.format, ui_url=prefect_ui_url())
    emit(args, {"report": str(path)}, lambda: console().print(f"Audit report written to {path}"))
    return 0
