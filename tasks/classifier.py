"""The classifier Steward trains, saves, evaluates and monitors: an encoder, the base's own pooling, a head.

A sentence encoder such as the packaged MiniLM was trained to be read through its mean-pooled token
states; its [CLS] pooler (what `AutoModelForSequenceClassification` would put under the head) was never
trained. So the pooling comes from the base: its sentence-transformers `1_Pooling/config.json` when
present (mean or CLS token), mean pooling otherwise. The head's logits are divided by a temperature fitted
on the validation split (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017), so reported
probabilities are calibrated.

A saved classifier folder holds the encoder (`config.json`, `model.safetensors`), the tokenizer,
`head.safetensors` and `steward_model.json`, the manifest that says what the model is and how to use it
(`ModelManifest`): every loader reads it, so nothing about a trained model is asked of a config again.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from core.errors import BadInputError
from core.vocabulary import FP32, FormName
from tasks.manifest import ModelManifest, Pooling
from tasks.modeling import Device, load_tokenizer, weight_format_kwargs

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tasks.data import TextTable

HEAD_FILE = "head.safetensors"
POOLING_DIR = "1_Pooling"  # sentence-transformers' pooling module folder
# Texts are cut to max_length × 64 characters before tokenising, so a 1 MB text costs no more than a
# page; no real text spends more than 64 characters on one token, so truncation itself is unchanged.
CHARS_PER_TOKEN_CAP = 64
DEFAULT_HEAD_DROPOUT = 0.1  # for encoder configs that name no dropout

Example = dict[str, Any]


def base_pooling(model_dir: Path) -> Pooling:
    """The pooling the base was trained with: its sentence-transformers config, else mean pooling."""
    config_file = Path(model_dir) / POOLING_DIR / "config.json"
    if not config_file.is_file():
        return "mean"
    config = json.loads(config_file.read_text())
    return "cls" if config.get("pooling_mode_cls_token") and not config.get("pooling_mode_mean_tokens") else "mean"


def copy_pooling_config(base_dir: Path, target_dir: Path) -> None:
    """Carry the base's pooling config into a checkpoint derived from it (an adapted encoder)."""
    source = Path(base_dir) / POOLING_DIR
    if source.is_dir():
        shutil.copytree(source, Path(target_dir) / POOLING_DIR, dirs_exist_ok=True)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """One vector per sequence: the mean over real (unmasked) tokens, or the first token's state."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class SentenceClassifier(torch.nn.Module):
    """encoder → pooling → dropout → linear head; `forward` returns logits (before the temperature)."""

    def __init__(self, encoder: PreTrainedModel, num_labels: int, pooling: Pooling) -> None:
        super().__init__()
        self.encoder, self.pooling = encoder, pooling
        self.dropout = torch.nn.Dropout(_head_dropout(encoder.config))
        self.head = torch.nn.Linear(encoder.config.hidden_size, num_labels)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **inputs).last_hidden_state
        return pool(hidden, attention_mask, self.pooling)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(input_ids, attention_mask, **inputs)))


def _head_dropout(config: Any) -> float:
    """The dropout before the head, read from the encoder's config as `*ForSequenceClassification` does."""
    for name in ("classifier_dropout", "hidden_dropout_prob", "dropout"):
        value = getattr(config, name, None)
        if isinstance(value, float | int):
            return float(value)
    return DEFAULT_HEAD_DROPOUT


@dataclass
class Classifier:
    model: SentenceClassifier
    tokenizer: PreTrainedTokenizerBase
    labels: list[str]
    max_length: int
    base_fingerprint: str
    temperature: float = 1.0

    def manifest(self) -> ModelManifest:
        return ModelManifest("text-classification", FP32, self.max_length, self.base_fingerprint, self.labels,
                             self.model.pooling, self.temperature)


