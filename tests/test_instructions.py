"""Instruction pairs after continued pretraining (`data.train` with prompt/response columns), on the tiny decoder:
the loss covers the response alone, the run registers one adapter holding both stages, the held-out pairs' loss
falls, and a bad pairs file is one line naming the file and row, exit 2, nothing registered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import BadInputError
from steward.cli import main
from tasks.data import load_instructions
from tasks.modeling import load_tokenizer
from tasks.objectives.base import IGNORED
from tasks.objectives.instructions import encode_pairs, prompt_text
from tests.test_flow_language_model import _documents, registry_for, run_json, write_lm_project


def write_pairs(path: Path, count: int) -> Path:
    """Requests for support-desk notes answered by notes of the corpus's own grammar (`_documents`): pairs from the
    domain the continued pretraining adapted to, which a tiny decoder learns to answer in a few steps."""
    notes = _documents(count, 7)
    rows = [{"prompt": f"write note {i}", "response": note.split(": ", 1)[1]} for i, note in enumerate(notes)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_only_the_response_and_its_end_token_are_predicted(tmp_path: Path, tiny_llama_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_llama_dir)
    pairs = load_instructions(write_pairs(tmp_path / "pairs.jsonl", 3), "instructions")
    encoded = encode_pairs(tokenizer, pairs, 64)
    prompt_ids = tokenizer(prompt_text(tokenizer, "write note 0"), add_special_tokens=False)["input_ids"]
    response = pairs.labels[0]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    first = encoded[0]
    assert first.input_ids == prompt_ids + response_ids
    assert first.labels == [IGNORED] * len(prompt_ids) + response_ids
    assert "write note 0" in prompt_text(tokenizer, "write note 0")  # the chat template's user turn


def test_a_prompt_that_fills_the_sequence_is_named_by_row(tmp_path: Path, tiny_llama_dir: Path) -> None:
    path = write_pairs(tmp_path / "pairs.jsonl", 3)
    rows = path.read_text(encoding="utf-8").splitlines()
    rows[1] = json.dumps({"prompt": "a very long question " * 40, "response": "yes"})
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"pairs.jsonl: row 2: the prompt takes \d+ tokens"):
        encode_pairs(load_tokenizer(tiny_llama_dir), load_instructions(path, "instructions"), 32)


@pytest.mark.usefixtures("prefect_harness")
def test_pairs_tune_the_adapter_after_continued_pretraining(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    project = write_lm_project(tmp_path / "p", tiny_llama_dir, data={"train": "pairs.jsonl"},
                               pretraining={"max_epochs": 3.0})
    write_pairs(project.parent / "pairs.jsonl", 60)
    code, outcome = run_json(capsys, "run", "--config", str(project))
    assert code == 0, outcome
    with registry_for(project) as registry:
        detail = registry.get_version("notes", 1)
        assert {"instructions", "instructions-validation", "corpus", "test"} <= set(detail.datasets)
        files = {f.relative_path for f in detail.files}
        assert "adapter_model.safetensors" in files and "model.safetensors" not in files
        metrics = registry.run_metrics(outcome["run_id"])
        # 12 steps of a 2-layer random decoder: the held-out responses' loss falls (5.83 to 5.75 nats at seed 3).
        assert metrics["instruction_loss_after"] < metrics["instruction_loss_before"] - 0.05
        assert metrics["instruction_steps"] == 12
        assert registry.audit.verify().ok
    report = tmp_path / "v1.md"
    registry_url = f"sqlite:///{project.parent / '.steward' / 'registry.db'}"
    assert main(["audit", "report", "notes:1", "--format", "md", "--out", str(report), "--registry", registry_url]) == 0
    assert "then tuned on 54 instruction pairs" in report.read_text(encoding="utf-8")


@pytest.mark.parametrize(("content", "expected"), [
    ('{"prompt": "hi"}\n', "pairs.jsonl: no response column 'response'"),
    ('{"prompt": "hi", "response": "hello"}\n{"prompt": "and?", "response": " "}\n',
     "pairs.jsonl: row 2 has no response"),
])
@pytest.mark.usefixtures("prefect_harness")
def test_a_bad_pairs_file_is_one_line_and_nothing_is_registered(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str,
) -> None:
    project = write_lm_project(tmp_path / "p", tiny_llama_dir, data={"train": "pairs.jsonl"},
                               pretraining={"max_epochs": 3.0})
    (project.parent / "pairs.jsonl").write_text(content, encoding="utf-8")
    code = main(["run", "--config", str(project)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("steward: error:")]
    assert code == 2
    assert len(errors) == 1 and expected in errors[0]
    with registry_for(project) as registry:
        assert "version_registered" not in {e.event_type for e in registry.audit.events()}
        assert registry.audit.verify().ok
