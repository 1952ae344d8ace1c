"""Scoring texts with a saved classifier: what `load_model`, `steward predict` and the model server call; and
`steward predict`'s batch work for a causal language model (per-text perplexity, or greedy completions).

A `Predictor` holds one loaded model version. `predict` tokenises without padding, sorts the texts by length
and runs them in batches padded to their own longest text (dynamic padding), then returns per text the
calibrated probabilities (softmax of the logits over the temperature fitted on the validation split), the
top label and its probability. Inference holds no state between calls, and a lock serialises forward passes,
so one predictor is safe to share between threads.

`explain` gives token attributions (`tasks.explain`) from the fp32 PyTorch classifier: the served model itself,
or, for a predictor serving a compressed ONNX form, the fp32 weights of the same version, loaded (files verified)
on the first call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from core.errors import BadInputError
from core.vocabulary import FP32
from tasks.modeling import pick_device, quiet_transformers

if TYPE_CHECKING:
    from core.hashing import ModelFiles
    from tasks.classifier import Scorer, TorchScorer
    from tasks.data import TextTable
    from tasks.explain import Explanation
    from tasks.language_model import Completion, Generator

PREDICT_BATCH_SIZE = 32
EXPLAIN_STEPS = 50  # integrated-gradients steps (tasks.explain.EXPLAIN_STEPS; not imported: it imports torch)


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float  # the calibrated probability of `label`
    probabilities: dict[str, float]  # every class, calibrated


@dataclass(frozen=True)
class ModelIdentity:
    """Which registered version a predictor serves, and the checksums its files were verified against."""

    name: str
    version: int
    alias: str | None  # the alias it was loaded through, if any
    artifact_path: str
    sha256: dict[str, str]  # relative path -> sha256, as the registry recorded them
    metrics: dict[str, float]  # the form's test metrics
    form: str = FP32  # which form answers: the fine-tuned PyTorch model, or a compressed form of it


class Predictor:
    """One loaded model version in one form; `predict(texts)` and `explain(texts)` are thread-safe. `fp32`: the
    version's fp32 files, which a compressed form explains with."""

    def __init__(self, scorer: Scorer, identity: ModelIdentity, fp32: ModelFiles | None = None) -> None:
        self.scorer = scorer
        self.identity = identity
        self.fp32 = fp32
        self._lock = threading.Lock()  # the served model's forward passes
        self._explainer: TorchScorer | None = None  # a compressed form's fp32 model, once loaded
        self._explainer_lock = threading.Lock()

    @property
    def labels(self) -> list[str]:
        return list(self.scorer.labels)

    @property
    def version(self) -> int:
        return self.identity.version

    def predict(self, texts: list[str], batch_size: int = PREDICT_BATCH_SIZE) -> list[Prediction]:
        """Calibrated predictions for `texts`, in order."""
        from tasks.classifier import calibrated

        _require_texts(texts, "predict")
        if not texts:
            return []
        with self._lock:
            logits = self.scorer.logits(texts, batch_size)
        probabilities = calibrated(logits, self.scorer.temperature).tolist()
        labels = self.scorer.labels
        return [_prediction(labels, row) for row in probabilities]

    def explain(self, texts: list[str], steps: int = EXPLAIN_STEPS) -> list[Explanation]:
        """Integrated-gradients token attributions of `texts` toward their predicted classes, in order, by the
        fp32 PyTorch classifier (see `tasks.explain`). A compressed form (int8, or a distilled student) explains
        with its version's fp32 weights, so its label may differ from `predict`'s where the two disagree. When
        the served model itself explains, its lock is held throughout: captum hooks its embedding layer."""
        from tasks.classifier import TorchScorer
        from tasks.explain import explain

        _require_texts(texts, "explain")
        if not texts:
            return []
        if isinstance(self.scorer, TorchScorer):
            with self._lock:
                return explain(self.scorer.classifier, texts, self.scorer.device, steps=steps)
        with self._explainer_lock:
            explainer = self._fp32_explainer()
            return explain(explainer.classifier, texts, explainer.device, steps=steps)

    def _fp32_explainer(self) -> TorchScorer:
        """The version's fp32 classifier, loaded on first use once its files match the registry's sha256s."""
        from tasks.classifier import TorchScorer, load_saved_classifier

        if self._explainer is None:
            if self.fp32 is None:
                raise BadInputError(
                    f"{self.identity.name}:{self.identity.version} is loaded in its {self.identity.form} form, which "
                    "cannot be explained (an ONNX graph has no gradients), and its fp32 weights were not given: "
                    "load it with form='fp32' (--format fp32)")
            device = pick_device()
            self._explainer = TorchScorer(load_saved_classifier(self.fp32.verified(), device), device)
        return self._explainer