def calibrated(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Calibrated class probabilities: softmax(logits / temperature)."""
    return (logits.float() / temperature).softmax(dim=-1)


class Scorer(Protocol):
    """A saved classifier in one of its forms (`fp32` PyTorch, an ONNX Runtime `int8` or `student` form): what
    evaluation, `load_model`, `steward predict` and the model server score texts with."""

    form: str
    labels: list[str]
    temperature: float
    max_length: int

    def logits(self, texts: list[str], batch_size: int) -> torch.Tensor:
        """Logits (before the temperature) of every text, in order."""
        ...


@dataclass
class TorchScorer:
    """The fine-tuned classifier itself, in PyTorch."""

    classifier: Classifier
    device: Device
    form: str = "fp32"

    @property
    def labels(self) -> list[str]:
        return self.classifier.labels

    @property
    def temperature(self) -> float:
        return self.classifier.temperature

    @property
    def max_length(self) -> int:
        return self.classifier.max_length

    def logits(self, texts: list[str], batch_size: int) -> torch.Tensor:
        return batched_logits(self.classifier, encode(self.classifier, texts), batch_size, self.device)[0]


def new_classifier(model_dir: Path, labels: list[str], max_seq_length: int, base_fingerprint: str,
                   device: Device) -> Classifier:
    """A classifier over `labels` on the encoder in `model_dir` (whose files hash to `base_fingerprint`), with a
    new (seeded) head."""
    encoder = load_encoder(model_dir)
    model = SentenceClassifier(encoder, len(labels), base_pooling(model_dir))
    tokenizer = load_tokenizer(model_dir)
    max_length = usable_max_length(encoder, tokenizer, max_seq_length)
    return Classifier(model.to(device.torch_device), tokenizer, labels, max_length, base_fingerprint)


def load_saved_classifier(model_dir: Path, device: Device) -> Classifier:
    """A classifier saved by `save_classifier`, as its manifest describes it."""
    from safetensors.torch import load_file

    manifest = ModelManifest.read(model_dir)
    head_file = Path(model_dir) / HEAD_FILE
    if manifest.form != FP32 or not head_file.is_file():
        raise BadInputError(f"{model_dir}: not a fine-tuned Steward classifier (no {HEAD_FILE})")
    encoder = load_encoder(model_dir)
    model = SentenceClassifier(encoder, len(manifest.labels), manifest.pooling)
    model.head.load_state_dict(load_file(str(head_file)))
    return Classifier(model.to(device.torch_device).eval(), load_tokenizer(model_dir), manifest.labels,
                      manifest.max_length, manifest.base_fingerprint, manifest.temperature)


def load_encoder(model_dir: Path) -> PreTrainedModel:
    """The bare encoder (no task head, no [CLS] pooler) of the checkpoint in `model_dir`."""
    from transformers import AutoModel

    no_pooler = {"add_pooling_layer": False} if _takes_pooling_layer(model_dir) else {}
    return AutoModel.from_pretrained(
        str(model_dir), local_files_only=True, **no_pooler, **weight_format_kwargs(model_dir)
    )


def _takes_pooling_layer(model_dir: Path) -> bool:
    """BERT-likes build a [CLS] pooler by default; Steward never uses it, so it is not loaded or saved."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return config.get("model_type") in {"bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie"}


def save_classifier(classifier: Classifier, output_dir: Path) -> None:
    """Encoder weights (safetensors), head, tokenizer and the manifest."""
    from safetensors.torch import save_file

    output_dir.mkdir(parents=True, exist_ok=True)
    classifier.model.encoder.save_pretrained(output_dir)
    head = {name: tensor.detach().cpu().contiguous() for name, tensor in classifier.model.head.state_dict().items()}
    save_file(head, str(output_dir / HEAD_FILE))
    classifier.tokenizer.save_pretrained(output_dir)
    classifier.manifest().write(output_dir)


def form_manifest(classifier: Classifier, form: FormName) -> ModelManifest:
    """The manifest of a compressed form of `classifier` (the same labels, length and temperature)."""
    return replace(classifier.manifest(), form=form)


def usable_max_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, wanted: int) -> int:
    limits = [wanted, getattr(model.config, "max_position_embeddings", wanted)]
    if isinstance(tokenizer.model_max_length, int) and tokenizer.model_max_length < 1_000_000:
        limits.append(tokenizer.model_max_length)
    return min(limits)


