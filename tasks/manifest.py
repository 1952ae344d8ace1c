"""`steward_model.json`: what a saved model is and everything needed to load and use it.

Every loader reads it, so nothing about a trained model is asked of a config again. A classifier records its
labels, pooling and calibration temperature; a causal language model records its base (`base_model`, as the
config named it) and whether the folder holds only a LoRA adapter over that base.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

from core.errors import BadInputError
from core.vocabulary import FormName, TaskName

MANIFEST_FILE = "steward_model.json"

Pooling = Literal["mean", "cls"]


@dataclass(frozen=True)
class ModelManifest:
    task: TaskName
    form: FormName  # fp32 (the PyTorch model) or a compressed form (an ONNX graph)
    max_length: int  # tokens read per text (a language model: per block)
    base_fingerprint: str  # the files of the checkpoint it was trained from (`core.hashing.ModelFiles`)
    labels: list[str] = field(default_factory=list)  # classifier: class ids are positions in this list
    pooling: Pooling = "mean"  # classifier
    temperature: float = 1.0  # classifier: probabilities are softmax(logits / temperature)
    base_model: str | None = None  # language model: the base as the config named it (`smollm2`, a folder)
    adapter: bool = False  # language model: the folder holds a LoRA adapter, not the weights

    def write(self, folder: Path) -> None:
        (Path(folder) / MANIFEST_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, folder: Path) -> ModelManifest:
        path = Path(folder) / MANIFEST_FILE
        if not path.is_file():
            raise BadInputError(f"{folder}: not a trained Steward model (no {MANIFEST_FILE})")
        try:
            data = json.loads(path.read_text())
            known = {f.name for f in fields(cls)}
            return cls(**{key: value for key, value in data.items() if key in known})
        except (ValueError, TypeError) as exc:
            raise BadInputError(f"{path}: not a readable model manifest ({exc})") from None
