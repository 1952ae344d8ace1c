"""The retraining flow end to end through the command line, on a tiny config-built BERT."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import pytest
import yaml

from core.hashing import sha256_files
from governance.registry import Registry
from steward.cli import main

LABEL_WORDS = {
    "praise": ["good", "great", "love", "excellent", "wonderful", "amazing", "happy", "perfect"],
    "complaint": ["bad", "terrible", "hate", "awful", "horrible", "worst", "rude", "broken"],
    "billing": ["refund", "invoice", "payment", "price", "order", "account", "delivery", "ticket"],
}
FILLER = ["the", "a", "service", "staff", "phone", "it", "was", "is", "really", "very", "this", "my", "and"]


def _sentences(rng: random.Random, count: int) -> list[tuple[str, str]]:
    rows = []
    for index in range(count):
        label = sorted(LABEL_WORDS)[index % len(LABEL_WORDS)]
        words = rng.sample(FILLER, 4) + rng.sample(LABEL_WORDS[label], 2)
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def write_project(root: Path, base_model: Path, **overrides: dict) -> Path:
    """A small three-class dataset and a config that trains the tiny model in seconds."""
    rng = random.Random(5)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", 150), ("val", 45), ("test", 60)):
        _write_csv(data / f"{name}.csv", _sentences(rng, count))
    (data / "corpus.txt").write_text("\n".join(text for text, _ in _sentences(rng, 400)) + "\n", encoding="utf-8")
    config = {
        "name": "tickets",
        "base_model": str(base_model),
        "seed": 3,
        "data": {
            "train": "data/train.csv",
            "validation": "data/val.csv",
            "test": "data/test.csv",
            "domain_corpus": "data/corpus.txt",
        },
        "validation": {"min_rows": 20},
        "pretraining": {"max_steps": 4, "batch_size": 8, "max_seq_length": 32, "head_warmup_steps": 2, "save_steps": 2},
        "finetuning": {"epochs": 4, "batch_size": 8, "max_seq_length": 32, "learning_rate": 5.0e-3},
        "evaluation": {"min_score": 0.0},
    }
    for section, values in overrides.items():
        config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
    path = root / "steward.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def project(tmp_path: Path, tiny_model_dir: Path) -> Path:
    return write_project(tmp_path, tiny_model_dir)


def registry_for(config_path: Path) -> Registry:
    return Registry.open(f"sqlite:///{config_path.parent / '.steward' / 'registry.db'}")


@pytest.mark.usefixtures("prefect_harness")
def test_first_run_registers_a_champion_and_second_run_compares(
    project: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, first = run_json(capsys, "run", "--config", str(project))
    assert code == 0
    assert (first["model"], first["version"], first["promoted"]) == ("tickets", 1, True)
    assert first["baseline_metrics"] is None
    assert 0.6 <= first["metrics"]["macro_f1"] <= 1.0
    classical = first["classical_baseline_metrics"]
    assert set(classical) == {"macro_f1", "accuracy"} and 0.0 <= classical["macro_f1"] <= 1.0
    assert 0.0 <= first["metrics"]["accuracy"] <= 1.0
    assert Path(first["report"]).is_file()

    code, second = run_json(capsys, "run", "--config", str(project))
    assert code == 0
    assert second["version"] == 2
    assert second["baseline_metrics"] == first["metrics"]
    assert second["pretraining_cache_hit"] is True

    with registry_for(project) as registry:
        detail = registry.get_version("tickets", 2)
        assert detail.version.parent_version == 1
        assert set(detail.datasets) == {"train", "validation", "test", "corpus"}
        on_disk = sha256_files(Path(detail.version.artifact_path))
        assert {f.relative_path: f.sha256 for f in detail.files} == on_disk
        run = registry.get_run(second["run_id"])
        assert run.status == "completed"
        recorded = registry.run_metrics(run.id)
        assert recorded["classical_baseline_macro_f1"] == second["classical_baseline_metrics"]["macro_f1"]
        assert recorded["classical_baseline_accuracy"] == second["classical_baseline_metrics"]["accuracy"]
        # self-training on the corpus: pseudo-labels added, and the average of the first model and the student
        # kept, as it is not significantly worse on validation (separable tickets: both are near perfect)
        assert 0 < recorded["self_training_pseudo_labels"] <= 2 * 150
        assert recorded["self_training_kept"] == 1.0
        assert recorded["self_training_validation_after"] >= recorded["self_training_validation_before"] - 0.1
        assert registry.audit.verify().ok
        types = [event.event_type for event in registry.audit.events("tickets")]
        assert types.count("stage_completed") >= 14
        assert "gate_decision" in types
    _assert_visible_in_prefect(run.flow_run_id, second["version"])


def _assert_visible_in_prefect(flow_run_id: str | None, version: int) -> None:
    """The run's flow run completed in Prefect and its artifacts are there for the UI."""
    from prefect import get_client
    from prefect.artifacts import Artifact

    assert flow_run_id is not None
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(flow_run_id).state.is_completed()
    gate = Artifact.get("tickets-gate")
    assert gate is not None and f"tickets v{version}: **promoted**" in gate.data
    assert Artifact.get("tickets-metrics") is not None
    assert Artifact.get("tickets-validation") is not None


