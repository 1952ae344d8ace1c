"""`steward monitor` end to end on a tiny model: drift found and not found, recorded, audited, cached."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
import yaml

from steward.cli import main
from tests.test_flow_retrain import FILLER, _sentences, registry_for, run_json, write_project

SHIFTED_WORDS = [
    "kubernetes", "pod", "crashloop", "helm", "ingress", "namespace", "terraform", "vpc", "subnet", "0x7f3a",
    "#4471", "v2.13.0", "OOMKilled", "--force", "https://status.example.com", "[ERROR]", "(exit=137)",
]


def _write_texts(path: Path, texts: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text"])
        writer.writerows([text] for text in texts)
    return path


def _shifted_texts(rng: random.Random, count: int) -> list[str]:
    """Longer tickets in another vocabulary, with digits and punctuation: drift on several signals."""
    return [" ".join(rng.sample(SHIFTED_WORDS, 9) + rng.sample(FILLER, 2)) for _ in range(count)]


@pytest.fixture
def champion_project(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    config = write_project(tmp_path, tiny_model_dir, pretraining={"enabled": False})
    code, outcome = run_json(capsys, "run", "--config", str(config))
    assert (code, outcome["promoted"]) == (0, True)
    return config


@pytest.mark.usefixtures("prefect_harness")
def test_shifted_batch_is_flagged_recorded_and_audited(
    champion_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    current = _write_texts(champion_project.parent / "shifted.csv", _shifted_texts(random.Random(1), 120))
    code, outcome = run_json(
        capsys, "monitor", "--config", str(champion_project), "--current", str(current), "--fail-on-drift"
    )
    assert code == 1
    assert (outcome["drift_detected"], outcome["finding"], outcome["retrain"]) == (True, "drift", "requested")
    assert outcome["reference"] == "test"
    assert outcome["drift_share"] >= outcome["threshold"] == 0.3
    assert {"text", "length", "non_letter_share"} <= set(outcome["drifted_signals"])
    assert {s["name"] for s in outcome["signals"]} == {
        "text", "length", "oov_share", "non_letter_share", "prediction", "embedding",
    }
    inputs, class_mix = (Path(outcome[key]).read_text(encoding="utf-8") for key in ("report", "class_mix_report"))
    assert all(f"Value Drift for column {column}" in inputs for column in ("text", "length"))
    assert "Value Drift for column prediction" in class_mix

    with registry_for(champion_project) as registry:
        [drift] = registry.drift_reports("tickets")
        assert drift.drift_detected and drift.drift_share == pytest.approx(outcome["drift_share"])
        assert drift.version_id == registry.alias_version("tickets", "champion").id
        assert drift.run_id == outcome["run_id"] and registry.get_run(drift.run_id).status == "completed"
        assert "drift_detected" in [event.event_type for event in registry.audit.events("tickets")]
        assert registry.audit.verify().ok
        assert len(registry.list_versions("tickets")) == 1  # monitoring never registers a model

    markdown = champion_project.parent / "v1.md"
    assert main(["audit", "report", "tickets:1", "--format", "md", "--out", str(markdown),
                 "--config", str(champion_project)]) == 0
    history = markdown.read_text(encoding="utf-8").split("Drift history", 1)[1]
    assert "drift" in history and "text" in history and str(current) in history and outcome["report"] in history


@pytest.mark.usefixtures("prefect_harness")
def test_batch_from_the_training_distribution_is_not_flagged(
    champion_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh = [text for text, _ in _sentences(random.Random(99), 120)]
    current = _write_texts(champion_project.parent / "fresh.csv", fresh)
    before = _cached_results(champion_project)  # what the run cached (its evaluations)
    code, outcome = run_json(
        capsys, "monitor", "--config", str(champion_project), "--current", str(current), "--fail-on-drift"
    )
    assert (code, outcome["drift_detected"]) == (0, False)
    assert outcome["drift_share"] < 0.3
    (reference,) = _cached_results(champion_project) - before  # the champion's scored reference, in Prefect's cache
    assert "tasks.drift.ScoredBatch" in reference.read_text(encoding="utf-8")
    written = reference.stat().st_mtime_ns

    code, again = run_json(capsys, "monitor", "--config", str(champion_project), "--current", str(current))
    assert (code, again["drift_share"]) == (0, outcome["drift_share"])
    assert _cached_results(champion_project) == before | {reference}  # reused by the next check, not scored again
    assert reference.stat().st_mtime_ns == written


def _cached_results(config: Path) -> set[Path]:
    """The task results Prefect keeps in the workspace (flows/steps.py: evaluations, scored references)."""
    folder = config.parent / ".steward" / "cache" / "prefect-results"
    return {path for path in folder.iterdir() if path.is_file()} if folder.is_dir() else set()


@pytest.mark.usefixtures("prefect_harness")
def test_labelled_batch_adds_label_drift(champion_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    only_billing = [(text, label) for text, label in _sentences(random.Random(5), 300) if label == "billing"]
    current = champion_project.parent / "labelled.csv"
    with current.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "label"), *only_billing])
    code, outcome = run_json(capsys, "monitor", "--config", str(champion_project), "--current", str(current))
    assert code == 0
    signals = {s["name"]: s for s in outcome["signals"]}
    assert signals["label"]["drifted"] is True


@pytest.mark.usefixtures("prefect_harness")
def test_monitoring_without_a_champion_is_a_clear_error(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_project(tmp_path, tiny_model_dir)
    current = _write_texts(tmp_path / "batch.csv", ["printer is broken again"] * 3)
    code, outcome = run_json(capsys, "monitor", "--config", str(config), "--current", str(current))
    assert code == 2
    assert "has no champion to monitor yet" in outcome["error"]
    with registry_for(config) as registry:
        failed = [event for event in registry.audit.events("tickets") if event.event_type == "run_failed"]
        assert len(failed) == 1 and "no champion" in failed[0].payload["error"]


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(("reference", "changed"), [(None, "test.csv"), ("train", "train.csv")])
def test_changed_reference_data_is_refused(
    champion_project: Path, capsys: pytest.CaptureFixture[str], reference: str | None, changed: str
) -> None:
    if reference is not None:
        _set_monitoring(champion_project, reference=reference)
    data = champion_project.parent / "data" / changed
    data.write_text(data.read_text(encoding="utf-8") + "an extra ticket,billing\n", encoding="utf-8")
    current = _write_texts(champion_project.parent / "batch.csv", ["printer is broken again"] * 3)
    code, outcome = run_json(capsys, "monitor", "--config", str(champion_project), "--current", str(current))
    assert code == 2
    assert outcome["error"].startswith(f"{data}: changed since tickets v1 was trained on it")
    assert outcome["error"].endswith(f"drift needs the champion's {reference or 'test'} data as reference")


@pytest.mark.usefixtures("prefect_harness")
def test_a_reference_file_is_what_normal_looks_like(champion_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shifted = _write_texts(champion_project.parent / "shifted.csv", _shifted_texts(random.Random(1), 120))
    _write_texts(champion_project.parent / "normal.csv", _shifted_texts(random.Random(2), 120))
    _set_monitoring(champion_project, reference="normal.csv")  # relative to the config's folder
    code, outcome = run_json(capsys, "monitor", "--config", str(champion_project), "--current", str(shifted))
    assert (code, outcome["finding"], outcome["reference"]) == (0, "none", "normal.csv")  # vs test: drift

    _set_monitoring(champion_project, reference="gone.csv")
    code, outcome = run_json(capsys, "monitor", "--config", str(champion_project), "--current", str(shifted))
    assert (code, outcome["error"]) == (2, f"{champion_project.parent / 'gone.csv'}: file not found (reference data)")


def _set_monitoring(config: Path, **values: object) -> None:
    settings = yaml.safe_load(config.read_text(encoding="utf-8"))
    settings["monitoring"] = {**settings.get("monitoring", {}), **values}
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")


def _labelled_batch(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "label"), *rows])
    return path


@pytest.mark.usefixtures("prefect_harness")
def test_a_class_mix_change_is_prior_shift_and_retrains_only_when_asked(
    champion_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _set_monitoring(champion_project, reference="train")  # 150 rows: enough to tell a mix change apart
    sentences = _sentences(random.Random(8), 1_200)
    mix = {"praise": 300, "complaint": 150, "billing": 150}  # 50/25/25 instead of a third each
    rows = [row for label, count in mix.items() for row in [r for r in sentences if r[1] == label][:count]]
    current = _labelled_batch(champion_project.parent / "mix.csv", rows)
    code, outcome = run_json(capsys, "monitor", "--config", str(champion_project), "--current", str(current),
                             "--fail-on-drift")
    assert code == 0
    assert (outcome["finding"], outcome["drift_detected"]) == ("prior_shift", False)
    assert outcome["retrain"] == "not_needed"
    signals = {signal["name"]: signal for signal in outcome["signals"]}
    assert signals["label"]["drifted"] and signals["label"]["kind"] == "prior"
    assert signals["label"]["effect"] >= signals["label"]["effect_threshold"] == 0.1

    _set_monitoring(champion_project, retrain_on_prior_shift=True)
    code, again = run_json(capsys, "monitor", "--config", str(champion_project), "--current", str(current))
    assert (code, again["finding"], again["retrain"]) == (0, "prior_shift", "requested")
    with registry_for(champion_project) as registry:
        assert [(r.finding, r.retrain) for r in registry.drift_reports("tickets")] == [
            ("prior_shift", "not_needed"), ("prior_shift", "requested")]
        events = [e for e in registry.audit.events("tickets") if e.event_type == "prior_shift"]
        assert [e.payload["retrain"] for e in events] == ["not_needed", "requested"]
        assert registry.audit.verify().ok


@pytest.mark.usefixtures("prefect_harness")
def test_one_retrain_per_drift_episode_and_none_within_the_cooldown(
    champion_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shifted = _write_texts(champion_project.parent / "shifted.csv", _shifted_texts(random.Random(1), 120))
    fresh = _write_texts(champion_project.parent / "fresh.csv",
                         [text for text, _ in _sentences(random.Random(99), 120)])

    def check(batch: Path) -> tuple[str, str]:
        code, outcome = run_json(capsys, "monitor", "--config", str(champion_project), "--current", str(batch))
        assert code == 0
        return outcome["finding"], outcome["retrain"]

    assert check(shifted) == ("drift", "requested")
    assert check(shifted) == ("drift", "same_episode")  # the retrain it asked for gave no new champion
    assert check(fresh) == ("none", "not_needed")  # the episode ends
    assert check(shifted) == ("drift", "cooldown")  # a new episode, but within a day of the last request
    _set_monitoring(champion_project, cooldown="0s")
    assert check(fresh) == ("none", "not_needed")
    assert check(shifted) == ("drift", "requested")
    with registry_for(champion_project) as registry:
        drifted = [e for e in registry.audit.events("tickets") if e.event_type == "drift_detected"]
        assert [e.payload["retrain"] for e in drifted] == ["requested", "same_episode", "cooldown", "requested"]


@pytest.mark.usefixtures("prefect_harness")
def test_missing_current_batch_names_the_file(champion_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = champion_project.parent / "nope.csv"
    code, outcome = run_json(capsys, "monitor", "--config", str(champion_project), "--current", str(missing))
    assert code == 2
    assert outcome["error"] == f"{missing}: file not found (current data)"
