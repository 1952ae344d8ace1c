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
    from governance.records import ModelVersionDetail
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


def predictor_for(detail: ModelVersionDetail, alias: str | None) -> Predictor:
    """The version's files verified against the registry's sha256s, then loaded (refused on a mismatch)."""
    from tasks.modeling import verify_files
    from tasks.predict import ModelIdentity, load_predictor

    model_dir = Path(detail.version.artifact_path)
    verify_files(model_dir, detail.recorded_hashes)
    identity = ModelIdentity(detail.version.model_name, detail.version.version, alias, str(model_dir),
                             detail.recorded_hashes, dict(detail.metrics))
    max_seq_length = detail.run.config.get("finetuning", {}).get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH)
    return load_predictor(model_dir, int(max_seq_length), identity)


def load_ref(ref: ModelRef, registry_url: str) -> Predictor:
    """The version `ref` names now in the registry at `registry_url`, verified and loaded."""
    from governance.registry import Registry

    with Registry.open(registry_url) as registry:
        detail = resolve_version(registry, ref)
    return predictor_for(detail, ref.alias)


def load_model(ref: str, registry: str | None = None) -> Predictor:
    """The version `ref` names ("NAME@ALIAS" or "NAME:VERSION") in the registry at URL `registry`
    (default: STEWARD_REGISTRY_URL, else `sqlite:///./.steward/registry.db`), ready to `predict(texts)`."""
    from steward.config import resolve_registry_url

    return load_ref(ModelRef.parse(ref), resolve_registry_url(registry, None))
