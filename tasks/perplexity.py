"""How well a causal language model predicts a set of documents: per-document losses, perplexity, and bootstrap
intervals over documents for one model or for a pair (a candidate against its base on the same documents).

Documents are scored as training packs them: each one's tokens followed by eos, cut into consecutive windows of
`max_length` tokens, each window predicting its tokens after the first from those before it in the window.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tasks.modeling import Device

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

IGNORED = -100  # the label of a position that is not predicted
_BOOTSTRAP_CELLS = 4_000_000  # resampled indices held in memory at once


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays have no single truth value to compare by
class DocumentLosses:
    """Per document: the summed next-token negative log-likelihood (nats) and how many tokens were predicted."""

    nll: np.ndarray  # float64, one per document
    tokens: np.ndarray  # int64, one per document

    def __post_init__(self) -> None:
        nll, tokens = np.asarray(self.nll, dtype=np.float64), np.asarray(self.tokens, dtype=np.int64)
        if nll.ndim != 1 or nll.shape != tokens.shape:
            raise ValueError(f"nll and tokens must be two 1-D arrays of one length, got {nll.shape} and {tokens.shape}")
        object.__setattr__(self, "nll", nll)
        object.__setattr__(self, "tokens", tokens)

    def __len__(self) -> int:
        return len(self.nll)

    @property
    def cross_entropy(self) -> float:
        """Nats per predicted token over all documents (token-weighted, so long documents weigh more)."""
        return _ratio(float(self.nll.sum()), float(self.tokens.sum()))

    @property
    def perplexity(self) -> float:
        return math.exp(self.cross_entropy)

    def interval(self, seed: int, resamples: int = 1000, level: float = 0.95) -> tuple[float, float]:
        """Percentile bootstrap interval of the perplexity, resampling documents with replacement."""
        sums = _resampled_sums([self.nll, self.tokens], seed, resamples)
        with np.errstate(divide="ignore", invalid="ignore"):
            return _percentiles(np.exp(sums[0] / sums[1]), level)

    def to_json(self) -> dict[str, list]:
        return {"nll": self.nll.tolist(), "tokens": self.tokens.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DocumentLosses:
        return cls(np.asarray(data["nll"], dtype=np.float64), np.asarray(data["tokens"], dtype=np.int64))


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float


def document_losses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    batch_size: int = 8,
    device: Device | None = None,
) -> DocumentLosses:
    """Score every text (see the module docstring) with `model`, already on `device` (default: where its
    parameters are). Windows of every document are batched together, right-padded, and summed per document in
    float64."""
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (a window predicts all but its first token), not {max_length}")
    device = device or Device(next(model.parameters()).device, None)
    nll, tokens = np.zeros(len(texts), dtype=np.float64), np.zeros(len(texts), dtype=np.int64)
    windows = sorted(_windows(tokenizer, texts, max_length), key=lambda item: len(item[1]))
    pad_id = _pad_id(tokenizer)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            batch = windows[start : start + batch_size]
            losses = _window_losses(model, [ids for _, ids in batch], pad_id, device)
            for (document, ids), loss in zip(batch, losses.tolist(), strict=True):
                nll[document] += loss
                tokens[document] += len(ids) - 1
    return DocumentLosses(nll, tokens)


def _windows(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> Iterator[tuple[int, list[int]]]:
    """(document index, window tokens) for every window that predicts something (two tokens or more)."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token, which ends every document")
    encoded = tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False)["input_ids"]
    for document, ids in enumerate(encoded):
        ids = [*ids, tokenizer.eos_token_id]
        for start in range(0, len(ids), max_length):
            window = ids[start : start + max_length]
            if len(window) > 1:
                yield document, window


def _window_losses(model: PreTrainedModel, windows: list[list[int]], pad_id: int, device: Device) -> torch.Tensor:
    """Summed next-token NLL of each window (float64), padding masked out of attention and labels."""
    width = max(len(ids) for ids in windows)
    input_ids = torch.full((len(windows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(windows), width), dtype=torch.long)
    for row, ids in enumerate(windows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, IGNORED)
    input_ids, attention_mask = input_ids.to(device.torch_device), attention_mask.to(device.torch_device)
    with device.autocast():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    targets = labels[:, 1:].to(device.torch_device)
    per_token = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORED, reduction="none"
    )
    return per_token.double().sum(dim=1).cpu()


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def relative_gain(
    before: DocumentLosses, after: DocumentLosses, seed: int, resamples: int = 1000, level: float = 0.95
) -> Interval:
    """1 - perplexity(after) / perplexity(before) on the same documents: the share of perplexity removed (a
    domain gain), with a paired bootstrap interval (the same resampled documents for both)."""

    def gain(nll_before: Any, tokens_before: Any, nll_after: Any, tokens_after: Any) -> Any:
        return 1 - np.exp(nll_after / tokens_after - nll_before / tokens_before)

    return _paired(before, after, gain, seed, resamples, level)


