"""`steward serve`: the retraining and monitoring deployments on their schedules, until stopped."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.config import load_config
from core.errors import BadInputError


def serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    from flows.deployments import build_deployments, require_prefect_server, serve_until_stopped

    deployments = build_deployments(config, Path(args.config))
    require_prefect_server()
    if deployments.monitor is None:
        sys.stderr.write(
            f"steward: note: {args.config} sets no monitoring.current, so only retraining is served; "
            "add monitoring.current (the batch to check on schedule.monitor_cron) to serve monitoring too\n"
        )
    serve_until_stopped(deployments)
    return 0


TOKEN_ENV = "STEWARD_API_TOKEN"


def read_token(token_file: str | None) -> str | None:
    """--token-file's first line, else STEWARD_API_TOKEN, else None (no token: every route is open)."""
    import os

    if token_file:
        path = Path(token_file)
        if not path.is_file():
            raise BadInputError(f"{path}: token file not found")
        token = path.read_text(encoding="utf-8").strip()
        if not token:
            raise BadInputError(f"{path}: the token file is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def serve_model(args: argparse.Namespace) -> int:
    """The classifier API (`steward.server`), or for a causal language model the OpenAI-compatible one
    (`steward.openai_server`), as the version's manifest says."""
    import uvicorn

    from core.config import ServingConfig, resolve_registry_url
    from core.refs import ModelRef
    from steward.commands.common import config_from_args
    from steward.language_model import RegisteredGenerator
    from steward.loading import load_ref
    from steward.server import ServerSettings, create_app

    config = config_from_args(args)
    serving = config.serving if config is not None else ServingConfig()
    registry_url = resolve_registry_url(config)
    settings = ServerSettings(
        ref=ModelRef.parse(args.model), registry_url=registry_url, token=read_token(args.token_file),
        poll_seconds=args.poll_seconds, log_url=(serving.log_url or registry_url) if serving.log_predictions else None,
        log_text=serving.log_text, log_retention=serving.log_retention, form=args.form,
        phone_region=config.validation.phone_region if config is not None else "US",
    )
    model = load_ref(settings.ref, settings.registry_url, settings.form)  # a bad reference or checksum fails here
    if isinstance(model, RegisteredGenerator):
        from steward.openai_server import create_openai_app

        app, api = create_openai_app(settings, model), " (OpenAI-compatible API under /v1)"
    else:
        app, api = create_app(settings, model), ""
    sys.stderr.write(f"steward: serving {model.identity.name} v{model.version} "
                     f"({settings.ref}, {model.identity.form}) on "
                     f"http://{args.host}:{args.port}{api}{' with a bearer token' if settings.token else ''}\n")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
