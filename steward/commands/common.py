"""What every command shares: the registry location, NAME:VERSION parsing and output."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from steward.errors import BadInputError, ConfigError, StewardError, one_line

if TYPE_CHECKING:
    from governance.registry import Registry
    from steward.config import StewardConfig


def config_from_args(args: argparse.Namespace) -> StewardConfig | None:
    from steward.config import load_config

    path = getattr(args, "config", None)
    return load_config(path) if path else None


@contextmanager
def open_registry(args: argparse.Namespace, config: StewardConfig | None = None) -> Iterator[Registry]:
    from governance.registry import Registry
    from steward.config import resolve_registry_url

    if config is None:
        config = config_from_args(args)
    registry = Registry.open(resolve_registry_url(args.registry, config))
    try:
        yield registry
    finally:
        registry.close()


def rejection_registry_url(override: str | None, error: ConfigError) -> str | None:
    """Where a rejected config is audited: --registry, else STEWARD_REGISTRY_URL, else the registry.url
    still readable in the config, else the default SQLite file beside the config file (None when the
    config's folder does not exist: there is nowhere sensible to write)."""
    from steward.config import REGISTRY_URL_ENV, default_registry_url

    url = override or os.environ.get(REGISTRY_URL_ENV) or error.registry_url
    if url:
        return url
    folder = error.path.resolve().parent if error.path is not None else None
    return default_registry_url(folder) if folder is not None and folder.is_dir() else None


def record_rejected_config(args: argparse.Namespace, error: ConfigError) -> None:
    """Append an `input_rejected` audit event with the one-line error; silent when the registry
    itself cannot be reached (the error the user sees already says what was wrong)."""
    from governance.events import InputRejected
    from governance.registry import Registry

    url = rejection_registry_url(getattr(args, "registry", None), error)
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


def parse_ref(ref: str) -> tuple[str, int]:
    """'NAME:VERSION' -> (name, version); anything else is bad usage."""
    name, sep, version = ref.rpartition(":")
    if not sep or not name or not version.isdigit():
        raise BadInputError(f"'{ref}' is not NAME:VERSION (for example support-tickets:3)")
    return name, int(version)


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
