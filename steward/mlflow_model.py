"""A registered classifier as an MLflow pyfunc model (`steward export --format mlflow`, extra `[mlflow]`).

The exported folder holds MLflow's `MLmodel` (signature: a `text` string column in; `label`, `score` and one
`probability_<class>` double column per class out, as `steward predict` writes them), the version's fp32 files
under `artifacts/` (copied, then checked against the registry's sha256s) and `steward_classifier.py`, an MLflow
"model from code" (no pickle: Steward loads none) that sets a `StewardClassifierModel`, whose `load_context`
builds Steward's own predictor on those files, checked again against the same sha256s (kept in `model_config`).

Requirements: the model needs Steward's code at load time, and it is not shipped with `code_paths`: the code file
imports `steward.mlflow_model`, which loads through `tasks` and `core` on Steward's pinned torch/transformers;
copying those packages into the model would shadow an installed Steward of another version, and still need every
dependency installed. So the model depends on the `steward` distribution being installed, and `requirements.txt`
pins it (`steward==<version>`) beside MLflow and the packages inference needs, at the versions installed here.
Steward is not on PyPI (an unrelated `steward` 0.0.4 is, which the pin cannot resolve to): an environment that
serves the model installs Steward from its source first, then e.g. `mlflow models serve -m DIR --env-manager
local`.

MLflow is imported when this module is: only `steward export` and the exported model's code file import it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import pandas as pd  # at run time: MLflow reads `predict`'s type hints

if TYPE_CHECKING:
    from mlflow.models import ModelSignature

    from governance.records import ModelVersionDetail
    from tasks.predict import Prediction, Predictor

ARTIFACT = "model"  # the pyfunc artifact holding the version's files
TEXT_COLUMN = "text"
# What loading and scoring import, pinned at the installed versions (with Steward itself and MLflow).
PINNED_PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "huggingface_hub", "numpy", "pandas")
MLFLOW_DISTRIBUTIONS = ("mlflow", "mlflow-skinny")  # whichever are installed are pinned
INPUT_EXAMPLE = ["the printer on floor 3 jams", "I cannot log in to my account"]
CODE_FILE = "steward_classifier.py"
MODEL_CODE = '''"""An MLflow model from code (`steward export`): a Steward classifier on the installed Steward."""

import mlflow

from steward.mlflow_model import StewardClassifierModel

mlflow.models.set_model(StewardClassifierModel())
'''


class StewardClassifierModel(mlflow.pyfunc.PythonModel):
    """Steward's fp32 predictor on the exported files; `predict` answers like `steward predict`."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Steward's predictor on the artifact folder, once its files match the sha256s recorded at export."""
        from core.hashing import ModelFiles
        from core.vocabulary import FP32
        from tasks.predict import ModelIdentity, load_predictor

        config = context.model_config
        files = ModelFiles(Path(context.artifacts[ARTIFACT]), dict(config["sha256"]))
        identity = ModelIdentity(config["model"], int(config["version"]), None, str(files.folder), files.sha256, {},
                                 FP32)
        self._predictor: Predictor = load_predictor(files, identity)

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per text of the `text` column: label, score and `probability_<class>` per class."""
        from core.errors import BadInputError

        if TEXT_COLUMN not in model_input.columns:
            raise BadInputError(f"the input has no '{TEXT_COLUMN}' column (columns: {list(model_input.columns)})")
        texts = [str(text) for text in model_input[TEXT_COLUMN].tolist()]
        return prediction_frame(self._predictor.predict(texts), self._predictor.labels)


def prediction_frame(predictions: list[Prediction], labels: list[str]) -> pd.DataFrame:
    """`steward predict`'s answer columns (`tasks.predict.write_predictions`): label, score, probability_<class>."""
    columns: dict[str, list[Any]] = {"label": [p.label for p in predictions], "score": [p.score for p in predictions]}
    for label in labels:
        columns[f"probability_{label}"] = [p.probabilities[label] for p in predictions]
    return pd.DataFrame(columns, columns=list(columns))


def signature(labels: list[str]) -> ModelSignature:
    """A `text` string in; label (string), score and one probability per class (double) out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    outputs = [ColSpec("string", "label"), ColSpec("double", "score"),
               *(ColSpec("double", f"probability_{label}") for label in labels)]
    return ModelSignature(inputs=Schema([ColSpec("string", TEXT_COLUMN)]), outputs=Schema(outputs))


def pip_requirements() -> list[str]:
    """Steward, MLflow and `PINNED_PACKAGES`, each `==` its installed version (a package not installed is left out)."""
    names = ("steward", *MLFLOW_DISTRIBUTIONS, *PINNED_PACKAGES)
    return [f"{name}=={_installed(name)}" for name in names if _installed(name)]


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def save(detail: ModelVersionDetail, path: Path) -> dict[str, str]:
    """Write `detail`'s fp32 model as a pyfunc model into the empty folder `path`; returns each exported model file
    (relative to `path`) with its sha256, the copies checked against the registry's (a mismatch raises, before or
    after the copy)."""
    from core.hashing import ModelFiles
    from tasks.manifest import ModelManifest

    source = detail.model_files()
    labels = ModelManifest.read(source.verified()).labels
    config = {"model": detail.version.model_name, "version": detail.version.version, "sha256": source.sha256}
    with tempfile.TemporaryDirectory() as scratch, _quiet_mlflow():
        code = Path(scratch) / CODE_FILE
        code.write_text(MODEL_CODE, encoding="utf-8")
        mlflow.pyfunc.save_model(
            path=str(path), python_model=str(code), artifacts={ARTIFACT: str(source.folder)},
            signature=signature(labels), input_example=pd.DataFrame({TEXT_COLUMN: INPUT_EXAMPLE}),
            pip_requirements=pip_requirements(), model_config=config,
            metadata={"steward_model": config["model"], "steward_version": config["version"]},
        )
    copied = path / _artifact_path(path)
    ModelFiles(copied, source.sha256).verified()
    prefix = copied.relative_to(path).as_posix()
    return {f"{prefix}/{name}": digest for name, digest in sorted(source.sha256.items())}


def _artifact_path(path: Path) -> str:
    """Where MLflow copied the model folder, relative to the pyfunc model's root (as its MLmodel records it)."""
    from mlflow.models import Model

    return Model.load(str(path)).flavors["python_function"]["artifacts"][ARTIFACT]["path"]


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow's info lines, warnings and progress bars off while it saves (the command prints its own summary)."""
    logger = logging.getLogger("mlflow")
    level, bar = logger.level, os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    logger.setLevel(logging.ERROR)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
        if bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bar