def relative_increase(
    before: DocumentLosses, after: DocumentLosses, seed: int, resamples: int = 1000, level: float = 0.95
) -> Interval:
    """cross_entropy(after) / cross_entropy(before) - 1 on the same documents: how much worse the candidate
    predicts a reference set (forgetting), with a paired bootstrap interval."""

    def increase(nll_before: Any, tokens_before: Any, nll_after: Any, tokens_after: Any) -> Any:
        return (nll_after / tokens_after) / (nll_before / tokens_before) - 1

    return _paired(before, after, increase, seed, resamples, level)


def unpaired_increase(
    reference: DocumentLosses, current: DocumentLosses, seed: int, resamples: int = 1000, level: float = 0.95
) -> Interval:
    """perplexity(current) / perplexity(reference) - 1 on two different sets of documents (monitoring: a new batch
    against the test split), with a bootstrap interval that resamples the documents of each set independently.

    Why not `relative_increase`: there the same documents are scored twice, so one resampling pairs them; here the
    sets share no documents and each one's own sampling noise has to enter the interval. Each set gets its own
    random stream drawn from `seed`, so equal-sized sets are not resampled in lockstep."""
    reference_seed, current_seed = (int(state) for state in np.random.SeedSequence(seed).generate_state(2))
    reference_nll, reference_tokens = _resampled_sums([reference.nll, reference.tokens], reference_seed, resamples)
    current_nll, current_tokens = _resampled_sums([current.nll, current.tokens], current_seed, resamples)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        value = float(np.exp(current.cross_entropy - reference.cross_entropy)) - 1
        low, high = _percentiles(
            np.exp(current_nll / current_tokens - reference_nll / reference_tokens) - 1, level
        )
    return Interval(value, low, high)


Statistic = Callable[[Any, Any, Any, Any], Any]


def _paired(
    before: DocumentLosses, after: DocumentLosses, statistic: Statistic, seed: int, resamples: int, level: float
) -> Interval:
    if len(before) != len(after):
        raise ValueError(
            f"paired comparison needs the same documents: {len(before)} documents before, {len(after)} after"
        )
    arrays = [before.nll, before.tokens, after.nll, after.tokens]
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(statistic(*(float(array.sum()) for array in arrays)))
        low, high = _percentiles(statistic(*_resampled_sums(arrays, seed, resamples)), level)
    return Interval(value, low, high)


def _resampled_sums(arrays: list[np.ndarray], seed: int, resamples: int) -> list[np.ndarray]:
    """For each array, its sum over each of `resamples` resamplings of the documents (one shared set of
    resampled indices, so statistics of several arrays stay paired). Indices are drawn in chunks to bound memory."""
    count = len(arrays[0])
    if count == 0:
        raise ValueError("a bootstrap needs at least one document")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    rng = np.random.default_rng(seed)
    sums = [np.empty(resamples, dtype=np.float64) for _ in arrays]
    rows = max(1, _BOOTSTRAP_CELLS // count)
    for start in range(0, resamples, rows):
        indices = rng.integers(0, count, size=(min(rows, resamples - start), count))
        for total, array in zip(sums, arrays, strict=True):
            total[start : start + len(indices)] = array[indices].sum(axis=1)
    return sums


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def sample_reference(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    count: int,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 16,
) -> list[str]:
    """`count` texts sampled from the model itself: pure ancestral sampling (temperature 1, no top-k, top-p or
    other filtering) from the bos token (eos when there is none), each ending at eos or after `max_new_tokens`.

    Why: the candidate's cross-entropy on text sampled from the base, minus the base's own, estimates
    KL(base || candidate): how far adaptation moved the model from what the base knew (forgetting), measured
    without any external corpus. The same model, seed, count and batch size give the same texts."""
    from transformers import GenerationConfig

    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise ValueError("the tokenizer has neither a bos nor an eos token to start sampling from")
    config = GenerationConfig(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, typical_p=1.0, min_p=0.0, repetition_penalty=1.0,
        no_repeat_ngram_size=0, epsilon_cutoff=0.0, eta_cutoff=0.0, max_new_tokens=max_new_tokens,
        pad_token_id=_pad_id(tokenizer), eos_token_id=tokenizer.eos_token_id,
    )
    torch_device = next(model.parameters()).device
    texts: list[str] = []
    model.eval()
    with seeded(seed, torch_device), torch.no_grad():
        for done in range(0, count, batch_size):
            rows = min(batch_size, count - done)
            prompt = torch.full((rows, 1), start, dtype=torch.long, device=torch_device)
            output = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), generation_config=config)
            texts += tokenizer.batch_decode(output[:, 1:], skip_special_tokens=True)
    return texts


@contextlib.contextmanager
def seeded(seed: int, torch_device: torch.device) -> Iterator[None]:
    """A block with torch's generators seeded (the device's too, on CUDA), their previous states restored after."""
    with torch.random.fork_rng(devices=[torch_device] if torch_device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
