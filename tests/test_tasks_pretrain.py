"""Continued pretraining on the tiny BERT (and a tiny GPT-2): learning, caching, resuming, packing."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from core.config import PretrainingConfig
from core.errors import BadInputError
from tasks.data import TextTable, make_table
from tasks.objectives.base import PretrainJob
from tasks.objectives.language_modelling import group_texts
from tasks.pretrain import cache_key, continue_pretraining, resolve_objective
from tests.tiny_model import build_tiny_bert, tiny_vocab

REPO_ROOT = Path(__file__).resolve().parents[1]
PHRASES = ["the cat sat on the mat", "the dog ran in the park", "the sun is red and the moon is blue"]
# Tiny corpora: `max_epochs` high, so `max_steps` alone sets the step count these tests count.
FAST = PretrainingConfig(
    max_steps=40, max_epochs=1_000, batch_size=16, max_seq_length=32, learning_rate=3e-3, head_warmup_steps=10,
    save_steps=5,
)


def repetitive_corpus(documents: int = 200, seed: int = 0) -> TextTable:
    """Documents stitched from three phrases: easy to learn, so held-out loss must fall."""
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(PHRASES) for _ in range(5)) for _ in range(documents)]
    return make_table("corpus", Path("corpus.txt"), list(texts), None, {"text": "object"})


def test_pretraining_lowers_heldout_perplexity_then_hits_the_cache(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    corpus = repetitive_corpus()
    output_dir, cache_root = tmp_path / "run", tmp_path / "cache"
    result = continue_pretraining(PretrainJob(tiny_model_dir, corpus, FAST, 7, output_dir, cache_root))

    assert not result.cache_hit and result.resumed_from_step is None
    assert result.objective == "mlm"
    assert (result.head_warmup_steps, result.steps, len(result.loss_curve)) == (10, 50, 50)
    assert result.perplexity_after < 0.5 * result.perplexity_before
    assert result.corpus_blocks > 100 and result.train_tokens % 32 == 0
    assert result.trained_tokens == 50 * 16 * 32  # every step: 16 packed blocks of 32 tokens, no padding
    assert 0.0 < result.training_seconds < result.seconds
    assert result.model_dir == cache_root / result.cache_key
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {
        p.name for p in result.model_dir.iterdir()
    }
    assert list(output_dir.iterdir()) == []  # checkpoints are gone once the cache holds the result

    again = continue_pretraining(PretrainJob(tiny_model_dir, corpus, FAST, 7, output_dir, cache_root))
    assert again.cache_hit and again.cache_key == result.cache_key
    assert again.perplexity_after == result.perplexity_after and again.loss_curve == result.loss_curve
    assert again.seconds < 1.0


def test_the_adapted_checkpoint_has_a_trained_head(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForMaskedLM

    params = FAST.model_copy(update={"max_steps": 3, "head_warmup_steps": 2})
    result = continue_pretraining(
        PretrainJob(tiny_model_dir, repetitive_corpus(40), params, 1, tmp_path / "o", tmp_path / "c")
    )
    _, info = AutoModelForMaskedLM.from_pretrained(
        result.model_dir, output_loading_info=True, use_safetensors=True
    )
    assert info["missing_keys"] == set()


def test_cache_key_changes_with_each_input(tiny_model_dir: Path) -> None:
    corpus = repetitive_corpus()
    job = PretrainJob(tiny_model_dir, corpus, FAST, 7, Path("run"), Path("cache"))
    key = cache_key(job)
    assert cache_key(PretrainJob(tiny_model_dir, corpus, FAST, 7, Path("run"), Path("cache"))) == key
    assert cache_key(replace(job, seed=8)) != key
    assert cache_key(replace(job, corpus=repetitive_corpus(seed=1))) != key
    assert cache_key(replace(job, params=FAST.model_copy(update={"learning_rate": 1e-3}))) != key


KILLED_RUN = """
import json, os, signal, sys
from pathlib import Path
from tasks.objectives.base import PretrainJob
from tasks.pretrain import continue_pretraining
from tests.test_tasks_pretrain import FAST, repetitive_corpus

model_dir, output_dir, cache_root, kill_at = json.loads(sys.argv[1])

def die_at(step: int, loss: float) -> None:
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