@pytest.mark.usefixtures("prefect_harness")
def test_validation_failure_stops_before_training(
    tmp_path: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_project(tmp_path, tiny_model_dir, validation={"min_rows": 1000})
    code, payload = run_json(capsys, "run", "--config", str(config))
    assert code == 1
    assert "validation failed" in payload["error"]
    assert "train: at least 1000 rows — 150 rows" in payload["error"]
    with registry_for(config) as registry:
        assert registry.list_models() == []
        events = registry.audit.events("tickets")
        assert [e.event_type for e in events].count("validation_failed") == 1
        assert events[-1].event_type == "run_failed"
        assert registry.audit.verify().ok


@pytest.mark.usefixtures("prefect_harness")
def test_validate_command_reports_failed_expectations(
    tmp_path: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_project(tmp_path, tiny_model_dir)
    code, payload = run_json(capsys, "validate", "--config", str(config))
    assert (code, payload["success"], payload["failed_expectations"]) == (0, True, [])

    bad = tmp_path / "bad.csv"
    _write_csv(bad, [("good great", "praise")] * 30 + [("", "complaint"), ("refund", "unknown-label")])
    code, payload = run_json(capsys, "validate", "--config", str(config), "--data", str(bad))
    assert code == 1
    assert payload["success"] is False
    failed = payload["failed_expectations"]
    assert "train: text nulls at most 0.0% — 1 null row (3.1%)" in failed
    assert any(line.startswith("train: text duplicates at most 10.0% — duplicate fraction 93.5%") for line in failed)


@pytest.mark.usefixtures("prefect_harness")
def test_gate_rejects_below_the_floor(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A number floor works as it always did, whatever the classical baseline scores."""
    config = write_project(tmp_path, tiny_model_dir, evaluation={"min_score": 1.01})
    code, payload = run_json(capsys, "run", "--config", str(config))
    assert code == 1
    assert payload["promoted"] is False and payload["decision"] == "rejected"
    assert payload["reasons"][0].endswith("is below the floor min_score 1.0100")
    with registry_for(config) as registry:
        assert registry.alias_version("tickets", "champion") is None
        decision = registry.gate_decisions("tickets")[-1]
        assert (decision.passed, decision.outcome, decision.min_score) == (False, "rejected", 1.01)


@pytest.mark.usefixtures("prefect_harness")
def test_the_baseline_gate_refuses_a_candidate_below_the_classical_baseline(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """`min_score: baseline` (the default): a first model that does not reach TF-IDF + LR on the same
    test set is refused. This one barely trains (one epoch at a tiny learning rate); TF-IDF separates
    the tickets' vocabularies easily."""
    config = write_project(tmp_path, tiny_model_dir, pretraining={"enabled": False},
                           finetuning={"epochs": 1, "learning_rate": 1.0e-7}, evaluation={"min_score": "baseline"})
    code, payload = run_json(capsys, "run", "--config", str(config))
    assert code == 1
    assert (payload["promoted"], payload["decision"]) == (False, "rejected")
    candidate, classical = payload["metrics"]["macro_f1"], payload["classical_baseline_metrics"]["macro_f1"]
    assert candidate < classical
    reason = f"macro_f1 {candidate:.4f} is below the classical baseline (TF-IDF + LR) {classical:.4f}"
    assert payload["reasons"][0] == reason
    with registry_for(config) as registry:
        assert registry.alias_version("tickets", "champion") is None
        decision = registry.gate_decisions("tickets")[-1]
        assert (decision.passed, decision.outcome, decision.champion_version) == (False, "rejected", None)
        assert decision.min_score == pytest.approx(classical)
        assert decision.reasons[0] == reason
        assert registry.run_metrics(payload["run_id"])["classical_baseline_macro_f1"] == classical


@pytest.mark.usefixtures("prefect_harness")
def test_a_training_label_with_one_row_fails_validation(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_project(tmp_path, tiny_model_dir)
    with (tmp_path / "data" / "train.csv").open("a", encoding="utf-8") as handle:
        handle.write("please refund my last invoice,refund\n")
    code, payload = run_json(capsys, "validate", "--config", str(config))
    assert (code, payload["success"]) == (1, False)
    assert payload["failed_expectations"] == [
        "train: label at least 5 training rows per label — "
        "label 'refund' has 1 training row (min_examples_per_label 5)"
    ]


@pytest.mark.usefixtures("prefect_harness")
def test_approval_needs_someone_other_than_the_author(
    tmp_path: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STEWARD_ACTOR", "alice")
    config = write_project(tmp_path, tiny_model_dir, evaluation={"require_approval": True})
    code, payload = run_json(capsys, "run", "--config", str(config))
    assert (code, payload["decision"], payload["promoted"]) == (0, "challenger", False)
    registry_url = f"sqlite:///{tmp_path / '.steward' / 'registry.db'}"

    code = main(["registry", "promote", "tickets:1", "--registry", registry_url])
    assert code == 1
    monkeypatch.setenv("STEWARD_ACTOR", "bob")
    code = main(["registry", "promote", "tickets:1", "--approver", "bob", "--registry", registry_url])
    assert code == 0
    with registry_for(config) as registry:
        assert registry.alias_version("tickets", "champion").version == 1
        types = [event.event_type for event in registry.audit.events("tickets")]
        assert "promotion_refused" in types and "model_promoted" in types


@pytest.mark.usefixtures("prefect_harness")
def test_single_stages_pretrain_finetune_evaluate(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, pretrained = run_json(capsys, "pretrain", "--config", str(project))
    assert code == 0 and pretrained["cache_hit"] is False
    assert pretrained["perplexity_after"] < pretrained["perplexity_before"]
    code, again = run_json(capsys, "pretrain", "--config", str(project))
    assert (code, again["cache_hit"], again["model_dir"]) == (0, True, pretrained["model_dir"])

    code, finetuned = run_json(capsys, "finetune", "--config", str(project))
    assert (code, finetuned["version"]) == (0, 1)
    with registry_for(project) as registry:
        assert registry.alias_version("tickets", "champion") is None

    code, evaluated = run_json(capsys, "evaluate", "--config", str(project), "--model", "tickets:1")
    assert code == 0
    assert evaluated["metrics"]["macro_f1"] == pytest.approx(finetuned["metrics"]["macro_f1"])

    weights = Path(finetuned["artifact_path"]) / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    code, refused = run_json(capsys, "evaluate", "--config", str(project), "--model", "tickets:1")
    assert code == 1
    assert "model.safetensors: sha256 mismatch" in refused["error"]


@pytest.mark.usefixtures("prefect_harness")
def test_auto_gives_a_sentence_encoders_corpus_to_self_training(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """A base that ships a sentence-transformers pooling config gets no continued pretraining from `auto`
    (it did not reliably pay for MiniLM in bench/quality.py): fine-tuning starts from the base and the domain
    corpus feeds self-training. `steward pretrain` on it says so in one line naming the key."""
    encoder = tmp_path / "sentence-encoder"
    shutil.copytree(tiny_model_dir, encoder)
    (encoder / "1_Pooling").mkdir()
    (encoder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    project = write_project(tmp_path / "project", encoder)

    code, finetuned = run_json(capsys, "finetune", "--config", str(project))
    assert code == 0
    with registry_for(project) as registry:
        recorded = registry.run_metrics(finetuned["run_id"])
        assert "pretrain_steps" not in recorded and recorded["self_training_pseudo_labels"] > 0
        types = [event.event_type for event in registry.audit.events("tickets")]
        assert "domain_adapted" not in types

    code, refused = run_json(capsys, "pretrain", "--config", str(project))
    assert code == 2
    assert "pretraining.objective 'auto' runs no continued pretraining for the sentence encoder" in refused["error"]
