"""Compression: a fine-tuned classifier exported to ONNX, quantized to int8, re-evaluated, and judged.

The recipe, per form (`compression.methods`):
1. Export the very module Steward evaluates (encoder, the base's pooling, the head; logits out) with
   `torch.onnx.export`, batch and sequence length dynamic.
2. Dynamic int8 quantization with ONNX Runtime (`onnxruntime.quantization.quantize_dynamic`): weights of the
   matrix multiplications stored as int8, activations quantized on the fly, nothing to calibrate.
3. The same evaluation as the fp32 model (`tasks.evaluate.evaluate_scorer`) on the same test set, plus its
   agreement with the fp32 model's predictions and the per-class F1 deltas.
4. The gate: the form passes when its primary metric drops by at most `max_metric_drop` and it agrees with
   the fp32 model on at least `min_agreement` of the test rows. Dynamic int8 has turned other models "next
   to random" (onnxruntime#9599), so a form is never served on trust.

Why `onnxruntime.quantization` directly and not `optimum`: Steward's classifier is its own module (mean or
CLS pooling read from the base, a linear head, a temperature), which optimum's exporters, built around
`AutoModelForSequenceClassification`, do not export as it is; optimum's dynamic quantization calls this same
ONNX Runtime function underneath.

A form folder (`<version folder>-int8`) is self-contained: `model.onnx`, the tokenizer and the manifest
(`steward_model.json`, with the form's name), so serving it loads no PyTorch weights.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import BadInputError, exception_line
from core.hashing import sha256_files
from core.vocabulary import CompressionStatusName, FormName
from tasks.classifier import clip_text, form_manifest, load_saved_classifier
from tasks.evaluate import EvaluationResult, evaluate_scorer
from tasks.manifest import ModelManifest
from tasks.modeling import cpu_device, load_tokenizer, quiet_transformers

if TYPE_CHECKING:
    import onnxruntime
    import torch
    from transformers import PreTrainedTokenizerBase

    from core.config import CompressionConfig, DistillConfig
    from tasks.classifier import Classifier
    from tasks.data import Splits

FORM_MODEL_FILE = "model.onnx"
ONNX_OPSET = 17
ONNX_INPUTS = ("input_ids", "attention_mask")
METHOD_FORMS: dict[str, FormName] = {"onnx-int8": "int8"}  # compression.methods → the form it produces
STUDENT: FormName = "student"  # the form compression.distill produces
_UNSUPPORTED_OPERATOR = re.compile(r"operator '?([\w:.]+)'?", re.IGNORECASE)


def form_dir(model_dir: Path, form: str) -> Path:
    """Where a version's form lives: beside the version's folder, which its recorded sha256s close."""
    return Path(f"{Path(model_dir)}-{form}")


class OnnxScorer:
    """A form in an ONNX Runtime session; texts are tokenised, sorted by length and padded per batch."""

    def __init__(self, session: onnxruntime.InferenceSession, tokenizer: PreTrainedTokenizerBase,
                 labels: list[str], temperature: float, max_length: int, form: str) -> None:
        self.session, self.tokenizer = session, tokenizer
        self.labels, self.temperature, self.max_length, self.form = labels, temperature, max_length, form

    def logits(self, texts: list[str], batch_size: int) -> torch.Tensor:
        import numpy as np
        import torch

        clipped = [clip_text(text, self.max_length) for text in texts]
        encoded = self.tokenizer(clipped, truncation=True, max_length=self.max_length)["input_ids"]
        order = sorted(range(len(texts)), key=lambda index: len(encoded[index]))
        logits = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="np")
            feed = {name: batch[name].astype(np.int64) for name in ONNX_INPUTS}
            logits[rows] = self.session.run(None, feed)[0]
        return torch.from_numpy(logits)


def onnx_session(model_file: Path) -> onnxruntime.InferenceSession:
    """A CPU session using as many threads as PyTorch does (OMP_NUM_THREADS and torch settings apply to both)."""
    import onnxruntime
    import torch

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])


def load_form(folder: Path) -> OnnxScorer:
    """The form saved in `folder` (its files already verified by the caller), as its manifest describes it."""
    manifest = ModelManifest.read(folder)
    if not (Path(folder) / FORM_MODEL_FILE).is_file():
        raise BadInputError(f"{folder}: not a Steward {manifest.form} form (no {FORM_MODEL_FILE})")
    return OnnxScorer(onnx_session(Path(folder) / FORM_MODEL_FILE), load_tokenizer(folder), manifest.labels,
                      manifest.temperature, manifest.max_length, manifest.form)


def export_onnx(classifier: Classifier, model_id: str, output_file: Path) -> None:
    """The classifier's logits as an ONNX graph; an architecture that does not export is bad input naming
    the model and the operator."""
    import torch

    sample = classifier.tokenizer(["an example text", "a second, somewhat longer example text"],
                                  padding=True, return_tensors="pt")
    inputs = tuple(sample[name] for name in ONNX_INPUTS)
    dynamic = {"batch": 0, "sequence": 1}
    axes = {name: {index: axis for axis, index in dynamic.items()} for name in ONNX_INPUTS}
    model = classifier.model.cpu().eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python control flow it has fixed
            torch.onnx.export(
                model, inputs, str(output_file), input_names=list(ONNX_INPUTS), output_names=["logits"],
                dynamic_axes={**axes, "logits": {0: "batch"}}, opset_version=ONNX_OPSET, dynamo=False,
            )
    except Exception as exc:
        found = _UNSUPPORTED_OPERATOR.search(str(exc))
        operator = f"operator {found.group(1)}" if found else "an operator"
        raise BadInputError(f"{model_id}: cannot be exported to ONNX ({operator}): {exception_line(exc)}") from exc


def quantize_int8(fp32_file: Path, int8_file: Path) -> None:
    """Dynamic int8 quantization: int8 weights, one scale per output channel (it agrees with fp32 more often than
    one scale per tensor, at the same speed: bench/RESULTS.md), activations quantized per batch at run time."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    def not_the_preprocessing_hint(record: logging.LogRecord) -> bool:  # static quantization's advice, not ours
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(not_the_preprocessing_hint)
    try:
        quantize_dynamic(str(fp32_file), str(int8_file), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.removeFilter(not_the_preprocessing_hint)


def write_int8_form(model_dir: Path, model_id: str, target: Path, form: FormName) -> None:
    """Export, quantize, and save the self-contained form folder (written whole, then moved into place)."""
    classifier = load_saved_classifier(Path(model_dir), cpu_device())
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="steward-onnx-") as scratch:
        fp32_file = Path(scratch) / "fp32.onnx"
        export_onnx(classifier, model_id, fp32_file)
        quantize_int8(fp32_file, partial / FORM_MODEL_FILE)
    classifier.tokenizer.save_pretrained(partial)
    form_manifest(classifier, form).write(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


@dataclass(frozen=True)
class FormResult:
    """One compressed form, evaluated and judged: what the registry records."""

    form: str
    method: str
    status: CompressionStatusName
    reasons: list[str]
    folder: Path | None = None
    files: dict[str, str] = field(default_factory=dict)  # relative path → sha256
    size_bytes: int | None = None
    evaluation: EvaluationResult | None = None
    agreement: float | None = None  # share of test rows predicted as the fp32 model predicts them
    metric_drop: float | None = None  # fp32's primary metric minus the form's
    per_class_f1_delta: dict[str, float] = field(default_factory=dict)  # the form's F1 minus fp32's, per class

    def metrics(self) -> dict[str, float]:
        """The form's test metrics, with its agreement and metric drop."""
        extra = {"agreement": self.agreement, "metric_drop": self.metric_drop}
        headline = self.evaluation.headline() if self.evaluation else {}
        return {**headline, **{name: value for name, value in extra.items() if value is not None}}


def judge(candidate: EvaluationResult, reference: EvaluationResult, primary_metric: str,
          config: CompressionConfig) -> tuple[CompressionStatusName, list[str], float, float]:
    """The compression gate: (status, reasons, agreement, metric drop)."""
    agreement = sum(a == b for a, b in zip(candidate.predictions, reference.predictions, strict=True))
    agreement /= max(len(reference.predictions), 1)
    drop = getattr(reference, primary_metric) - getattr(candidate, primary_metric)
    drop_ok, agreement_ok = drop <= config.max_metric_drop + 1e-12, agreement >= config.min_agreement
    reasons = [
        f"{primary_metric} {getattr(candidate, primary_metric):.4f} vs fp32 {getattr(reference, primary_metric):.4f}: "
        f"drop {drop:.4f} {'≤' if drop_ok else '>'} max_metric_drop {config.max_metric_drop}",
        f"agreement with fp32 {agreement:.4f} {'≥' if agreement_ok else '<'} min_agreement {config.min_agreement}",
    ]
    return ("passed" if drop_ok and agreement_ok else "refused"), reasons, agreement, drop


def per_class_f1_delta(candidate: EvaluationResult, reference: EvaluationResult) -> dict[str, float]:
    reference_f1 = {score.label: score.f1 for score in reference.per_class}
    return {score.label: score.f1 - reference_f1[score.label] for score in candidate.per_class}


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


@dataclass(frozen=True)
class CompressionInputs:
    """The registered fp32 model, its evaluation, and the data its forms are made and judged with."""

    model_dir: Path
    model_id: str  # the configured base model, for error messages
    reference: EvaluationResult  # the fp32 model on the test split
    splits: Splits
    primary_metric: str
    seed: int


def make_int8(inputs: CompressionInputs, target: Path) -> None:
    write_int8_form(inputs.model_dir, inputs.model_id, target, METHOD_FORMS["onnx-int8"])


def make_student(inputs: CompressionInputs, target: Path, params: DistillConfig) -> None:
    """Distil a student (`tasks.distill`), then quantize it like the teacher."""
    from tasks.distill import DistillJob, distil, distillation_texts
    from tasks.modeling import pick_device

    splits = inputs.splits
    teacher = load_saved_classifier(inputs.model_dir, pick_device())
    texts = distillation_texts(splits.train, splits.corpus, params.max_corpus_rows, inputs.seed)
    work = Path(f"{inputs.model_dir}-student.checkpoints")  # kept by a killed run, which resumes from it
    job = DistillJob(teacher, inputs.model_dir, texts, splits.validation, params, inputs.seed, work)
    with tempfile.TemporaryDirectory(prefix="steward-student-") as scratch:
        student_dir = distil(job, Path(scratch) / "student")
        write_int8_form(student_dir, inputs.model_id, target, STUDENT)


FormMaker = Callable[[CompressionInputs, Path], None]  # writes the form's folder


def planned_forms(config: CompressionConfig) -> list[tuple[str, str, FormMaker]]:
    """(form, method, maker) for each form the config asks for."""
    forms = [(METHOD_FORMS[method], method, make_int8) for method in config.methods]
    if config.distill is not None:
        forms.append((STUDENT, f"distill-{config.distill.layers}-layers+onnx-int8",
                      partial(make_student, params=config.distill)))
    return forms


def compress_form(inputs: CompressionInputs, form: str, method: str, make: FormMaker,
                  config: CompressionConfig) -> FormResult:
    """One form, made, evaluated and judged; whatever raises makes it `failed`, never the run."""
    target = form_dir(inputs.model_dir, form)
    try:
        make(inputs, target)
        evaluation = evaluate_scorer(load_form(target), inputs.splits.test)
    except Exception as exc:
        shutil.rmtree(target, ignore_errors=True)
        return FormResult(form, method, "failed", [exception_line(exc)])
    status, reasons, agreement, drop = judge(evaluation, inputs.reference, inputs.primary_metric, config)
    return FormResult(
        form, method, status, reasons, folder=target, files=sha256_files(target), size_bytes=folder_size(target),
        evaluation=evaluation, agreement=agreement, metric_drop=drop,
        per_class_f1_delta=per_class_f1_delta(evaluation, inputs.reference),
    )


def compress_model(inputs: CompressionInputs, config: CompressionConfig) -> list[FormResult]:
    """Every form the config asks for, judged against the fp32 model's evaluation."""
    quiet_transformers()
    return [compress_form(inputs, form, method, make, config) for form, method, make in planned_forms(config)]
