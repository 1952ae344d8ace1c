"""`load_model`: a registered version, checked against its recorded sha256s, ready to use.

    from steward import load_model
    model = load_model("support-tickets@champion", registry="sqlite:///.steward/registry.db")
    [prediction] = model.predict(["the printer on floor 3 jams"])
    prediction.label, prediction.score, prediction.probabilities, model.version

A classifier loads as a `Predictor`; a causal language model (its manifest's task is `causal-lm`) as a
`steward.language_model.RegisteredGenerator`, a `tasks.language_model.Generator` that knows its version:

    notes = load_model("notes@champion")
    [completion] = notes.generate(["the invoice"], max_new_tokens=20)
    completion.text, completion.finish_reason, notes.score(["the refund was late."]), notes.version

This module imports only the standard library and `core`'s plain modules at load time (the command line
imports `steward`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import BadInputError
from core.refs import ModelRef

if TYPE_CHECKING:
    from governance.records import CompressedFormRecord, ModelVersionDetail
    from governance.registry import Registry
    from steward.language_model import RegisteredGenerator
    from tasks.predict import Predictor

    LoadedModel = Predictor | RegisteredGenerator


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
    from core.vocabulary import FORMS, FP32

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
    """The version in the form `served_form` picks, loaded once its files match the registry's sha256s (a
    compressed form keeps the fp32 files' place and hashes, to explain with)."""
    from core.hashing import ModelFiles
    from core.vocabulary import FP32
    from tasks.predict import ModelIdentity, load_predictor

    chosen = served_form(detail, form)
    files = detail.model_files() if chosen is None else ModelFiles(Path(chosen.artifact_path or ""), chosen.files)
    identity = ModelIdentity(detail.version.model_name, detail.version.version, alias, str(files.folder),
                             files.sha256, dict(chosen.metrics if chosen else detail.metrics),
                             chosen.form if chosen else FP32)
    return load_predictor(files, identity, detail.model_files())


def is_language_model(detail: ModelVersionDetail) -> bool:
    """Whether the version's manifest says `causal-lm`. Read to pick a loader only: each loader verifies every file,
    the manifest included, before it loads anything, and an unreadable or missing manifest goes the classifier's
    way, so a classifier version fails exactly as it did before language models existed."""
    from core.vocabulary import CAUSAL_LM
    from tasks.manifest import ModelManifest

    try:
        return ModelManifest.read(Path(detail.version.artifact_path)).task == CAUSAL_LM
    except BadInputError:
        return False


def load_version(detail: ModelVersionDetail, alias: str | None, form: str | None = None) -> LoadedModel:
    """The version loaded as its task wants: a `RegisteredGenerator` for a causal LM, else `predictor_for`'s
    predictor."""
    if is_language_model(detail):
        from steward.language_model import generator_for

        return generator_for(detail, alias, form)
    return predictor_for(detail, alias, form)


def load_ref(ref: ModelRef, registry_url: str, form: str | None = None) -> LoadedModel:
    """The version `ref` names now in the registry at `registry_url`, verified and loaded (`form`: see
    `served_form`)."""
    from governance.registry import Registry

    with Registry.open(registry_url) as registry:
        detail = resolve_version(registry, ref)
    return load_version(detail, ref.alias, form)


def load_model(ref: str, registry: str | None = None, form: str | None = None) -> LoadedModel:
    """The version `ref` names ("NAME@ALIAS" or "NAME:VERSION") in the registry at URL `registry`
    (default: STEWARD_REGISTRY_URL, else `sqlite:///./.steward/registry.db`): a classifier ready to
    `predict(texts)`, in the fastest form that passed the compression gate, or `form` ("fp32", "int8",
    "student"); a causal language model ready to `generate(prompts)` (fp32, its only form)."""
    from core.config import resolve_registry_url

    return load_ref(ModelRef.parse(ref), registry or resolve_registry_url(None), form)
