"""`steward export`: a registered classifier version written out in another format (`--format mlflow`: an MLflow
pyfunc model, `steward/mlflow_model.py`).

Nothing half-written is left behind: the model is written into a temporary folder beside `--out`, which is renamed
to `--out` once whole (and removed again if the audit event cannot be appended), so a failure leaves no `--out`.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from steward.commands.common import console, emit, open_registry

if TYPE_CHECKING:
    from governance.events import ModelExported
    from governance.records import ModelVersionDetail
    from governance.registry import Registry

Writer = Callable[["ModelVersionDetail", Path], dict[str, str]]  # (version, empty folder) -> {relpath: sha256}
FORMAT_NAMES = {"mlflow": "an MLflow pyfunc model"}


def export(args: argparse.Namespace) -> int:
    from core.errors import BadInputError
    from core.refs import ModelRef
    from governance.events import ModelExported
    from steward.loading import is_language_model, resolve_version

    ref = ModelRef.parse(args.ref)
    out = Path(args.out).resolve()
    _require_empty(out)
    with open_registry(args) as registry:
        detail = resolve_version(registry, ref)
        if is_language_model(detail):
            raise BadInputError(f"{ref} is a causal language model; steward export supports text classifiers only "
                                "(not yet causal-lm)")
        files = _write_whole(out, detail, _writer(args.format))
        event = ModelExported(model=detail.version.model_name, version=detail.version.version, alias=ref.alias,
                              format=args.format, path=str(out), files=files)
        _audit(registry, event, out)
    summary = {"model": event.model, "version": event.version, "format": event.format, "path": event.path,
               "files": event.files}
    emit(args, summary, lambda: console().print(
        f"exported {event.model} v{event.version} as {FORMAT_NAMES[event.format]} → {out} "
        f"({len(files)} files, sha256s checked)"))
    return 0


def _audit(registry: Registry, event: ModelExported, out: Path) -> None:
    """Append the `model_exported` event; if that fails, the export goes too: none the audit trail does not know."""
    try:
        registry.audit.append(f"{event.model}:{event.version}", event)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise


def _require_empty(out: Path) -> None:
    """Refuse an `--out` that exists and is anything but an empty folder."""
    from core.errors import BadInputError

    if out.is_dir() and not any(out.iterdir()):
        return
    if out.exists() or out.is_symlink():
        raise BadInputError(f"{out}: already exists and is not an empty folder (give a new --out)")


def _writer(form: str) -> Writer:
    """The function that writes format `form`; MLflow's needs the `[mlflow]` extra."""
    from core.errors import BadInputError

    if form not in FORMAT_NAMES:
        raise BadInputError(f"unknown export format '{form}' (use {', '.join(FORMAT_NAMES)})")
    try:
        module = importlib.import_module("steward.mlflow_model")
    except ImportError as exc:
        if not (exc.name or "").startswith("mlflow"):
            raise
        raise BadInputError("--format mlflow needs MLflow: pip install 'steward[mlflow]'") from None
    return module.save


def _write_whole(out: Path, detail: ModelVersionDetail, write: Writer) -> dict[str, str]:
    """`write` into a temporary sibling of `out`, renamed to `out` once it succeeded; removed if it did not."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
    staging.mkdir()
    try:
        files = write(detail, staging)
        _require_empty(out)  # nothing appeared there meanwhile
        if out.is_dir():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return files
