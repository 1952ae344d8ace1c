"""The compression stage on a tiny trained model: an int8 form that passes is recorded and served, one that
fails the gate or the export is recorded and the fp32 model serves."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import tasks.compress
from steward import load_model
from steward.cli import main
from tasks.manifest import MANIFEST_FILE
from tests.test_flow_retrain import _sentences, registry_for, run_json, write_project
from tests.test_monitor import _write_texts
from tests.test_predict import registry_url

TEXTS = [text for text, _ in _sentences(random.Random(11), 40)]


@pytest.fixture
def project(tmp_path: Path, tiny_model_dir: Path) -> Path:
    return write_project(tmp_path, tiny_model_dir, pretraining={"enabled": False})


def events(config: Path, event_type: str) -> list:
    with registry_for(config) as registry:
        return [event for event in registry.audit.events() if event.event_type == event_type]


def test_the_stage_registers_a_passing_int8_form_that_serves_like_the_fp32_model(
    project: Path, steward_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, outcome = run_json(capsys, "run", "--config", str(project))
    assert code == 0 and outcome["promoted"]

    with registry_for(project) as registry:
        detail = registry.get_version("tickets", 1)
    int8 = detail.form("int8")
    assert int8 is not None and int8.status == "passed", int8
    assert int8.metrics["agreement"] >= 0.98 and int8.metrics["metric_drop"] <= 0.01
    assert {"model.onnx", MANIFEST_FILE} <= set(int8.files) and int8.size_bytes > 0
    assert set(int8.per_class_f1_delta) == {"billing", "complaint", "praise"}
    [event] = events(project, "compression_passed")
    assert event.subject == "tickets:1" and event.payload["sha256"] == int8.files

    served = load_model("tickets@champion", registry=registry_url(project))
    fp32 = load_model("tickets@champion", registry=registry_url(project), form="fp32")
    assert served.identity.form == "int8" and fp32.identity.form == "fp32"
    assert served.identity.sha256 == int8.files
    quantized, full = served.predict(TEXTS), fp32.predict(TEXTS)
    agreement = sum(a.label == b.label for a, b in zip(quantized, full, strict=True)) / len(TEXTS)
    assert agreement >= 0.95
    assert max(abs(a.score - b.score) for a, b in zip(quantized, full, strict=True)) < 0.05


def _broken_quantization(fp32_file: Path, int8_file: Path) -> None:
    """A real int8 quantization whose head weights then come out as zeros: every text scores the same."""
    import onnx
    from onnx import numpy_helper

    real_quantize(fp32_file, int8_file)
    model = onnx.load(str(int8_file))
    for initializer in model.graph.initializer:
        if "head" in initializer.name:
            zeros = numpy_helper.to_array(initializer) * 0
            initializer.CopyFrom(numpy_helper.from_array(zeros, initializer.name))
    onnx.save(model, str(int8_file))


real_quantize = tasks.compress.quantize_int8


def test_a_broken_quantization_is_refused_and_the_fp32_model_serves(
    project: Path, steward_env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tasks.compress, "quantize_int8", _broken_quantization)
    code, outcome = run_json(capsys, "run", "--config", str(project))
    assert code == 0 and outcome["promoted"]

    with registry_for(project) as registry:
        int8 = registry.get_version("tickets", 1).form("int8")
    assert int8.status == "refused" and int8.metrics["agreement"] < 0.98
    assert any("min_agreement" in reason for reason in int8.reasons)
    assert len(events(project, "compression_refused")) == 1
    assert load_model("tickets@champion", registry=registry_url(project)).identity.form == "fp32"

    source = _write_texts(project.parent / "incoming.csv", TEXTS)
    code, summary = run_json(capsys, "predict", "--model", "tickets@champion", "--input", str(source),
                             "--registry", registry_url(project))
    assert code == 0 and summary["form"] == "fp32"
    assert main(["predict", "--model", "tickets@champion", "--input", str(source), "--format", "int8",
                 "--registry", registry_url(project)]) == 2
    assert "tickets:1: its int8 form was refused by the compression gate" in capsys.readouterr().err


def test_an_export_failure_names_the_operator_and_leaves_the_version_served(
    project: Path, steward_env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    def unsupported(*args: object, **kwargs: object) -> None:  # what the exporter raises for a missing operator
        raise torch.onnx.errors.UnsupportedOperatorError("aten::fancy_attention", 17, None)

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    code, outcome = run_json(capsys, "run", "--config", str(project))
    assert code == 0 and outcome["promoted"]

    with registry_for(project) as registry:
        int8 = registry.get_version("tickets", 1).form("int8")
    assert int8.status == "failed" and int8.artifact_path is None and int8.files == {}
    assert "cannot be exported to ONNX (operator aten::fancy_attention)" in int8.reasons[0]
    [event] = events(project, "compression_failed")
    assert event.payload["form"] == "int8"
    assert load_model("tickets@champion", registry=registry_url(project)).identity.form == "fp32"


def test_compression_off_makes_no_form(project: Path, steward_env: dict[str, str],
                                       capsys: pytest.CaptureFixture[str], tiny_model_dir: Path) -> None:
    config = write_project(project.parent, tiny_model_dir, pretraining={"enabled": False},
                           compression={"enabled": False})
    assert run_json(capsys, "run", "--config", str(config))[0] == 0
    with registry_for(config) as registry:
        assert registry.get_version("tickets", 1).forms == []
    assert load_model("tickets@champion", registry=registry_url(config)).identity.form == "fp32"


def test_a_distilled_student_is_made_quantized_and_judged_like_the_teacher(
    project: Path, steward_env: dict[str, str], capsys: pytest.CaptureFixture[str], tiny_model_dir: Path,
) -> None:
    import json

    config = write_project(project.parent, tiny_model_dir, pretraining={"enabled": False},
                           compression={"distill": {"layers": 1, "epochs": 3, "learning_rate": 5.0e-3}})
    assert run_json(capsys, "run", "--config", str(config))[0] == 0

    with registry_for(config) as registry:
        detail = registry.get_version("tickets", 1)
    student, int8 = detail.form("student"), detail.form("int8")
    assert student.status in ("passed", "refused"), student.reasons
    assert student.method == "distill-1-layers+onnx-int8"
    assert student.size_bytes < int8.size_bytes  # one transformer layer of two
    manifest = json.loads((Path(student.artifact_path) / MANIFEST_FILE).read_text())
    assert manifest["temperature"] > 0 and manifest["form"] == "student"
    assert 0.0 <= student.metrics["agreement"] <= 1.0 and "macro_f1" in student.metrics
    assert not Path(f"{detail.version.artifact_path}-student.checkpoints").exists()
    if student.passed:
        predictions = load_model("tickets:1", registry=registry_url(config), form="student").predict(TEXTS)
        assert len(predictions) == len(TEXTS)


def test_a_student_as_deep_as_its_teacher_fails_naming_the_key(
    project: Path, steward_env: dict[str, str], capsys: pytest.CaptureFixture[str], tiny_model_dir: Path,
) -> None:
    config = write_project(project.parent, tiny_model_dir, pretraining={"enabled": False},
                           compression={"distill": {"layers": 2}})
    assert run_json(capsys, "run", "--config", str(config))[0] == 0
    with registry_for(config) as registry:
        student = registry.get_version("tickets", 1).form("student")
    assert student.status == "failed"
    assert "compression.distill.layers must be from 1 to 1 (the teacher has 2 layers), got 2" in student.reasons[0]
