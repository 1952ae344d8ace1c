"""The causal-lm lifecycle end to end through the command line, on a tiny config-built Llama decoder: corpus
validation, LoRA continued pretraining, the perplexity gate against the base and the champion, forgetting,
the registry's rows and the audit chain."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from core.hashing import sha256_files
from governance.registry import Registry
from steward.cli import main

SUBJECTS = ["the customer", "my order", "the invoice", "the refund", "the delivery", "the account", "the ticket"]
VERBS = ["was", "is", "has been", "will be"]
STATES = ["late", "broken", "paid", "lost", "good", "slow", "fine", "new", "old", "great"]


def _documents(count: int, seed: int) -> list[str]:
    """Short support-desk notes from a small grammar: a domain a random decoder learns in a few steps."""
    rng = random.Random(seed)
    notes = []
    for index in range(count):
        sentences = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(STATES)}." for _ in range(4)]
        notes.append(f"note {index}: " + " ".join(sentences))
    return notes


def write_lm_project(root: Path, base_model: Path, documents: list[str] | None = None, **overrides: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    corpus = root / "notes.txt"
    corpus.write_text("\n".join(documents if documents is not None else _documents(120, 1)) + "\n", encoding="utf-8")
    config = {
        "name": "notes",
        "task": "causal-lm",
        "base_model": str(base_model),
        "seed": 3,
        "data": {"domain_corpus": "notes.txt"},
        "validation": {"min_rows": 20, "min_tokens": 500},
        "pretraining": {"max_steps": 12, "batch_size": 8, "max_seq_length": 32, "save_steps": 4,
                        "learning_rate": 0.02, "lora": {"r": 8, "alpha": 16}},
        "evaluation": {"reference_samples": 6, "max_forgetting": 10.0},
    }
    for section, values in overrides.items():
        config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
    path = root / "steward.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def registry_for(config_path: Path) -> Registry:
    return Registry.open(f"sqlite:///{config_path.parent / '.steward' / 'registry.db'}")


@pytest.mark.usefixtures("prefect_harness")
def test_lora_run_is_promoted_against_the_base_and_a_repeat_is_refused(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    project = write_lm_project(tmp_path / "p", tiny_llama_dir)
    code, first = run_json(capsys, "run", "--config", str(project))
    assert code == 0, first
    assert (first["version"], first["decision"]) == (1, "promoted")
    metrics, base = first["metrics"], first["base_metrics"]
    assert metrics["perplexity"] < 0.95 * base["perplexity"]
    low, high = metrics["perplexity_ci"]
    assert low <= metrics["perplexity"] <= high
    assert metrics["perplexity_gain_ci_low"] > 0
    assert "forgetting" in metrics and first["baseline_metrics"] is None
    assert first["classical_baseline_metrics"] is None

    # The same corpus and config give the same adapter: not lower than the champion, so refused (exit 1).
    code, second = run_json(capsys, "run", "--config", str(project))
    assert code == 1
    assert second["decision"] == "rejected" and second["pretraining_cache_hit"] is True
    assert second["baseline_metrics"]["perplexity"] == pytest.approx(metrics["perplexity"])
    assert any("not lower" in reason for reason in second["reasons"])

    with registry_for(project) as registry:
        detail = registry.get_version("notes", 1)
        files = {f.relative_path for f in detail.files}
        assert {"adapter_model.safetensors", "adapter_config.json", "steward_model.json"} <= files
        assert "model.safetensors" not in files  # a LoRA version stores its adapter alone
        assert {f.relative_path: f.sha256 for f in detail.files} == sha256_files(Path(detail.version.artifact_path))
        assert set(detail.datasets) == {"corpus", "train", "validation", "test"}
        assert registry.alias_version("notes", "champion").version == 1
        assert registry.audit.verify().ok
        types = [event.event_type for event in registry.audit.events("notes")]
        assert types.count("gate_decision") == 2 and "domain_adapted" in types


@pytest.mark.usefixtures("prefect_harness")
def test_a_candidate_that_forgets_too_much_is_refused(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    project = write_lm_project(tmp_path / "p", tiny_llama_dir, evaluation={"max_forgetting": 0.0})
    code, outcome = run_json(capsys, "run", "--config", str(project))
    assert code == 1 and outcome["decision"] == "rejected"
    assert outcome["metrics"]["forgetting"] > 0
    assert any("above max_forgetting" in reason for reason in outcome["reasons"])
    with registry_for(project) as registry:
        assert registry.alias_version("notes", "champion") is None


@pytest.mark.usefixtures("prefect_harness")
def test_a_corpus_of_repeated_documents_stops_before_training(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    documents = _documents(60, 2) + ["the same note, pasted again"] * 30
    project = write_lm_project(tmp_path / "p", tiny_llama_dir, documents)
    code = main(["run", "--config", str(project)])
    assert code == 1
    assert "duplicates at most 10.0%" in capsys.readouterr().err
    with registry_for(project) as registry:
        types = [event.event_type for event in registry.audit.events("notes")]
        assert "validation_failed" in types and "version_registered" not in types


def test_an_undecodable_corpus_is_one_line_naming_the_file(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    project = write_lm_project(tmp_path / "p", tiny_llama_dir)
    (project.parent / "notes.txt").write_bytes(b"fine line\n\xff\xfe broken\n")
    code = main(["run", "--config", str(project)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("steward: error:")]
    assert code == 2
    assert len(errors) == 1 and "notes.txt: line 2" in errors[0] and "not UTF-8" in errors[0]
