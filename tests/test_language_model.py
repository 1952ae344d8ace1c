"""Loading a saved causal LM (full weights, or a LoRA adapter over a verified base) and generating with it."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from core.errors import BadInputError, CheckFailedError
from core.hashing import ModelFiles
from tasks.language_model import Generator, load_causal_lm, load_generator
from tasks.manifest import ModelManifest
from tasks.modeling import cpu_device, load_tokenizer
from tasks.perplexity import document_losses

PROMPTS = ["the", "the customer asked for a refund of the order", "good movie"]


def manifest_for(base: Path, adapter: bool) -> ModelManifest:
    return ModelManifest(
        task="causal-lm", form="fp32", max_length=64, base_fingerprint=ModelFiles.of(base).fingerprint,
        base_model=str(base), adapter=adapter,
    )


@pytest.fixture(scope="module")
def full_dir(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = shutil.copytree(tiny_llama_dir, tmp_path_factory.mktemp("full") / "model")
    manifest_for(tiny_llama_dir, adapter=False).write(folder)
    return folder


@pytest.fixture(scope="module")
def adapter(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A saved LoRA adapter with random (not zero) B matrices, so that it changes the logits, and the in-memory
    peft model it was saved from."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = LlamaForCausalLM.from_pretrained(tiny_llama_dir)
    adapted = get_peft_model(
        base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    ).eval()
    folder = tmp_path_factory.mktemp("adapter") / "model"
    adapted.save_pretrained(folder)
    load_tokenizer(tiny_llama_dir).save_pretrained(folder)
    manifest_for(tiny_llama_dir, adapter=True).write(folder)
    return folder, adapted


@pytest.fixture(scope="module")
def generator(full_dir: Path) -> Generator:
    return load_generator(full_dir, cpu_device())


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([[5, 17, 42, 99, 3, 250]])).logits


def test_full_weights_load_as_saved(full_dir: Path, tiny_llama_dir: Path) -> None:
    model, tokenizer, manifest = load_causal_lm(full_dir, cpu_device())

    assert manifest.task == "causal-lm" and not manifest.adapter
    assert not model.training and tokenizer.pad_token == tokenizer.eos_token
    assert torch.equal(logits(model), logits(AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()))


def test_adapter_is_merged_into_its_base(adapter: tuple, tiny_llama_dir: Path) -> None:
    folder, adapted = adapter
    model, _, manifest = load_causal_lm(folder, cpu_device())

    assert manifest.adapter and type(model).__name__ == "LlamaForCausalLM"  # merged: no peft wrapper left
    torch.testing.assert_close(logits(model), logits(adapted), rtol=1e-5, atol=1e-5)
    base_logits = logits(AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval())
    assert not torch.allclose(logits(model), base_logits, atol=1e-3)  # the adapter did change the model


def test_a_changed_base_is_refused(adapter: tuple, tiny_llama_dir: Path, tmp_path: Path) -> None:
    folder, adapted = adapter
    same = shutil.copytree(tiny_llama_dir, tmp_path / "same")
    torch.testing.assert_close(logits(load_causal_lm(folder, cpu_device(), base_dir=same)[0]), logits(adapted))

    changed = shutil.copytree(tiny_llama_dir, tmp_path / "changed")
    config = changed / "config.json"
    config.write_text(config.read_text().replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05'))
    assert ModelFiles.of(changed).fingerprint != ModelFiles.of(tiny_llama_dir).fingerprint
    with pytest.raises(CheckFailedError, match="base model files differ") as refused:
        load_causal_lm(folder, cpu_device(), base_dir=changed)
    assert str(changed) in str(refused.value)


def test_a_truncated_adapter_is_refused_in_one_line(adapter: tuple, tmp_path: Path) -> None:
    folder = shutil.copytree(adapter[0], tmp_path / "adapter")
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    with pytest.raises(BadInputError) as refused:
        load_causal_lm(folder, cpu_device())
    assert str(weights) in str(refused.value) and "\n" not in str(refused.value)

    (folder / "adapter_config.json").write_text('{"r": 4,')
    with pytest.raises(BadInputError, match=r"adapter_config\.json: not a readable adapter config"):
        load_causal_lm(folder, cpu_device())


def test_a_classifier_folder_is_not_a_language_model(full_dir: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(full_dir, tmp_path / "model")
    ModelManifest(task="text-classification", form="fp32", max_length=64, base_fingerprint="x").write(folder)
    with pytest.raises(BadInputError, match="not a causal language model"):
        load_causal_lm(folder, cpu_device())


def test_greedy_generation(generator: Generator) -> None:
    completions = generator.generate(PROMPTS, max_new_tokens=6)

    assert generator.generate(PROMPTS, max_new_tokens=6) == completions
    for prompt, completion in zip(PROMPTS, completions, strict=True):
        assert completion.prompt_tokens == len(generator.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        assert 1 <= completion.completion_tokens <= 6
        assert completion.finish_reason == ("length" if completion.completion_tokens == 6 else "stop")
    assert [generator.generate([prompt], max_new_tokens=6)[0] for prompt in PROMPTS] == completions  # left padding
    assert generator.generate([], max_new_tokens=6) == []


def test_sampling_is_reproducible_for_a_seed(generator: Generator) -> None:
    first = generator.generate(PROMPTS, max_new_tokens=8, temperature=1.0, seed=5)

    assert generator.generate(PROMPTS, max_new_tokens=8, temperature=1.0, seed=5) == first
    assert generator.generate(PROMPTS, max_new_tokens=8, temperature=1.0, seed=6) != first


def test_stop_strings_cut_the_text(generator: Generator) -> None:
    full = generator.generate([PROMPTS[1]], max_new_tokens=16)[0]
    stop = next(full.text[index : index + 2] for index in range(2, len(full.text))
                if full.text[index : index + 2].isascii() and full.text[index : index + 2].isalnum())

    cut = generator.generate([PROMPTS[1]], max_new_tokens=16, stop=[stop, "never here"])[0]
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.finish_reason == "stop" and cut.completion_tokens <= full.completion_tokens


def test_stream_yields_the_greedy_text_in_pieces(generator: Generator) -> None:
    pieces = list(generator.stream(PROMPTS[2], max_new_tokens=30))

    assert len(pieces) > 1
    assert "".join(pieces) == generator.generate([PROMPTS[2]], max_new_tokens=30)[0].text
    first = next(iter(generator.stream(PROMPTS[2], max_new_tokens=30)))  # a reader may stop early
    assert first == pieces[0]
    sampled = "".join(generator.stream(PROMPTS[0], max_new_tokens=12, temperature=1.0, seed=2))
    assert sampled == generator.generate([PROMPTS[0]], max_new_tokens=12, temperature=1.0, seed=2)[0].text


def test_chat_prompt_uses_the_template(generator: Generator, full_dir: Path) -> None:
    prompt = generator.chat_prompt([{"role": "user", "content": "my order is late"}])
    assert prompt == "<|im_start|>user\nmy order is late<|im_end|>\n<|im_start|>assistant\n"

    plain = load_generator(full_dir, cpu_device())
    plain.tokenizer.chat_template = None
    with pytest.raises(BadInputError, match="no chat template"):
        plain.chat_prompt([{"role": "user", "content": "hi"}])


def test_score_is_per_text_perplexity(generator: Generator) -> None:
    scores = generator.score([*PROMPTS, ""])
    losses = document_losses(generator.model, generator.tokenizer, PROMPTS, generator.max_length)

    assert scores[:3] == pytest.approx([math.exp(n / t) for n, t in zip(losses.nll, losses.tokens, strict=True)])
    assert math.isnan(scores[3])
