"""Using the champion: `load_model` in Python and `steward predict` on a file, on a tiny trained model."""

from __future__ import annotations

import concurrent.futures
import random
from pathlib import Path

import pandas as pd
import pytest

from core.errors import BadInputError, CheckFailedError
from steward import load_model
from tests.test_flow_retrain import _sentences, registry_for, run_json, write_project
from tests.test_monitor import _write_texts


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A project whose `steward run` registered and promoted v1 (module-scoped: trained once)."""
    from prefect.testing.utilities import prefect_test_harness

    from steward.cli import main

    config = write_project(tmp_path_factory.mktemp("predict"), tiny_model_dir, pretraining={"enabled": False})
    with prefect_test_harness(server_startup_timeout=60):
        assert main(["run", "--config", str(config)]) == 0
    return config


def registry_url(config: Path) -> str:
    return f"sqlite:///{config.parent / '.steward' / 'registry.db'}"


def test_load_model_predicts_calibrated_probabilities_and_names_its_version(trained: Path) -> None:
    model = load_model("tickets@champion", registry=registry_url(trained))
    texts = [text for text, _ in _sentences(random.Random(9), 12)]
    predictions = model.predict(texts)

    assert model.version == 1 and model.identity.alias == "champion" and model.identity.name == "tickets"
    assert len(predictions) == len(texts)
    for prediction in predictions:
        assert set(prediction.probabilities) == set(model.labels)
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction.score == max(prediction.probabilities.values())
        assert prediction.probabilities[prediction.label] == prediction.score
    # NAME:VERSION loads the same version; predictions do not depend on the batch a text arrives in
    alone = load_model("tickets:1", registry=registry_url(trained)).predict(texts[:1])[0]
    assert alone.label == predictions[0].label and alone.score == pytest.approx(predictions[0].score, abs=1e-5)


def test_one_predictor_is_safe_to_share_between_threads(trained: Path) -> None:
    model = load_model("tickets@champion", registry=registry_url(trained))
    texts = [text for text, _ in _sentences(random.Random(4), 40)]
    expected = [p.label for p in model.predict(texts)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda chunk: model.predict(chunk), [texts[i::4] for i in range(4)]))
    threaded = {text: p.label for i, chunk in enumerate(results) for text, p in zip(texts[i::4], chunk, strict=True)}
    assert [threaded[text] for text in texts] == expected


@pytest.mark.parametrize(("ref", "message"), [
    ("tickets", "is not NAME@ALIAS or NAME:VERSION"),
    ("tickets@staging", "has no alias 'staging'"),
    ("tickets:9", "9"),
])
def test_a_bad_reference_is_a_one_line_error(trained: Path, ref: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        load_model(ref, registry=registry_url(trained))


@pytest.mark.parametrize(("form", "relative_path"), [("fp32", "head.safetensors"), ("int8", "model.onnx")])
def test_a_tampered_weight_file_is_refused_before_loading(trained: Path, form: str, relative_path: str) -> None:
    with registry_for(trained) as registry:
        detail = registry.get_version("tickets", 1)
    folder = Path(detail.form(form).artifact_path if form != "fp32" else detail.version.artifact_path)
    weights = folder / relative_path
    original = weights.read_bytes()
    try:
        weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(CheckFailedError, match="sha256 mismatch"):
            load_model("tickets@champion", registry=registry_url(trained), form=form)
    finally:
        weights.write_bytes(original)


def test_steward_predict_writes_every_row_with_probabilities_and_audits_the_batch(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = [text for text, _ in _sentences(random.Random(2), 30)]
    source = _write_texts(tmp_path / "incoming.csv", texts)
    output = tmp_path / "scored.parquet"
    code, summary = run_json(capsys, "predict", "--model", "tickets@champion", "--input", str(source),
                             "--output", str(output), "--registry", registry_url(trained))

    assert code == 0 and summary["rows"] == 30 and summary["version"] == 1 and summary["output"] == str(output)
    frame = pd.read_parquet(output)
    assert frame["text"].tolist() == texts
    assert set(frame["version"]) == {1} and set(frame["model"]) == {"tickets"} and set(frame["form"]) == {"int8"}
    probability_columns = [column for column in frame.columns if column.startswith("probability_")]
    assert len(probability_columns) == 3
    assert frame[probability_columns].sum(axis=1).round(5).eq(1.0).all()
    assert sum(summary["label_counts"].values()) == 30
    with registry_for(trained) as registry:
        event = [e for e in registry.audit.events("tickets:1") if e.event_type == "batch_scored"][-1]
        assert event.payload["input_fingerprint"] == summary["input_fingerprint"]
        assert registry.audit.verify().ok


def test_steward_predict_refuses_a_row_without_text_and_writes_nothing(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "holes.csv"
    source.write_text('text\nthe printer jams\n""\nvpn drops\n', encoding="utf-8")
    output = tmp_path / "out.csv"
    code, error = run_json(capsys, "predict", "--model", "tickets@champion", "--input", str(source), "--output",
                           str(output), "--registry", registry_url(trained))
    assert code == 2 and "holes.csv: data row 2 has no text" in error["error"]
    assert not output.exists()


def test_steward_predict_names_a_missing_input_file(trained: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, error = run_json(capsys, "predict", "--model", "tickets@champion", "--input", str(tmp_path / "no.csv"),
                           "--registry", registry_url(trained))
    assert code == 2 and "no.csv: file not found" in error["error"]
