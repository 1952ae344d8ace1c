"""`load_model`: a registered version, checked against its recorded sha256s, as a predictor.

    from steward import load_model
    model = load_model("support-tickets@champion", registry="sqlite:///.steward/registry.db")
    [prediction] = model.predict(["the printer on floor 3 jams"])
    prediction.label, prediction.score, prediction.probabilities, model.version

This module imports only the standard library at load time (the command line imports `steward`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from steward.errors import BadInputError

if TYPE_CHECKING:
    from governance.records import CompressedFormRecord, ModelVersionDetail
    from governance.registry import Registry
    from tasks.predict import Predictor

_REF = re.compile(r"^(?P<name>[^@:\s]+)(?:@(?P<alias>[A-Za-z0-9_.-]+)|:(?P<version>\d+))$")
DEFAULT_MAX_SEQ_LENGTH = 128  # FinetuningConfig's default, for a run whose config does not say


@dataclass(frozen=True)
class ModelRef:
    """`NAME@ALIAS` or `NAME:VERSION`."""

    name: str
    alias: str | None
    version: int | None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        match = _REF.match(text.strip())
        if match is None:
            raise BadInputError(f"'{text}' is not NAME@ALIAS or NAME:VERSION (for example support-tickets@champion)")
        version = match.group("version")
        return cls(match.group("name"), match.group("alias"), int(version) if version else None)

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}:{self.version}"


def resolve_version(registry: Registry, ref: ModelRef) -> ModelVersionDetail:
    """The version `ref` names now (an alias is looked up at this moment)."""
    if ref.alias is None:
        return registry.get_version(ref.name, ref.version or 0)
    record = registry.alias_version(ref.name, ref.alias)
    if record is None:
        raise BadInputError(f"{ref}: model '{ref.name}' has no alias '{ref.alias}'")
    return registry.get_version(ref.name, record.version)


def served_form(detail: ModelVersionDetail, requested: str | None) -> CompressedFormRecord | None:
    """The compressed form to serve, None for the fp32 model: `requested` when given (it must have passed the
    compression gate), else the fastest form that passed."""
    from steward.scores import FORMS, FP32

    if requested == FP32:
        return None
    if requested is None:
        return detail.fastest_passed_form()
    if requested not in FORMS:
        raise BadInputError(f"unknown form '{requested}' (use {', '.join(FORMS)})")
    record = detail.form(requested)
    subject = f"{detail.version.model_name}:{detail.version.version}"
    if record is None:
        raise BadInputError(f"{subject} has no {requested} form (compression did not make one)")
    if not record.passed:
        raise BadInputError(f"{subject}: its {requested} form was {record.status} by the compression gate "
                            f"({'; '.join(record.reasons)})")
    return record


def predictor_for(detail: ModelVersionDetail, alias: str | None, form: str | None = None) -> Predictor:
    """The version in the form `served_form` picks, its files verified against the registry's sha256s, then
    loaded (refused on a mismatch)."""
    from steward.scores import FP32
    from tasks.modeling import verify_files
    from tasks.predict import ModelIdentity, load_predictor

    chosen = served_form(detail, form)
    model_dir = Path(chosen.artifact_path if chosen and chosen.artifact_path else detail.version.artifact_path)
    hashes = chosen.files if chosen else detail.recorded_hashes
    verify_files(model_dir, hashes)
    identity = ModelIdentity(detail.version.model_name, detail.version.version, alias, str(model_dir), hashes,
                             dict(chosen.metrics if chosen else detail.metrics), chosen.form if chosen else FP32)
    max_seq_length = detail.run.config.get("finetuning", {}).get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH)
    return load_predictor(model_dir, int(max_seq_length), identity)


def load_ref(ref: ModelRef, registry_url: str, form: str | None = None) -> Predictor:
    """The version `ref` names now in the registry at `registry_url`, verified and loaded (`form`: see
    `served_form`)."""
    from governance.registry import Registry

    with Registry.open(registry_url) as registry:
        detail = resolve_version(registry, ref)
    return predictor_for(detail, ref.alias, form)


def load_model(ref: str, registry: str | None = None, form: str | None = None) -> Predictor:
    """The version `ref` names ("NAME@ALIAS" or "NAME:VERSION") in the registry at URL `registry`
    (default: STEWARD_REGISTRY_URL, else `sqlite:///./.steward/registry.db`), ready to `predict(texts)`; in
    the fastest form that passed the compression gate, or `form` ("fp32", "int8", "student")."""
    from steward.config import resolve_registry_url

    return load_ref(ModelRef.parse(ref), resolve_registry_url(registry, None), form)
