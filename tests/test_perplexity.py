"""Perplexity of a causal LM over documents: exact per-document losses, bootstrap intervals, paired gains."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from tasks.modeling import load_tokenizer
from tasks.perplexity import DocumentLosses, document_losses, relative_gain, relative_increase, sample_reference

DOMAIN = [
    "the customer asked for a refund of the order",
    "the customer asked for a refund of the invoice",
    "the customer sent the invoice and the order",
    "the customer asked for a new password",
    "support sent the refund for the order",
    "the order and the invoice are good",
]


def load(model_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return AutoModelForCausalLM.from_pretrained(model_dir).eval(), load_tokenizer(model_dir)


@pytest.fixture(scope="module")
def tiny_lm(tiny_llama_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return load(tiny_llama_dir)


def reference_losses(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int
                     ) -> tuple[list[float], list[int]]:
    """One document at a time, one window at a time, with the model's own `labels=` loss (a mean) × count."""
    nll, counts = [], []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        total, predicted = 0.0, 0
        for start in range(0, len(ids), max_length):
            window = torch.tensor([ids[start : start + max_length]])
            if window.shape[1] > 1:
                with torch.no_grad():
                    total += model(input_ids=window, labels=window).loss.item() * (window.shape[1] - 1)
                predicted += window.shape[1] - 1
        nll.append(total)
        counts.append(predicted)
    return nll, counts


def test_document_losses_equal_a_per_document_loop(tiny_lm: tuple) -> None:
    model, tokenizer = tiny_lm
    long_text = " ".join(DOMAIN * 3)  # well over max_length tokens: several windows
    texts = [DOMAIN[0], long_text, "", "cat", DOMAIN[3], DOMAIN[4]]
    assert len(tokenizer(long_text, add_special_tokens=False)["input_ids"]) > 3 * 16

    losses = document_losses(model, tokenizer, texts, max_length=16, batch_size=3)
    nll, counts = reference_losses(model, tokenizer, texts, max_length=16)

    assert losses.tokens.tolist() == counts
    assert losses.tokens[2] == 0  # "" is eos alone: nothing before it to predict it from
    np.testing.assert_allclose(losses.nll, nll, rtol=1e-5)
    assert losses.nll.dtype == np.float64 and losses.tokens.dtype == np.int64


def test_perplexity_and_its_interval(tiny_lm: tuple) -> None:
    model, tokenizer = tiny_lm
    losses = document_losses(model, tokenizer, DOMAIN, max_length=32)

    assert losses.cross_entropy == pytest.approx(losses.nll.sum() / losses.tokens.sum())
    assert losses.perplexity == pytest.approx(math.exp(losses.cross_entropy))
    low, high = losses.interval(seed=0)
    assert low <= losses.perplexity <= high
    assert losses.interval(seed=0) == (low, high)
    narrow = losses.interval(seed=0, level=0.5)
    assert low <= narrow[0] <= narrow[1] <= high

    restored = DocumentLosses.from_json(json.loads(json.dumps(losses.to_json())))
    assert restored.nll.tolist() == losses.nll.tolist() and restored.tokens.tolist() == losses.tokens.tolist()


def test_identical_losses_gain_nothing(tiny_lm: tuple) -> None:
    losses = document_losses(*tiny_lm, DOMAIN, max_length=32)

    for measure in (relative_gain, relative_increase):
        interval = measure(losses, losses, seed=1)
        assert interval.value == pytest.approx(0.0, abs=1e-12)
        assert interval.low == pytest.approx(0.0, abs=1e-12) and interval.high == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="same documents"):
        relative_gain(losses, document_losses(*tiny_lm, DOMAIN[:3], max_length=32), seed=1)


def test_training_on_a_text_lowers_its_perplexity(tiny_llama_dir: Path) -> None:
    model, tokenizer = load(tiny_llama_dir)
    before = document_losses(model, tokenizer, DOMAIN, max_length=32)
    batch = tokenizer([text + tokenizer.eos_token for text in DOMAIN], add_special_tokens=False, padding=True,
                      return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(12):
        optimizer.zero_grad()
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
    after = document_losses(model, tokenizer, DOMAIN, max_length=32)

    gain = relative_gain(before, after, seed=0)
    assert gain.value == pytest.approx(1 - after.perplexity / before.perplexity)
    assert gain.value > 0.2 and gain.low > 0 and gain.low <= gain.value <= gain.high
    increase = relative_increase(before, after, seed=0)
    assert increase.value == pytest.approx(after.cross_entropy / before.cross_entropy - 1)
    assert increase.high < 0  # predicting the domain better: its cross-entropy fell


def test_sample_reference_is_seeded(tiny_lm: tuple) -> None:
    model, tokenizer = tiny_lm
    first = sample_reference(model, tokenizer, count=5, max_new_tokens=12, seed=3, batch_size=2)

    assert len(first) == 5 and all(isinstance(text, str) for text in first)
    assert sample_reference(model, tokenizer, count=5, max_new_tokens=12, seed=3, batch_size=2) == first
    assert sample_reference(model, tokenizer, count=5, max_new_tokens=12, seed=4, batch_size=2) != first