def _require_texts(texts: list[str], method: str) -> None:
    if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
        raise BadInputError(f"{method}() takes a list of strings")


def _prediction(labels: list[str], row: list[float]) -> Prediction:
    best = max(range(len(row)), key=row.__getitem__)
    return Prediction(labels[best], row[best], dict(zip(labels, row, strict=True)))


def load_predictor(model: ModelFiles, identity: ModelIdentity, fp32: ModelFiles | None = None) -> Predictor:
    """A predictor on the form `identity.form` saved in `model`'s folder, once its files are verified: the
    PyTorch classifier for `fp32`, an ONNX Runtime session otherwise (which explains with `fp32`'s files)."""
    from tasks.classifier import TorchScorer, load_saved_classifier
    from tasks.compress import load_form

    quiet_transformers()
    folder = model.verified()
    if identity.form != FP32:
        return Predictor(load_form(folder), identity, fp32)
    device = pick_device()
    return Predictor(TorchScorer(load_saved_classifier(folder, device), device), identity)


PROGRESS_CHUNK = 256  # texts per progress-bar step
GENERATE_CHUNK = 16  # prompts per generate call: each keeps a cache that grows with its completion
OUTPUT_FORMATS = (".csv", ".parquet", ".jsonl")
Row = TypeVar("Row")


def texts_to_score(table: TextTable) -> list[str]:
    """Every text of `table`; a row without text is refused by its data-row number (1 is the first record
    after the header)."""
    texts = [text for text in table.texts if text is not None and text.strip()]
    if len(texts) < table.rows:
        missing = next(index for index, text in enumerate(table.texts) if text is None or not text.strip())
        raise BadInputError(f"{table.source}: data row {missing + 1} has no text to score")
    return texts


def _in_chunks(texts: list[str], step: Callable[[list[str]], list[Row]], size: int, desc: str,
               show_progress: bool) -> list[Row]:
    """`step` over `texts` in chunks of `size`, with a progress bar on stderr."""
    from tqdm.auto import tqdm

    rows: list[Row] = []
    with tqdm(total=len(texts), desc=desc, unit="text", disable=not show_progress, leave=False) as bar:
        for start in range(0, len(texts), size):
            chunk = texts[start : start + size]
            rows += step(chunk)
            bar.update(len(chunk))
    return rows


def predict_all(predictor: Predictor, texts: list[str], show_progress: bool = True) -> list[Prediction]:
    """Predictions for `texts`, in chunks, with a progress bar on stderr."""
    return _in_chunks(texts, predictor.predict, PROGRESS_CHUNK, "scoring", show_progress)


def perplexity_all(generator: Generator, texts: list[str], show_progress: bool = True) -> list[float]:
    """Each text's perplexity under a causal language model (NaN for a text with nothing to predict)."""
    return _in_chunks(texts, generator.score, PROGRESS_CHUNK, "scoring", show_progress)


def complete_all(generator: Generator, texts: list[str], max_new_tokens: int,
                 show_progress: bool = True) -> list[Completion]:
    """Each text's greedy completion (deterministic: the same file gives the same completions)."""
    return _in_chunks(texts, lambda chunk: generator.generate(chunk, max_new_tokens=max_new_tokens), GENERATE_CHUNK,
                      "generating", show_progress)


def write_predictions(path: Path, texts: list[str], predictions: list[Prediction], identity: ModelIdentity,
                      labels: list[str]) -> Path:
    """One row per text: text, label, score, model, version, form and `probability_<class>` per class (see
    `write_rows`)."""
    return write_rows(path, texts, {"label": [p.label for p in predictions], "score": [p.score for p in predictions]},
                      identity, {f"probability_{label}": [p.probabilities[label] for p in predictions]
                                 for label in labels})


def write_rows(path: Path, texts: list[str], answers: dict[str, list[Any]], identity: ModelIdentity,
               details: dict[str, list[Any]] | None = None) -> Path:
    """One row per text: text, the `answers` columns, model, version, form, then the `details` columns; as CSV,
    Parquet or JSON lines by the suffix; written to a temporary name first, so the file is whole or absent."""
    import pandas as pd

    path = Path(path)
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise BadInputError(f"{path}: unknown output format '{path.suffix}' (use {', '.join(OUTPUT_FORMATS)})")
    frame = pd.DataFrame({
        "text": texts,
        **answers,
        "model": identity.name,
        "version": identity.version,
        "form": identity.form,
        **(details or {}),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(partial, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(partial, index=False)
    else:
        frame.to_json(partial, orient="records", lines=True, force_ascii=False)
    partial.replace(path)
    return path
