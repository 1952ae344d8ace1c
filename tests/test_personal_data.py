"""Personal data kept out of what trains and what is logged: `validation.pii` redacts by default (the registry
records the redacted data's fingerprint), `report` only counts, `fail` stops the run naming the file, type and
first row; the audit trail and `--json` hold counts, never values; the prediction log stores `<EMAIL>`."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.refs import ModelRef
from governance.prediction_log import PredictionLog
from steward.cli import main
from tasks.data import fingerprint_rows, load_documents
from tasks.predict import ModelIdentity
from tests.test_flow_language_model import _documents, write_lm_project
from tests.test_flow_retrain import registry_for, run_json, write_project
from tests.test_pii import CN_ID

EMAIL = "jane.doe@example.org"


def _add_personal_data(path: Path, row: int, value: str) -> None:
    """Append `value` to data row `row` (from 1, the header not counted) of a CSV written by `write_project`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[row] = lines[row].replace(",", f" write to {value},", 1)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.usefixtures("prefect_harness")
def test_validate_counts_findings_per_file_and_type_and_audits_no_value(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_project(tmp_path, tiny_model_dir)
    train = tmp_path / "data" / "train.csv"
    _add_personal_data(train, 3, EMAIL)
    _add_personal_data(train, 7, "+44 20 7946 0958")
    code, payload = run_json(capsys, "validate", "--config", str(config))
    assert code == 0
    assert payload["pii_findings"] == {str(train): {"EMAIL": 1, "PHONE": 1}}
    with registry_for(config) as registry:
        [event] = [e for e in registry.audit.events() if e.event_type == "personal_data_found"]
        assert event.payload["findings"] == {str(train): {"EMAIL": 1, "PHONE": 1}}
        assert event.payload["policy"] == "redact"
        trail = json.dumps([e.payload for e in registry.audit.events()])
        assert EMAIL not in trail and "7946" not in trail


@pytest.mark.usefixtures("prefect_harness")
def test_fail_stops_the_run_naming_the_file_type_and_first_row(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_project(tmp_path, tiny_model_dir, validation={"pii": "fail"})
    _add_personal_data(tmp_path / "data" / "test.csv", 5, CN_ID)
    code = main(["run", "--config", str(config)])
    error = capsys.readouterr().err
    assert code == 1
    assert f"personal data found (validation.pii is fail): {tmp_path / 'data' / 'test.csv'}: 1 CN_ID (first at " \
           "row 5)" in error
    assert CN_ID not in error
    with registry_for(config) as registry:
        assert "version_registered" not in {e.event_type for e in registry.audit.events()}


@pytest.mark.usefixtures("prefect_harness")
def test_an_identity_number_in_the_corpus_is_redacted_before_pretraining(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    documents = _documents(120, 1)
    documents[4] += f" the customer's id is {CN_ID}."
    project = write_lm_project(tmp_path / "p", tiny_llama_dir, documents)
    code, outcome = run_json(capsys, "run", "--config", str(project))
    assert code == 0, outcome
    corpus_path = project.parent / "notes.txt"
    assert outcome["pii_findings"] == {str(corpus_path): {"CN_ID": 1}}
    redacted = [text.replace(CN_ID, "<CN_ID>") for text in load_documents(corpus_path, "text").texts]
    with registry_for(project) as registry:
        detail = registry.get_version("notes", 1)
        # What the registry fingerprints, and what was split and trained on, is the redacted corpus.
        assert detail.datasets["corpus"].fingerprint == fingerprint_rows(redacted, None)
        assert registry.audit.verify().ok


def test_the_prediction_log_stores_the_type_not_the_value(tmp_path: Path) -> None:
    from steward.server import Metrics, PredictionLogWriter, ServerSettings

    log_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    settings = ServerSettings(ModelRef.parse("tickets@champion"), log_url, log_url=log_url)
    writer = PredictionLogWriter(settings, Metrics())
    writer.start()
    identity = ModelIdentity("tickets", 1, "champion", str(tmp_path), {}, {})
    try:
        writer.submit_answers(identity, [f"my mail is {EMAIL}", "printer jams"],
                              [("billing", 0.9, {"billing": 0.9}, None), ("printer", 0.8, {"printer": 0.8}, None)])
    finally:
        writer.close()
    deadline = time.monotonic() + 10
    with PredictionLog.open(log_url) as log:
        while len(rows := log.window("tickets", datetime.now(UTC) - timedelta(hours=1))) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert [row.text for row in rows] == ["my mail is <EMAIL>", "printer jams"]

