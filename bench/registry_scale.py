"""Registry at scale: audit append rate, `versions NAME` latency with many versions, full chain verify.

    .venv/bin/python bench/registry_scale.py --backend both --versions 10000 --events 1000000 [--json]

Each backend gets a fresh database (a temporary SQLite file; a scratch PostgreSQL database on the
server of --pg-url, dropped afterwards). Progress goes to stderr; figures to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from governance.audit import EventIn
from governance.db import scratch_database
from governance.events import StageCompleted, StageStarted
from governance.registry import Registry

MODEL = "bench-model"
SHA = "0" * 64
DEFAULT_PG_URL = os.environ.get("STEWARD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
GOALS = {"append_per_s": 2_000, "list_versions_ms": 100, "verify_s": 20}


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


@contextmanager
def database(backend: str, pg_url: str) -> Iterator[str]:
    if backend == "postgres":
        with scratch_database(pg_url) as url:
            yield url
        return
    with tempfile.TemporaryDirectory(prefix="steward-bench-") as workdir:
        yield f"sqlite:///{Path(workdir) / 'registry.db'}"


def fill_versions(registry: Registry, count: int) -> float:
    """Register ``count`` versions through the public API; returns registrations per second."""
    run = registry.start_run(
        kind="retrain", model_name=MODEL, config={}, seed=0, code_version="bench", package_versions={}
    )

    def register_all() -> None:
        for i in range(count):
            registry.register_version(
                model_name=MODEL,
                run_id=run.id,
                artifact_path=f"/artifacts/{i}",
                files={"model.safetensors": SHA},
                base_model="minilm",
                parent_version=i or None,
            )

    return count / timed(register_all)


def bulk_events(count: int) -> Iterator[EventIn]:
    for i in range(count):
        yield EventIn(f"{MODEL}:{i % 1000}", StageCompleted(f"run-{i // 100}", f"finetune step {i}", 0.25))


def measure(url: str, versions: int, events: int, appends: int) -> dict[str, float | int]:
    with Registry.open(url) as registry:
        progress(f"  registering {versions:,} versions")
        register_rate = fill_versions(registry, versions)
        bulk = max(events - appends - registry.audit.verify().events_checked, 0)
        progress(f"  bulk-appending {bulk:,} events")
        bulk_rate = bulk / timed(lambda: registry.audit.append_many(bulk_events(bulk), batch_size=10_000))
        progress(f"  {appends:,} single appends")
        appended = (StageStarted("bench", f"append {i}") for i in range(appends))
        append_rate = appends / timed(lambda: [registry.audit.append(MODEL, payload) for payload in appended])
        latencies = [timed(lambda: registry.list_versions(MODEL)) for _ in range(20)]
        progress("  verifying the chain")
        started = time.perf_counter()
        result = registry.audit.verify()
        verify_s = time.perf_counter() - started
    assert result.ok, result
    return {
        "versions": versions,
        "events": result.events_checked,
        "register_per_s": round(register_rate, 1),
        "bulk_append_per_s": round(bulk_rate, 1),
        "append_per_s": round(append_rate, 1),
        "list_versions_ms": round(statistics.median(latencies) * 1000, 2),
        "verify_s": round(verify_s, 2),
    }


def print_table(results: dict[str, dict[str, float | int]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Registry at scale")
    table.add_column("figure")
    for backend in results:
        table.add_column(backend, justify="right")
    table.add_column("goal", justify="right")
    for key in next(iter(results.values())):
        goal = GOALS.get(key)
        table.add_row(key, *(f"{r[key]:,}" for r in results.values()), "" if goal is None else f"{goal:,}")
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=1_000_000, help="total audit events in the chain")
    parser.add_argument("--appends", type=int, default=2_000, help="single-transaction appends to time")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="any database on the PostgreSQL server")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    results = {}
    for backend in backends:
        progress(f"{backend}:")
        with database(backend, args.pg_url) as url:
            results[backend] = measure(url, args.versions, args.events, args.appends)
    if args.json:
        print(json.dumps(results))
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
