"""Label errors found before training (`validation.label_issues`): a flipped training label is listed with its
file, line, given and suggested label; `drop` trains without it and the registry records the smaller file; `fail`
stops the run naming the share; the audit trail holds counts and lines, never texts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from steward.cli import main
from tests.test_flow_retrain import registry_for, run_json, write_project


def flip_labels(path: Path, rows: dict[int, str]) -> list[str]:
    """Give data rows (from 1) new labels; returns the texts of the flipped rows."""
    with path.open(encoding="utf-8", newline="") as handle:
        table = list(csv.reader(handle))
    texts = []
    for row, label in rows.items():
        assert table[row][1] != label
        table[row][1] = label
        texts.append(table[row][0])
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(table)
    return texts


def praise_rows(path: Path) -> dict[int, str]:
    """The data rows (from 1) labelled praise, each to be flipped to billing."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    return {index: "billing" for index, (_, label) in enumerate(rows, start=1) if label == "praise"}


@pytest.mark.usefixtures("prefect_harness")
def test_a_flipped_training_label_is_listed_with_its_line_and_audited_without_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_project(tmp_path, "minilm")  # the check embeds with the frozen base: the real one
    train = tmp_path / "data" / "train.csv"
    flipped = dict(list(praise_rows(train).items())[:4])
    texts = flip_labels(train, flipped)
    code, payload = run_json(capsys, "validate", "--config", str(config))
    assert code == 0
    found = {(issue["file"], issue["line"]) for issue in payload["label_issues"]}
    expected = {(str(train), row + 1) for row in flipped}  # the header is line 1
    assert len(found & expected) >= 3, payload["label_issues"]
    issue = next(i for i in payload["label_issues"] if (i["file"], i["line"]) in expected)
    assert (issue["given"], issue["suggested"]) == ("billing", "praise")
    assert set(issue) == {"file", "line", "given", "suggested", "confidence"}
    with registry_for(config) as registry:
        [event] = [e for e in registry.audit.events() if e.event_type == "label_issues_found"]
        assert event.payload["counts"][str(train)] >= 3
        trail = json.dumps([e.payload for e in registry.audit.events()])
        assert not any(text in trail for text in texts)


@pytest.mark.usefixtures("prefect_harness")
def test_drop_records_the_training_file_without_the_suspects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_project(tmp_path, "minilm", validation={"label_issues": "drop"})
    train = tmp_path / "data" / "train.csv"
    flip_labels(train, dict(list(praise_rows(train).items())[:4]))
    code, payload = run_json(capsys, "validate", "--config", str(config))
    assert code == 0
    dropped = sum(1 for issue in payload["label_issues"] if issue["file"] == str(train))
    assert dropped >= 3
    with registry_for(config) as registry:
        recorded = {e.payload["role"]: e.payload["rows"] for e in registry.audit.events()
                    if e.event_type == "dataset_recorded"}
        assert recorded["train"] == 150 - dropped
        [event] = [e for e in registry.audit.events() if e.event_type == "label_issues_found"]
        assert event.payload["dropped"] >= dropped


@pytest.mark.usefixtures("prefect_harness")
def test_fail_stops_the_run_naming_the_share(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_project(tmp_path, "minilm", validation={"label_issues": "fail", "max_label_issue_share": 0.01})
    train = tmp_path / "data" / "train.csv"
    flip_labels(train, dict(list(praise_rows(train).items())[:8]))
    code = main(["run", "--config", str(config)])
    error = capsys.readouterr().err
    assert code == 1
    assert "label issues above validation.max_label_issue_share 1.0%: train " in error
    with registry_for(config) as registry:
        assert "version_registered" not in {e.event_type for e in registry.audit.events()}


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_writes_the_issues_beside_its_report_and_shows_them_in_it(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_project(tmp_path, tiny_model_dir)
    train = tmp_path / "data" / "train.csv"
    flip_labels(train, dict(list(praise_rows(train).items())[:4]))
    code, outcome = run_json(capsys, "run", "--config", str(config))
    assert code == 0, outcome
    assert outcome["label_issues"]  # the tiny random encoder flags some rows; which ones is not the point here
    listed = Path(outcome["report"]).with_name("v1-label-issues.csv")
    with listed.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["file"], int(row["line"])) for row in rows] == \
        [(issue["file"], issue["line"]) for issue in outcome["label_issues"]]
    report = Path(outcome["report"]).read_text(encoding="utf-8")
    assert "Data risks" in report and "Rows whose label looks wrong" in report
