"""Resumable training checkpoints in a run's output dir: `checkpoint-<n>/`, written atomically.

A checkpoint holds the model (safetensors), the optimizer/scheduler/RNG state (our own
`torch.save`, read back with `weights_only=True`), optional extra weight sets, and a JSON record
that names the run it belongs to, so a changed configuration never resumes a stale run. With
`trainable_only` (LoRA: the frozen base is the base model's own files) only the weights that train are
saved: a few MB instead of the whole model at every checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

PREFIX = "checkpoint-"
RECORD = "checkpoint.json"
TRAINER_STATE = "trainer_state.pt"
MODEL = "model.safetensors"


@dataclass(frozen=True)
class FoundCheckpoint:
    directory: Path
    record: dict[str, Any]


def write_checkpoint(
    output_dir: Path,
    index: int,
    model: torch.nn.Module,
    trainer_state: dict[str, Any],
    record: dict[str, Any],
    extra_weights: dict[str, dict[str, torch.Tensor]] | None = None,
    trainable_only: bool = False,
) -> Path:
    """Save into a temp dir, rename it to `checkpoint-<index>`, then delete older checkpoints."""
    import torch
    from safetensors.torch import save_file, save_model

    final = output_dir / f"{PREFIX}{index}"
    staging = output_dir / f".{final.name}.{uuid.uuid4().hex}.tmp"
    staging.mkdir(parents=True)
    if trainable_only:
        trainable = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
        save_file(trainable, str(staging / MODEL))
    else:
        save_model(model, str(staging / MODEL))
    for name, tensors in (extra_weights or {}).items():
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(staging / f"{name}.safetensors"))
    rng = {"torch_rng": torch.get_rng_state()}
    rng["cuda_rng"] = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    torch.save({**trainer_state, **rng}, staging / TRAINER_STATE)
    (staging / RECORD).write_text(json.dumps(record))
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    for older in checkpoint_dirs(output_dir):
        if older != final:
            shutil.rmtree(older, ignore_errors=True)
    return final


def latest_checkpoint(output_dir: Path, run_key: str) -> FoundCheckpoint | None:
    """The newest complete checkpoint whose record carries `run_key`. A checkpoint left incomplete
    (a process killed while deleting it) is skipped, never loaded."""
    for directory in reversed(checkpoint_dirs(output_dir)):
        record = _read_record(directory)
        if record is not None and record.get("run_key") == run_key:
            return FoundCheckpoint(directory, record)
    return None


def _read_record(directory: Path) -> dict[str, Any] | None:
    """The checkpoint's JSON record, or None unless the record, model and trainer state are all there."""
    if not all((directory / name).is_file() for name in (RECORD, MODEL, TRAINER_STATE)):
        return None
    try:
        record = json.loads((directory / RECORD).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def restore(found: FoundCheckpoint, model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
    """Load the model weights (all, or the trainable ones a `trainable_only` checkpoint holds) and RNG state;
    return the trainer state (optimizer, scheduler...)."""
    import torch
    from safetensors.torch import load_file, load_model

    if found.record.get("trainable_only"):
        model.load_state_dict(load_file(str(found.directory / MODEL), device=str(device)), strict=False)
    else:
        load_model(model, str(found.directory / MODEL), device=str(device))
    state = torch.load(found.directory / TRAINER_STATE, map_location="cpu", weights_only=True)
    torch.set_rng_state(state.pop("torch_rng"))
    cuda_rng = state.pop("cuda_rng")
    if cuda_rng:
        torch.cuda.set_rng_state_all(cuda_rng)
    return state


def load_extra_weights(found: FoundCheckpoint, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(found.directory / f"{name}.safetensors"))


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temp dirs start with a dot and are never listed)."""
    if not output_dir.is_dir():
        return []
    found = [
        p for p in output_dir.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name.removeprefix(PREFIX)))


def remove_checkpoints(output_dir: Path) -> None:
    """Delete every checkpoint and leftover temp dir (after a finished run, or a changed one)."""
    if not output_dir.is_dir():
        return
    for path in output_dir.iterdir():
        if path.is_dir() and path.name.startswith((PREFIX, f".{PREFIX}")):
            shutil.rmtree(path, ignore_errors=True)
