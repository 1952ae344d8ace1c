"""`steward demo --task causal-lm` writes a real corpus (the docstrings of this Python's standard library) and a
config that validates; the same interpreter writes the same files."""

from __future__ import annotations

from pathlib import Path

from core.config import load_config
from steward.demo.python_docs import CORPUS_DIR, MIN_CHARS, write_lm_demo
from tasks.data import load_documents, split_documents


def test_the_demo_corpus_and_config_are_ready_to_run(tmp_path: Path) -> None:
    config_path = write_lm_demo(tmp_path)
    config = load_config(config_path)
    assert (config.task, config.base_model, config.pretraining.method) == ("causal-lm", "smollm2", "lora")
    corpus = load_documents(config.resolve(config.data.domain_corpus), config.data.text_column)
    assert corpus.rows >= 300 and corpus.source == tmp_path / CORPUS_DIR
    assert all(len(text or "") >= MIN_CHARS for text in corpus.texts)
    assert len(set(corpus.texts)) == corpus.rows
    assert (corpus.source / "collections.Counter.txt").is_file()
    splits = split_documents(corpus, config.data.corpus_validation, config.data.corpus_test, config.seed)
    assert splits.test.rows >= 10 and splits.validation.rows >= 10

    before = {path.name: path.stat().st_mtime_ns for path in corpus.source.iterdir()}
    write_lm_demo(tmp_path)
    assert {path.name: path.stat().st_mtime_ns for path in corpus.source.iterdir()} == before
