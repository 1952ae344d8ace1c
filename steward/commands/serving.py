"""`steward serve`: the retraining and monitoring deployments on their schedules, until stopped."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from steward.config import load_config
from steward.errors import BadInputError


def _require_prefect_server() -> None:
    """Schedules and triggers are evaluated by a Prefect server; a temporary in-process one has neither."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise BadInputError(
            "steward serve needs a Prefect server: run `prefect server start`, then set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )


def serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    from flows.deployments import build_deployments, serve_until_stopped

    deployments = build_deployments(config, Path(args.config), args.registry)
    _require_prefect_server()
    if deployments.monitor is None:
        sys.stderr.write(
            f"steward: note: {args.config} sets no monitoring.current, so only retraining is served; "
            "add monitoring.current (the batch to check on schedule.monitor_cron) to serve monitoring too\n"
        )
    serve_until_stopped(deployments)
    return 0