corpus = repetitive_corpus()
job = PretrainJob(Path(model_dir), corpus, FAST, 7, Path(output_dir), Path(cache_root))
continue_pretraining(job, on_step=die_at)
"""


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path: Path, tiny_model_dir: Path) -> None:
    output_dir, cache_root = tmp_path / "run", tmp_path / "cache"
    arguments = json.dumps([str(tiny_model_dir), str(output_dir), str(cache_root), 23])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, arguments],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert [p.name for p in output_dir.iterdir() if not p.name.startswith(".")] == ["checkpoint-20"]
    assert not cache_root.exists() or not any(cache_root.iterdir())

    resumed = continue_pretraining(PretrainJob(tiny_model_dir, repetitive_corpus(), FAST, 7, output_dir, cache_root))
    assert resumed.resumed_from_step == 20 and not resumed.cache_hit

    uninterrupted = continue_pretraining(
        PretrainJob(tiny_model_dir, repetitive_corpus(), FAST, 7, tmp_path / "other-run", tmp_path / "other-cache")
    )
    assert resumed.cache_key == uninterrupted.cache_key
    assert [step for step, _ in resumed.loss_curve] == list(range(1, 51))
    assert [loss for _, loss in resumed.loss_curve] == pytest.approx(
        [loss for _, loss in uninterrupted.loss_curve]
    )
    assert resumed.perplexity_after == pytest.approx(uninterrupted.perplexity_after)


def test_group_texts_concatenates_cuts_and_drops_the_remainder() -> None:
    examples = {
        "input_ids": [[1, 2, 3], [4, 5], [6, 7, 8, 9]],
        "special_tokens_mask": [[1, 0, 1], [1, 1], [1, 0, 0, 1]],
    }
    assert group_texts(examples, 4) == [
        {"input_ids": [1, 2, 3, 4], "special_tokens_mask": [1, 0, 1, 1]},
        {"input_ids": [5, 6, 7, 8], "special_tokens_mask": [1, 1, 0, 0]},
    ]


def test_a_corpus_too_small_for_two_blocks_is_bad_input(tmp_path: Path, tiny_model_dir: Path) -> None:
    corpus = make_table("corpus", Path("tiny.txt"), ["the cat sat"], None, {})
    with pytest.raises(
        BadInputError, match=r"tiny.txt: the domain corpus has 5 tokens, too few for two blocks of 32"
    ):
        continue_pretraining(PretrainJob(tiny_model_dir, corpus, FAST, 0, tmp_path / "o", tmp_path / "c"))


def test_a_base_model_with_its_mlm_head_skips_the_warmup(tmp_path: Path) -> None:
    with_head = build_tiny_bert(tmp_path / "with-head", with_mlm_head=True)
    params = FAST.model_copy(update={"max_steps": 4})
    result = continue_pretraining(
        PretrainJob(with_head, repetitive_corpus(40), params, 0, tmp_path / "o", tmp_path / "c")
    )
    assert (result.head_warmup_steps, result.steps) == (0, 4)


def build_tiny_gpt2(directory: Path, bert_dir: Path) -> Path:
    """A 2-layer GPT-2 (causal LM) that reuses the tiny WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tiny_vocab()), n_embd=32, n_layer=2, n_head=2, n_positions=64)
    GPT2LMHeadModel(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(bert_dir).save_pretrained(directory)
    return directory


def test_a_decoder_is_pretrained_as_a_causal_lm(tmp_path: Path, tiny_model_dir: Path) -> None:
    gpt2 = build_tiny_gpt2(tmp_path / "gpt2", tiny_model_dir)
    params = FAST.model_copy(update={"max_steps": 30})
    result = continue_pretraining(PretrainJob(gpt2, repetitive_corpus(), params, 0, tmp_path / "o", tmp_path / "c"))
    assert result.objective == "clm" and result.head_warmup_steps == 0
    assert result.perplexity_after < 0.5 * result.perplexity_before


@pytest.mark.minilm
def test_minilm_gets_its_missing_mlm_head_warmed_up(tmp_path: Path) -> None:
    from tasks.modeling import resolve_base_model

    params = PretrainingConfig(
        objective="mlm", max_steps=5, max_epochs=1_000, head_warmup_steps=5, batch_size=4, max_seq_length=32,
        learning_rate=1e-4, save_steps=50,
    )
    corpus = make_table("corpus", Path("support.txt"), SUPPORT_SENTENCES, None, {})
    result = continue_pretraining(
        PretrainJob(resolve_base_model("minilm"), corpus, params, 0, tmp_path / "o", tmp_path / "c")
    )
    assert result.head_warmup_steps == 5 and result.steps == 10 and len(result.loss_curve) == 10
    assert 1.0 < result.perplexity_after < float("inf")


@pytest.mark.minilm
def test_simcse_adapts_a_sentence_encoder_and_auto_leaves_it_alone(tmp_path: Path) -> None:
    """The packaged MiniLM ships a sentence-transformers pooling config: `auto` runs no continued pretraining
    on it (one line naming the key), while an explicit `simcse` trains no new head and lowers the held-out
    contrastive loss; the adapted checkpoint keeps the pooling config."""
    from tasks.modeling import resolve_base_model

    minilm = resolve_base_model("minilm")
    params = PretrainingConfig(max_steps=6, max_epochs=1_000, batch_size=8, max_seq_length=48, save_steps=50)
    distinct = sorted({f"{first} {second}" for first in SUPPORT_SENTENCES for second in SUPPORT_SENTENCES})
    corpus = make_table("corpus", Path("support.txt"), distinct, None, {})
    assert resolve_objective("auto", minilm) is None
    with pytest.raises(BadInputError, match=r"pretraining.objective 'auto' runs no continued pretraining for the "
                                            r"sentence encoder .*name one \(simcse, tsdae, mlm\)"):
        continue_pretraining(PretrainJob(minilm, corpus, params, 0, tmp_path / "auto", tmp_path / "c"))
    simcse = params.model_copy(update={"objective": "simcse"})
    result = continue_pretraining(PretrainJob(minilm, corpus, simcse, 0, tmp_path / "o", tmp_path / "c"))
    assert (result.objective, result.head_warmup_steps, result.steps) == ("simcse", 0, 6)
    assert result.perplexity_before is None and result.perplexity_after is None
    assert result.heldout_loss_after < result.heldout_loss_before
    assert (result.model_dir / "1_Pooling" / "config.json").is_file()


def test_an_objective_that_does_not_fit_the_base_is_bad_input(tmp_path: Path, tiny_model_dir: Path) -> None:
    clm = FAST.model_copy(update={"objective": "clm"})
    with pytest.raises(BadInputError, match=r"pretraining.objective 'clm' does not fit .*: it is an encoder"):
        continue_pretraining(
            PretrainJob(tiny_model_dir, repetitive_corpus(), clm, 7, tmp_path / "o", tmp_path / "c")
        )


SUPPORT_SENTENCES = [
    "My invoice shows a duplicate charge for the premium plan this month.",
    "I cannot log in to the admin console after the password reset email expired.",
    "The VPN client disconnects every few minutes when I work from home.",
    "Please refund the order that was delivered damaged last Tuesday.",
    "The printer on the third floor keeps jamming on double-sided jobs.",
    "Our single sign-on stopped working after the certificate rotation.",
    "How do I export last quarter's billing history as a spreadsheet?",
    "The mobile app crashes when I attach a photo to a support ticket.",
] * 6


def test_masked_positions_only_loss_equals_the_full_forward(tmp_path: Path) -> None:
    import torch
    from transformers import DataCollatorForLanguageModeling

    from tasks.modeling import pick_device
    from tasks.objectives.language_modelling import load_language_model, predicted_count, token_loss_module

    lm = load_language_model(build_tiny_bert(tmp_path / "m", with_mlm_head=True), pick_device())
    lm.model.eval()
    blocks = [{"input_ids": list(range(5, 37))} for _ in range(4)]
    batch = DataCollatorForLanguageModeling(lm.tokenizer, mlm_probability=0.3, seed=0)(blocks)
    with torch.no_grad():
        summed = token_loss_module(lm)(batch["input_ids"], batch["labels"])
        mean = float(summed) / predicted_count(batch["labels"], causal=False)
        assert mean == pytest.approx(float(lm.model(**batch).loss), rel=1e-5)


def test_a_batch_with_nothing_masked_has_zero_loss_and_zero_gradients(tmp_path: Path) -> None:
    import torch

    from tasks.modeling import pick_device
    from tasks.objectives.language_modelling import load_language_model, token_loss_module

    lm = load_language_model(build_tiny_bert(tmp_path / "m", with_mlm_head=True), pick_device())
    input_ids = torch.arange(5, 37).repeat(2, 1)
    loss = token_loss_module(lm)(input_ids, torch.full_like(input_ids, -100))
    loss.backward()
    assert loss.item() == 0.0
    head_weights = [p for name, p in lm.model.named_parameters() if name.startswith("cls.")]
    assert head_weights and all(p.grad is not None and not p.grad.any() for p in head_weights)


@pytest.mark.parametrize("objective", ["simcse", "tsdae"])
def test_sentence_objectives_train_the_encoder_and_resume(
    objective: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Both sentence-encoder objectives lower their held-out loss, publish a bare encoder the classifier
    loads, and a run cut at a checkpoint resumes to the same losses as an uninterrupted one."""
    from tasks.classifier import load_encoder

    params = FAST.model_copy(update={"objective": objective, "max_steps": 20, "learning_rate": 3e-3})
    corpus = repetitive_corpus()
    whole = continue_pretraining(PretrainJob(tiny_model_dir, corpus, params, 7, tmp_path / "a", tmp_path / "ca"))
    assert (whole.objective, whole.head_warmup_steps, whole.steps) == (objective, 0, 20)
    assert whole.heldout_loss_after < whole.heldout_loss_before and whole.perplexity_after is None
    assert load_encoder(whole.model_dir).config.hidden_size == 32

    def stop_at_ten(step: int, loss: float) -> None:
        if step == 11:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        continue_pretraining(
            PretrainJob(tiny_model_dir, corpus, params, 7, tmp_path / "b", tmp_path / "cb"), on_step=stop_at_ten
        )
    resumed = continue_pretraining(PretrainJob(tiny_model_dir, corpus, params, 7, tmp_path / "b", tmp_path / "cb"))
    assert resumed.resumed_from_step == 10
    assert [loss for _, loss in resumed.loss_curve] == pytest.approx([loss for _, loss in whole.loss_curve])


def test_a_small_corpus_is_passed_over_max_epochs_times_not_drilled_for_max_steps(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    corpus = repetitive_corpus()
    params = FAST.model_copy(update={"objective": "simcse", "max_steps": 500, "max_epochs": 2.0})
    result = continue_pretraining(PretrainJob(tiny_model_dir, corpus, params, 7, tmp_path / "o", tmp_path / "c"))
    assert 0 < result.steps <= math.ceil(2.0 * len(corpus.texts) / params.batch_size) < params.max_steps
