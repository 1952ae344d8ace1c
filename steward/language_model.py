"""A registered causal-LM version, loaded: `tasks.language_model.Generator` plus which version it is.

`load_model` returns this for a `causal-lm` version, so a caller gets a Generator (`generate`, `stream`,
`chat_prompt`, `score`) that also names itself as a classifier's `Predictor` does (`identity`, `version`): what
the server's responses, metrics, swap audit events and prediction log need. Kept out of `steward.loading`, which
must import without torch.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import BadInputError
from core.vocabulary import FP32
from tasks.language_model import Generator, load_causal_lm
from tasks.predict import ModelIdentity

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from governance.records import ModelVersionDetail
    from tasks.manifest import ModelManifest
    from tasks.modeling import Device


class RegisteredGenerator(Generator):
    """A Generator for one registered version (`created_at`: when the version was registered)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, manifest: ModelManifest,
                 device: Device, identity: ModelIdentity, created_at: datetime) -> None:
        super().__init__(model, tokenizer, manifest, device, name=identity.name)
        self.identity = identity
        self.created_at = created_at

    @property
    def version(self) -> int:
        return self.identity.version


def generator_for(detail: ModelVersionDetail, alias: str | None, form: str | None = None) -> RegisteredGenerator:
    """The version's generator, loaded once every file in its folder matches the registry's sha256s (manifest,
    tokenizer, adapter or weights; an adapter's base is then checked against the fingerprint its manifest
    records). A language model is served as trained: fp32 is its only form."""
    from tasks.modeling import pick_device

    name, version = detail.version.model_name, detail.version.version
    if form not in (None, FP32):
        raise BadInputError(f"{name}:{version} is a causal language model, served only as {FP32} (not {form})")
    files = detail.model_files()
    identity = ModelIdentity(name, version, alias, str(files.folder), files.sha256, dict(detail.metrics), FP32)
    device = pick_device()
    model, tokenizer, manifest = load_causal_lm(Path(files.verified()), device)
    return RegisteredGenerator(model, tokenizer, manifest, device, identity, detail.version.created_at)
