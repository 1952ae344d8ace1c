"""What every command shares: the config, the registry, and output."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError, StewardError, one_line
from core.vocabulary import REGISTRY_URL_ENV

if TYPE_CHECKING:
    from core.config import StewardConfig
    from governance.registry import Registry


def config_from_args(args: argparse.Namespace) -> StewardConfig | None:
    from core.config import load_config

    path = getattr(args, "config", None)
    return load_config(path) if path else None


def registry_url(args: argparse.Namespace) -> str:
    """The registry the command's --config (if any) resolves to (--registry is in STEWARD_REGISTRY_URL by now)."""
    from core.config import resolve_registry_url

    return resolve_registry_url(config_from_args(args))


@contextmanager
def open_registry(args: argparse.Namespace) -> Iterator[Registry]:
    from governance.registry import Registry

    registry = Registry.open(registry_url(args))
    try:
        yield registry
    finally:
        registry.close()


def rejection_registry_url(error: ConfigError) -> str | None:
    """Where a rejected config is audited: wherever its readable parts resolve to (the default SQLite file
    beside the config file), or None when the config's folder does not exist: there is nowhere sensible to
    write."""
    from core.config import registry_url_for

    folder = error.path.resolve().parent if error.path is not None else None
    if folder is None or not folder.is_dir():
        return os.environ.get(REGISTRY_URL_ENV) or error.registry_url
    return registry_url_for(error.registry_url, folder)


def record_rejected_config(args: argparse.Namespace, error: ConfigError) -> None:
    """Append an `input_rejected` audit event with the one-line error; silent when the registry
    itself cannot be reached (the error the user sees already says what was wrong)."""
    from governance.events import InputRejected
    from governance.registry import Registry

    url = rejection_registry_url(error)
    if url is None:
        return
    payload = InputRejected(
        command=" ".join(part for part in (args.command, getattr(args, "action", None)) if part),
        config=str(error.path) if error.path is not None else None,
        error=one_line(str(error)),
        exit_code=error.exit_code,
    )
    try:
        with Registry.open(url) as registry:
            registry.audit.append(error.model_name or "config", payload)
    except StewardError:
        return


def to_jsonable(value: Any) -> Any:
    """Dataclasses, paths and datetimes as plain JSON data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: to_jsonable(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def emit(args: argparse.Namespace, payload: Any, render: Callable[[], None]) -> None:
    """One JSON object on stdout with --json, else the human rendering."""
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(to_jsonable(payload), indent=2, sort_keys=True) + "\n")
    else:
        render()


def console():
    from rich.console import Console

    return Console(highlight=False)
