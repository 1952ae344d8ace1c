"""`steward export --format mlflow`: a registered classifier as an MLflow pyfunc model that answers like
`load_model`, audited, and refused whole (nothing left on disk) when it cannot be exported.

The model is the tiny BERT with a seeded, untrained head, saved and registered as `cues` v1 (champion): no
training is needed for the exported model to have to agree with Steward's own predictor."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import pytest
import yaml

from core.hashing import sha256_file, sha256_files
from governance.registry import Registry
from steward import load_model
from steward.cli import main
from tasks.classifier import new_classifier, save_classifier
from tasks.manifest import ModelManifest
from tasks.modeling import pick_device

LABELS = ["hardware", "login", "network"]
TEXTS = ["the printer on floor 3 jams", "I cannot log in", "vpn drops every hour", "the screen is broken", "ok"]


@dataclass(frozen=True)
class Exported:
    url: str
    out: Path
    summary: dict


def _register(url: str, name: str, folder: Path) -> None:
    with Registry.open(url) as registry:
        run = registry.start_run(kind="retrain", model_name=name, config={"name": name}, seed=0,
                                 code_version="test", package_versions={})
        registry.register_version(model_name=name, run_id=run.id, artifact_path=str(folder),
                                  files=sha256_files(folder), base_model="tiny")
        registry.promote(name, 1, reason="export tests")


def _classifier_registry(root: Path, tiny_model_dir: Path) -> str:
    """`cues` v1, the tiny BERT with a seeded head, registered and promoted in a new registry under `root`."""
    save_classifier(new_classifier(tiny_model_dir, LABELS, 64, "tiny-bert", pick_device()), root / "cues-v1")
    url = f"sqlite:///{root / 'registry.db'}"
    _register(url, "cues", root / "cues-v1")
    return url


def _export(url: str, ref: str, out: Path) -> tuple[int, dict, str]:
    """`steward export REF --format mlflow --out OUT --json`: exit code, the JSON object, stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["export", ref, "--format", "mlflow", "--out", str(out), "--registry", url, "--json"])
    return code, json.loads(stdout.getvalue()), stderr.getvalue()


