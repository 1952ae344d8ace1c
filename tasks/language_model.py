"""A saved causal language model: loading it (full weights, or a LoRA adapter merged into its verified base) and
using it: batched and streamed generation, chat prompts, per-text perplexity.

A saved folder holds `steward_model.json` (task `causal-lm`), the tokenizer, and either the weights
(config.json + *.safetensors) or a peft LoRA adapter (adapter_config.json + adapter_model.safetensors) trained
over the base that the manifest names and fingerprints.
"""

from __future__ import annotations

import json
import math
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from core.errors import BadInputError, CheckFailedError, exception_line
from core.hashing import ModelFiles
from core.vocabulary import CAUSAL_LM
from tasks import perplexity
from tasks.manifest import ModelManifest
from tasks.modeling import (
    Device,
    check_model_dir,
    load_tokenizer,
    pick_device,
    quiet_transformers,
    resolve_base_model,
    weight_format_kwargs,
)

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FinishReason = Literal["stop", "length"]


def load_causal_lm(
    folder: Path, device: Device | None = None, base_dir: Path | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelManifest]:
    """The model (fp32, in eval mode, on `device`: default the best one here), its tokenizer (pad = eos when it
    has no pad token) and its manifest. An adapter is merged into its base (`base_dir`, else the manifest's
    `base_model`) once the base's files are shown to be the ones it was trained on."""
    folder = Path(folder)
    manifest = ModelManifest.read(folder)
    if manifest.task != CAUSAL_LM:
        raise BadInputError(f"{folder}: a {manifest.task} model, not a causal language model")
    quiet_transformers()
    model = _load_adapted(folder, manifest, base_dir) if manifest.adapter else _load_full(folder)
    tokenizer = load_tokenizer(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = device or pick_device()
    return model.to(device.torch_device).eval(), tokenizer, manifest


def _load_full(folder: Path) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    check_model_dir(folder)
    for weights in sorted(folder.glob("*.safetensors")):
        _check_safetensors(weights)
    return AutoModelForCausalLM.from_pretrained(
        str(folder), local_files_only=True, dtype=torch.float32, **weight_format_kwargs(folder)
    )


def _load_adapted(folder: Path, manifest: ModelManifest, base_dir: Path | None) -> PreTrainedModel:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (folder / name).is_file():
            raise BadInputError(f"{folder / name}: missing (the manifest says this folder holds a LoRA adapter)")
    _check_adapter_config(folder / ADAPTER_CONFIG)
    _check_safetensors(folder / ADAPTER_WEIGHTS)
    base = _verified_base(folder, manifest, base_dir)
    model = AutoModelForCausalLM.from_pretrained(
        str(base), local_files_only=True, dtype=torch.float32, **weight_format_kwargs(base)
    )
    try:
        adapted = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise BadInputError(f"{folder}: the LoRA adapter does not load over {base} ({exception_line(exc)})") from None
    return adapted.merge_and_unload()  # one plain model: no adapter branches left to run at inference


def _verified_base(folder: Path, manifest: ModelManifest, base_dir: Path | None) -> Path:
    if base_dir is None and not manifest.base_model:
        raise BadInputError(f"{folder}: an adapter whose manifest names no base_model (give the base folder)")
    base = resolve_base_model(str(base_dir) if base_dir is not None else manifest.base_model)
    if ModelFiles.of(base).fingerprint != manifest.base_fingerprint:
        raise CheckFailedError(
            f"{base}: base model files differ from the ones the adapter in {folder} was trained on"
        )
    return base


def _check_adapter_config(path: Path) -> None:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: not a readable adapter config ({exception_line(exc)})") from None
    if not isinstance(config, dict):
        raise BadInputError(f"{path}: not a readable adapter config (not a JSON object)")


def _check_safetensors(path: Path) -> None:
    """Refuse a damaged weights file (truncated, say) in one line naming it, before any loader tracebacks."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as exc:  # safetensors raises its own error type, or OSError
        raise BadInputError(f"{path}: not a readable safetensors file ({exception_line(exc)})") from None


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int  # generated tokens, eos included when the model ended the text
    finish_reason: FinishReason  # "stop": eos or a stop string; "length": max_new_tokens reached


class Generator:
    """A loaded causal LM ready to complete prompts. Prompts are tokenized as they are, without added special
    tokens: a chat prompt (`chat_prompt`) already carries its own."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        manifest: ModelManifest,
        device: Device,
        name: str | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.device = device
        self._name = name

    @property
    def name(self) -> str:
        return self._name or str(self.model.config.name_or_path)

    @property
    def max_length(self) -> int:
        """Tokens per block the model was trained on (what `score` windows texts by)."""
        return self.manifest.max_length

    def generate(
        self,
        prompts: list[str],
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        seed: int = 0,
        stop: list[str] | None = None,
    ) -> list[Completion]:
        """Complete every prompt in one left-padded batch. Temperature 0 is greedy; above it, sampling from
        torch's generator seeded with `seed`, reproducible for the same seed and the same batch of prompts.
        A stop string ends a text where it first appears (the string itself left out)."""
        if not prompts:
            return []
        encoded = [self._encode(prompt) for prompt in prompts]
        input_ids, attention_mask = self._left_padded(encoded)
        config = self._generation_config(max_new_tokens, temperature)
        criteria = [_StopStrings(self.tokenizer, stop, input_ids.shape[1])] if stop else []
        with perplexity.seeded(seed, self.device.torch_device), torch.no_grad(), self.device.autocast():
            output = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                stopping_criteria=StoppingCriteriaList(criteria),
            )
        generated = output[:, input_ids.shape[1] :].tolist()
        return [
            self._completion(len(ids), tokens, stop or [])
            for ids, tokens in zip(encoded, generated, strict=True)
        ]

    def stream(
        self, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0, seed: int = 0
    ) -> Iterator[str]:
        """The completion of one prompt, in text pieces as tokens are produced (a piece is held back only while
        it ends inside an unfinished UTF-8 character). Generation runs in a thread and produces the same tokens
        as `generate([prompt], ...)`, so the pieces join into its text. A reader that stops early stops it."""
        config = self._generation_config(max_new_tokens, temperature)
        input_ids, attention_mask = self._left_padded([self._encode(prompt)])
        tokens = _TokenQueue()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with perplexity.seeded(seed, self.device.torch_device), torch.no_grad(), self.device.autocast():
                    self.model.generate(
                        input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                        streamer=tokens, stopping_criteria=StoppingCriteriaList([tokens.cancel]),
                    )
            except BaseException as exc:  # handed to the reading thread, raised there
                failure.append(exc)
                tokens.end()

        thread = threading.Thread(target=run, name="steward-generate", daemon=True)
        thread.start()
        try:
            yield from self._pieces(tokens)
        finally:
            tokens.cancel.event.set()  # finished, or the reader stopped early: generation ends at its next token
            thread.join()
        if failure:
            raise failure[0]

    def _pieces(self, tokens: _TokenQueue) -> Iterator[str]:
        generated: list[int] = []
        emitted = ""
        for ids in tokens:
            generated += ids
            text = self._decode(generated)
            settled = text.rstrip("\ufffd")  # an unfinished multi-byte character may still change
            if len(settled) > len(emitted) and settled.startswith(emitted):
                yield settled[len(emitted) :]
                emitted = settled
        text = self._decode(generated)
        if len(text) > len(emitted) and text.startswith(emitted):
            yield text[len(emitted) :]

    def _decode(self, tokens: list[int]) -> str:
        """Text as generated: special tokens dropped, no 'clean-up' of spaces (which could rewrite text already
        streamed)."""
        return self.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def chat_prompt(self, messages: list[dict]) -> str:
        """The conversation as the model's chat template writes it, with the assistant's turn opened."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise BadInputError(f"{self.name}: the tokenizer has no chat template, so it cannot take chat messages")
        try:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # a template error (jinja2) on the given messages
            reason = exception_line(exc)
            raise BadInputError(f"{self.name}: the chat template rejects these messages ({reason})") from None

    def score(self, texts: list[str], batch_size: int = 8) -> list[float]:
        """Each text's perplexity (NaN for a text with nothing to predict), scored in blocks of `max_length`."""
        losses = perplexity.document_losses(
            self.model, self.tokenizer, texts, self.max_length, batch_size=batch_size, device=self.device
        )
        return [
            math.exp(nll / tokens) if tokens else math.nan
            for nll, tokens in zip(losses.nll.tolist(), losses.tokens.tolist(), strict=True)
        ]

    def _encode(self, prompt: str) -> list[int]:
        """The prompt's tokens; an empty prompt starts from bos (eos without one), as sampled texts do."""
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if ids:
            return ids
        start = self.tokenizer.bos_token_id
        return [start if start is not None else self.tokenizer.eos_token_id]

    def _left_padded(self, encoded: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left padding, so that every row's next token is generated at the same (last) position."""
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        return input_ids.to(self.device.torch_device), attention_mask.to(self.device.torch_device)

    def _generation_config(self, max_new_tokens: int, temperature: float) -> GenerationConfig:
        """Greedy, or plain sampling at `temperature`: every filter (top-k, top-p, penalties) set to neutral, so
        that nothing in the checkpoint's own generation_config.json changes the distribution."""
        from transformers import GenerationConfig

        if temperature < 0:
            raise BadInputError(f"temperature must be 0 (greedy) or more, got {temperature}")
        if max_new_tokens < 1:
            raise BadInputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        return GenerationConfig(
            **sampling, top_k=0, top_p=1.0, typical_p=1.0, min_p=0.0, repetition_penalty=1.0,
            no_repeat_ngram_size=0, epsilon_cutoff=0.0, eta_cutoff=0.0, max_new_tokens=max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
        )

    def _completion(self, prompt_tokens: int, generated: list[int], stop: list[str]) -> Completion:
        """One row of the output: its text up to eos (or the padding after a stop string), cut at a stop string."""
        ends = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        end = next((index for index, token in enumerate(generated) if token in ends), len(generated))
        text = self._decode(generated[:end])
        cut = min((index for index in (text.find(s) for s in stop if s) if index >= 0), default=None)
        if cut is not None:
            return Completion(text[:cut], prompt_tokens, end, "stop")
        if end < len(generated):
            return Completion(text, prompt_tokens, end + 1, "stop")  # the model's own eos, counted
        return Completion(text, prompt_tokens, end, "length")


class _Cancelled(StoppingCriteria):
    """Ends generation once its event is set (by whoever reads the stream)."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _TokenQueue(BaseStreamer):
    """What `generate` streams (the prompt first, then each new token), handed to the reading thread as lists of
    new token ids, until `end`."""

    def __init__(self) -> None:
        self.queue: queue.Queue[list[int] | None] = queue.Queue()
        self.cancel = _Cancelled()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_seen:
            self.queue.put(value.flatten().tolist())
        self._prompt_seen = True

    def end(self) -> None:
        self.queue.put(None)

    def __iter__(self) -> Iterator[list[int]]:
        while (ids := self.queue.get()) is not None:
            yield ids


class _StopStrings(StoppingCriteria):
    """Ends a row once its generated text (the prompt not included, unlike transformers' `stop_strings`, which
    also match across the prompt's end) contains a stop string."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: list[str], prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.stop = [string for string in stop if string]
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(
            input_ids[:, self.prompt_width :], skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        done = [any(string in text for string in self.stop) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def load_generator(folder: Path, device: Device | None = None, base_dir: Path | None = None) -> Generator:
    device = device or pick_device()
    model, tokenizer, manifest = load_causal_lm(folder, device, base_dir)
    return Generator(model, tokenizer, manifest, device, name=Path(folder).name)
