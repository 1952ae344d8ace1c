"""Which tokens made a classifier decide: integrated gradients over the input embeddings.

Integrated gradients (Sundararajan et al., "Axiomatic Attribution for Deep Networks", ICML 2017) integrates the
gradient of one class's output along the straight line from a baseline input to the text, in the space of the
encoder's word embeddings (`captum.attr.LayerIntegratedGradients` on `get_input_embeddings()`). The baseline is
the same sequence with every token of the text replaced by the pad token; special tokens ([CLS], [SEP]) stay,
so theirs is the same embedding at both ends and gets no attribution. Summing a token's attribution over the
embedding dimension gives one signed weight per token: positive supports the explained class.

What is attributed is the class's **logit** (before the temperature): by completeness the weights sum to
logit(text) − logit(baseline), up to the integral's approximation error, which captum reports as the
convergence delta (a large |delta| next to the sum says to raise `steps`). The calibrated probability is not
attributed because softmax saturates: near 0 or 1 its gradient vanishes and the weights say little. The
temperature divides every logit alike, so it changes neither the explained class nor the weights' ranking.

Texts are cut as prediction cuts them (`CHARS_PER_TOKEN_CAP` characters per token, then `max_length` tokens),
so a token past the cut is not explained. Each token comes with its character span in the text (a fast
tokenizer's offset mapping), so a UI can highlight the original text; wordpieces are not merged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from core.errors import BadInputError
from tasks.classifier import calibrated, clip_text

if TYPE_CHECKING:
    from transformers import BatchEncoding

    from tasks.classifier import Classifier, SentenceClassifier
    from tasks.modeling import Device

EXPLAIN_STEPS = 50  # points on the integration path (captum's default, and the paper's lower end)
# Interpolated sequences per forward/backward pass: memory stays at most this many copies of one text, however
# many steps are asked for.
INTERNAL_BATCH_SIZE = 50
BOOKKEEPING = ("offset_mapping", "special_tokens_mask")  # tokenizer outputs that are not model inputs


@dataclass(frozen=True)
class Explanation:
    """One text's attribution: per token of the text (special tokens dropped), its span and signed weight."""

    text: str
    label: str  # the class explained: the predicted one unless a target was given
    score: float  # its calibrated probability
    tokens: list[str]  # the tokenizer's tokens (wordpieces kept as they are)
    spans: list[tuple[int, int]]  # each token's [start, end) character offsets into `text`
    attributions: list[float]  # per token; positive supports `label`
    delta: float  # captum's convergence delta: sum(attributions) − (logit(text) − logit(baseline))

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "label": self.label, "score": self.score, "tokens": list(self.tokens),
                "spans": [list(span) for span in self.spans], "attributions": list(self.attributions),
                "delta": self.delta}


def explain(classifier: Classifier, texts: list[str], device: Device, targets: list[str] | None = None,
            steps: int = EXPLAIN_STEPS, internal_batch_size: int = INTERNAL_BATCH_SIZE) -> list[Explanation]:
    """Integrated-gradients token attributions of each text toward its target class (default: the predicted
    class), in fp32 with the model in eval mode (no dropout, so the same text gets the same weights)."""
    target_ids = _target_ids(classifier, texts, targets)
    if steps < 1 or internal_batch_size < 1:
        raise BadInputError(f"steps and internal_batch_size must be at least 1, got {steps} and {internal_batch_size}")
    classifier.model.eval()
    return [_explain_one(classifier, text, target, device, steps, internal_batch_size)
            for text, target in zip(texts, target_ids, strict=True)]


def _target_ids(classifier: Classifier, texts: list[str], targets: list[str] | None) -> list[int | None]:
    """The class index to explain per text (None: the predicted class); refuses unknown labels."""
    if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
        raise BadInputError("explain() takes a list of strings")
    if targets is None:
        return [None] * len(texts)
    if len(targets) != len(texts):
        raise BadInputError(f"{len(targets)} targets for {len(texts)} texts: give one per text, or none")
    unknown = sorted(set(targets) - set(classifier.labels))
    if unknown:
        raise BadInputError(f"unknown target label(s) {', '.join(unknown)} (known: {', '.join(classifier.labels)})")
    return [classifier.labels.index(target) for target in targets]


def _explain_one(classifier: Classifier, text: str, target: int | None, device: Device, steps: int,
                 internal_batch_size: int) -> Explanation:
    from captum.attr import LayerIntegratedGradients

    encoding = _encode(classifier, text)
    input_ids, names, extras = _model_inputs(encoding, device)
    special = encoding["special_tokens_mask"][0].bool()
    forward = _forward(classifier.model, names)
    with torch.no_grad():
        logits = forward(input_ids, *extras)[0].float()
    index = int(logits.argmax()) if target is None else target
    baseline = input_ids.masked_fill(~special.to(input_ids.device), _pad_id(classifier))
    integrated = LayerIntegratedGradients(forward, classifier.model.encoder.get_input_embeddings())
    with torch.enable_grad():
        attributions, delta = integrated.attribute(
            input_ids, baselines=baseline, target=index, additional_forward_args=tuple(extras), n_steps=steps,
            internal_batch_size=internal_batch_size, return_convergence_delta=True)
    weights = attributions[0].sum(dim=-1).float().cpu()
    keep = (~special).nonzero().flatten().tolist()
    tokens = classifier.tokenizer.convert_ids_to_tokens(encoding["input_ids"][0].tolist())
    offsets = encoding["offset_mapping"][0].tolist()
    return Explanation(text, classifier.labels[index], float(calibrated(logits, classifier.temperature)[index]),
                       [tokens[i] for i in keep], [(int(offsets[i][0]), int(offsets[i][1])) for i in keep],
                       [float(weights[i]) for i in keep], float(delta.flatten()[0]))


def _encode(classifier: Classifier, text: str) -> BatchEncoding:
    """The text tokenised as prediction does it, with offsets and the special-token mask."""
    tokenizer = classifier.tokenizer
    if not tokenizer.is_fast:
        raise BadInputError(f"explaining needs a fast tokenizer (for character offsets); "
                            f"{type(tokenizer).__name__} is not one")
    return tokenizer(clip_text(text, classifier.max_length), truncation=True, max_length=classifier.max_length,
                     return_offsets_mapping=True, return_special_tokens_mask=True, return_tensors="pt")


def _model_inputs(encoding: BatchEncoding, device: Device) -> tuple[torch.Tensor, list[str], list[torch.Tensor]]:
    """input_ids, and the names and tensors of the other model inputs (attention mask, token types), on the
    device."""
    names = [name for name in encoding if name not in (*BOOKKEEPING, "input_ids")]
    move = device.torch_device
    return encoding["input_ids"].to(move), names, [encoding[name].to(move) for name in names]


def _forward(model: SentenceClassifier, names: list[str]) -> Callable[..., torch.Tensor]:
    """The model's logits as a function of input_ids and the other inputs, positionally (captum's calling
    convention)."""

    def forward(input_ids: torch.Tensor, *values: torch.Tensor) -> torch.Tensor:
        return model(input_ids, **dict(zip(names, values, strict=True))).float()

    return forward


def _pad_id(classifier: Classifier) -> int:
    """The baseline's token: the pad token (else UNK, for a tokenizer that has no pad token)."""
    tokenizer = classifier.tokenizer
    token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.unk_token_id
    if token_id is None:
        raise BadInputError(f"{type(tokenizer).__name__} has neither a pad nor an unknown token for the baseline")
    return int(token_id)