def clip_text(text: str, max_length: int) -> str:
    return text[: max_length * CHARS_PER_TOKEN_CAP]


def encode(classifier: Classifier, texts: list[str], labels: list[str] | None = None) -> list[Example]:
    """Token ids per text (truncated, unpadded), with the class id when labels are given."""
    clipped = [clip_text(text, classifier.max_length) for text in texts]
    encoded = classifier.tokenizer(clipped, truncation=True, max_length=classifier.max_length)
    examples = [{name: values[i] for name, values in encoded.items()} for i in range(len(texts))]
    if labels is not None:
        class_ids = {label: index for index, label in enumerate(classifier.labels)}
        for example, label in zip(examples, labels, strict=True):
            example["labels"] = class_ids[label]
    return examples


def collate(classifier: Classifier, examples: list[Example], device: Device) -> dict[str, torch.Tensor]:
    """Dynamically padded tensors on the device (`labels` too when the examples carry them)."""
    from transformers import DataCollatorWithPadding

    batch = DataCollatorWithPadding(classifier.tokenizer)(examples)
    return {name: tensor.to(device.torch_device) for name, tensor in batch.items()}


def batched_logits(
    classifier: Classifier, examples: list[Example], batch_size: int, device: Device, embeddings: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (before the temperature) for every example, in order, from batches sorted by length;
    with `embeddings`, the pooled sentence vectors of the same forward passes too."""
    model = classifier.model
    order = sorted(range(len(examples)), key=lambda index: len(examples[index]["input_ids"]))
    logits = torch.empty(len(examples), len(classifier.labels))
    pooled = torch.empty(len(examples), model.head.in_features) if embeddings else None
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = collate(classifier, [_inputs(examples[i]) for i in rows], device)
            with device.autocast():
                vectors = model.embed(**batch)
                logits[rows] = model.head(vectors).float().cpu()
            if pooled is not None:
                pooled[rows] = vectors.float().cpu()
    return logits, pooled


def _inputs(example: Example) -> Example:
    return {name: value for name, value in example.items() if name != "labels"}


def accuracy_and_macro_f1(truth: list, predicted: list) -> tuple[float, float]:
    """sklearn's accuracy and macro F1 (over the classes present in truth or predictions)."""
    from sklearn.metrics import accuracy_score, f1_score

    accuracy = float(accuracy_score(truth, predicted))
    return accuracy, float(f1_score(truth, predicted, average="macro", zero_division=0))


def training_labels(train: TextTable) -> list[str]:
    """The sorted set of the training rows' labels, which fixes the class ids; at least two."""
    labels = sorted(set(train.complete_rows()[1]))
    if len(labels) < 2:
        raise BadInputError(f"{train.source}: training needs at least two labels, found {labels or 'none'}")
    return labels


def labelled_rows(table: TextTable, known: list[str]) -> tuple[list[str], list[int]]:
    """The texts of `table`'s rows with both text and label, and their class ids among `known`; refuses a set with
    no such rows or with labels outside `known`."""
    texts, labels = table.complete_rows()
    if not texts:
        raise BadInputError(f"{table.source}: the {table.role} set has no rows with both text and label")
    require_known_labels(table, labels, known)
    class_ids = {label: index for index, label in enumerate(known)}
    return texts, [class_ids[label] for label in labels]


def require_known_labels(table: TextTable, labels: list[str], known: list[str]) -> None:
    """Refuse a dataset whose labels the model cannot predict, naming them."""
    unknown = sorted(set(labels) - set(known))
    if unknown:
        raise BadInputError(
            f"{table.source}: {table.role} labels not seen in training: {', '.join(unknown)} "
            f"(known: {', '.join(known)})"
        )