def _no_partial_left(out: Path) -> bool:
    return not list(out.parent.glob(f".{out.name}.*"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Exported:
    """`cues@champion` exported into an empty folder that already exists (allowed)."""
    root = tmp_path_factory.mktemp("export")
    url = _classifier_registry(root, tiny_model_dir)
    out = root / "exported"
    out.mkdir()
    code, summary, _ = _export(url, "cues@champion", out)
    assert code == 0, summary
    return Exported(url, out, summary)


def test_the_exported_model_predicts_like_load_model(exported: Exported) -> None:
    frame = mlflow.pyfunc.load_model(str(exported.out)).predict(pd.DataFrame({"text": TEXTS}))
    expected = load_model("cues:1", registry=exported.url, form="fp32").predict(TEXTS)

    assert list(frame.columns) == ["label", "score", *(f"probability_{label}" for label in LABELS)]
    assert frame["label"].tolist() == [p.label for p in expected]
    for row, prediction in zip(frame.to_dict("records"), expected, strict=True):
        assert row["score"] == pytest.approx(prediction.score, abs=1e-6)
        for label in LABELS:
            assert row[f"probability_{label}"] == pytest.approx(prediction.probabilities[label], abs=1e-6)


def test_the_json_names_every_exported_file_with_the_registrys_sha256(exported: Exported) -> None:
    with Registry.open(exported.url) as registry:
        recorded = registry.get_version("cues", 1).recorded_hashes
    summary = exported.summary
    assert (summary["model"], summary["version"], summary["format"]) == ("cues", 1, "mlflow")
    assert summary["path"] == str(exported.out.resolve())
    assert sorted(Path(name).name for name in summary["files"]) == sorted(recorded)
    for name, digest in summary["files"].items():
        assert digest == recorded[Path(name).name] == sha256_file(exported.out / name)
    assert not list(exported.out.rglob("*.pkl")), "a model from code: nothing to unpickle"
    assert _no_partial_left(exported.out)


def test_mlmodel_has_the_signature_and_pinned_requirements(exported: Exported) -> None:
    mlmodel = yaml.safe_load((exported.out / "MLmodel").read_text())
    inputs = json.loads(mlmodel["signature"]["inputs"])
    outputs = json.loads(mlmodel["signature"]["outputs"])
    assert [(column["name"], column["type"]) for column in inputs] == [("text", "string")]
    assert [(column["name"], column["type"]) for column in outputs] == [
        ("label", "string"), ("score", "double"), *((f"probability_{label}", "double") for label in LABELS)]
    requirements = (exported.out / "requirements.txt").read_text().split()
    for package in ("steward", "torch", "transformers", "safetensors", "mlflow-skinny"):
        assert f"{package}=={version(package)}" in requirements
    assert (exported.out / "input_example.json").is_file()


def test_the_export_is_audited_and_the_chain_verifies(exported: Exported) -> None:
    with Registry.open(exported.url) as registry:
        [event] = [e for e in registry.audit.events("cues:1") if e.event_type == "model_exported"]
        assert registry.audit.verify().ok
    assert event.payload["format"] == "mlflow" and event.payload["alias"] == "champion"
    assert event.payload["path"] == str(exported.out.resolve())
    assert event.payload["files"] == exported.summary["files"]


def test_a_tampered_export_is_refused_when_mlflow_loads_it(exported: Exported, tmp_path: Path) -> None:
    copy = shutil.copytree(exported.out, tmp_path / "copy")
    [weights] = [copy / name for name in exported.summary["files"] if name.endswith("head.safetensors")]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(Exception, match="sha256 mismatch"):
        mlflow.pyfunc.load_model(str(copy))


def _one_line_error(code: int, error: dict, stderr: str, expected_code: int, message: str) -> None:
    assert code == expected_code and error["exit_code"] == expected_code
    assert message in error["error"]
    assert stderr.count("\n") == 1 and "Traceback" not in stderr


@pytest.mark.parametrize(("ref", "message"), [
    ("cues:9", "has no version 9"),
    ("cues@staging", "has no alias 'staging'"),
    ("cues", "is not NAME@ALIAS or NAME:VERSION"),
])
def test_a_bad_reference_is_refused_and_writes_nothing(exported: Exported, tmp_path: Path, ref: str,
                                                       message: str) -> None:
    out = tmp_path / "out"
    _one_line_error(*_export(exported.url, ref, out), 2, message)
    assert not out.exists() and _no_partial_left(out)


def test_a_folder_that_is_not_empty_is_refused_and_left_alone(exported: Exported, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _one_line_error(*_export(exported.url, "cues:1", out), 2, "already exists and is not an empty folder")
    assert [path.name for path in out.iterdir()] == ["keep.txt"] and _no_partial_left(out)


def test_a_causal_language_model_is_not_supported_yet(tmp_path: Path, tiny_llama_dir: Path) -> None:
    folder = shutil.copytree(tiny_llama_dir, tmp_path / "notes-v1")
    ModelManifest(task="causal-lm", form="fp32", max_length=64, base_fingerprint="tiny-llama").write(folder)
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    _register(url, "notes", folder)
    out = tmp_path / "out"
    _one_line_error(*_export(url, "notes@champion", out), 2, "is a causal language model")
    assert not out.exists() and _no_partial_left(out)


def test_tampered_weights_are_refused_before_anything_is_written(tmp_path: Path, tiny_model_dir: Path) -> None:
    url = _classifier_registry(tmp_path, tiny_model_dir)
    weights = tmp_path / "cues-v1" / "head.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    out = tmp_path / "out"
    # a failed check (exit 1), as `steward predict` and `evaluate` refuse a mismatch
    _one_line_error(*_export(url, "cues:1", out), 1, "head.safetensors: sha256 mismatch")
    assert not out.exists() and _no_partial_left(out)
    with Registry.open(url) as registry:
        assert not [e for e in registry.audit.events("cues") if e.event_type == "model_exported"]


def test_an_unknown_format_is_bad_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "cues:1", "--format", "onnx", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "invalid choice: 'onnx'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_without_mlflow_the_extra_is_named(exported: Exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.delitem(sys.modules, "steward.mlflow_model", raising=False)
    out = tmp_path / "out"
    _one_line_error(*_export(exported.url, "cues:1", out), 2, "pip install 'steward[mlflow]'")
    assert not out.exists() and _no_partial_left(out)
