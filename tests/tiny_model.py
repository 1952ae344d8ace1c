"""A tiny randomly initialised BERT with its own WordPiece vocabulary, saved like any local base model.

It has no masked-LM head (like the packaged MiniLM), so the pretraining stage's head warm-up runs.
Built offline in well under a second; used through the `tiny_model_dir` fixture.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the suite may reach the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORD_LIST = """
the a an and or but of to in on at for with from by is are was were be been it this that these those
i you he she we they my your our their me him her us them not no yes very really so too just also
good great excellent love loved wonderful amazing fantastic perfect best happy nice fine pleasant
bad terrible awful hate hated horrible worst poor boring broken sad ugly rude slow disappointing
movie film phone food service place battery screen price quality staff story acting plot music
cat dog sat mat ran park sun moon red blue green big small old new day night time work home
customer ticket support refund order account password login error invoice payment delivery
"""


def tiny_vocab() -> dict[str, int]:
    """Special tokens, a word list, then single characters and their `##` continuations."""
    characters = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = [*SPECIAL_TOKENS, *WORD_LIST.split(), *characters, *(f"##{c}" for c in characters)]
    return {token: index for index, token in enumerate(dict.fromkeys(tokens))}


def build_tiny_bert(directory: Path, with_mlm_head: bool = False, seed: int = 0) -> Path:
    """Save a 2-layer, 32-wide BERT (safetensors) and its tokenizer into `directory`."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizer

    vocab = tiny_vocab()
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=vocab["[PAD]"],
    )
    torch.manual_seed(seed)
    model = BertForMaskedLM(config) if with_mlm_head else BertModel(config, add_pooling_layer=False)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=128)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT without an MLM head, shared by the whole test session (treat it as read-only)."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model")


# SmolLM2's chat template, shortened: ChatML turns, the assistant's turn opened when a reply is wanted.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_llama(directory: Path, seed: int = 0) -> Path:
    """Save a 2-layer, 32-wide Llama decoder (safetensors, tied embeddings like SmolLM2) with a byte-level BPE
    tokenizer trained on the word list, ChatML special tokens and a chat template, into `directory`."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([WORD_LIST] * 4, vocab_size=400, min_frequency=1,
                            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|im_end|>", unk_token="<|endoftext|>", model_max_length=256,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama decoder, shared by the whole test session (treat it as read-only)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model")
