"""Bad input ends in one clear line, the right exit code, an audit event, and no registered version.

Every case starts from the small valid project of `test_flow_retrain.write_project`, breaks one
thing, and runs `steward run` on it. Config problems are audited as `input_rejected` in the registry
the config resolves to (here the default SQLite file beside it); problems found inside the flow end
the run as `run_failed` with the same message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from governance.registry import Registry
from steward.cli import main
from tests.test_flow_retrain import write_project

TRAIN_ROWS = 150  # write_project's train.csv: a header, then 150 rows; an appended row is row 151, line 152
Mutation = Callable[[Path], None]


def one_error_line(stderr: str) -> str:
    """The single `steward: error:` line of a failed command (its message), with no traceback anywhere."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("steward: error: ")]
    assert len(errors) == 1, stderr
    return errors[0].removeprefix("steward: error: ")


def default_registry(project: Path) -> Registry:
    return Registry.open(f"sqlite:///{project / '.steward' / 'registry.db'}")


def _append(relative: str, data: bytes) -> Mutation:
    def mutate(project: Path) -> None:
        with (project / relative).open("ab") as handle:
            handle.write(data)

    return mutate


def _replace(relative: str, data: bytes) -> Mutation:
    return lambda project: (project / relative).write_bytes(data)


def _edit_config(change: Callable[[dict], None]) -> Mutation:
    def mutate(project: Path) -> None:
        path = project / "steward.yaml"
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        change(config)
        path.write_text(yaml.safe_dump(config), encoding="utf-8")

    return mutate


def _rename_header(relative: str, header: str) -> Mutation:
    def mutate(project: Path) -> None:
        path = project / relative
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        path.write_text(header + "\n" + "".join(lines[1:]), encoding="utf-8")

    return mutate


def _pickle_only_model(project: Path) -> None:
    import torch

    model = project / "pickled-model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    torch.save({"weight": torch.zeros(2)}, model / "pytorch_model.bin")
    _edit_config(lambda c: c.update(base_model="pickled-model"))(project)


@dataclass(frozen=True)
class Case:
    mutate: Mutation
    exit_code: int
    message: str  # a regular expression the one-line error must match
    event: str  # the audit event that records the rejection
    warning: str | None = None  # a warning line that must come with it


CASES = {
    "empty-file": Case(_replace("data/train.csv", b""), 2, r"data/train\.csv: file is empty$", "run_failed"),
    "header-only": Case(_replace("data/train.csv", b"text,label\n"), 2,
                        r"data/train\.csv: no rows of data, only a header \(train data\)$", "run_failed"),
    "missing-text-column": Case(_rename_header("data/train.csv", "body,label"), 2,
                                r"data/train\.csv: no text column 'text' \(columns found: body, label\)$",
                                "run_failed"),
    "missing-label-column": Case(_rename_header("data/test.csv", "text,category"), 2,
                                 r"data/test\.csv: no label column 'label' \(columns found: text, category\)$",
                                 "run_failed"),
    "unknown-config-key": Case(_edit_config(lambda c: c.update(colour="blue")), 2,
                               r"steward\.yaml: unknown key 'colour'$", "input_rejected"),
    "misspelled-section": Case(_edit_config(lambda c: c.update(pretraning=c.pop("pretraining"))), 2,
                               r"steward\.yaml: unknown key 'pretraning' \(did you mean 'pretraining'\?\)$",
                               "input_rejected"),
    "misspelled-nested-key": Case(_edit_config(lambda c: c["finetuning"].update(epoch=c["finetuning"].pop("epochs"))),
                                  2, r"unknown key 'finetuning\.epoch' \(did you mean 'epochs'\?\)$",
                                  "input_rejected"),
    "wrong-value-type": Case(_edit_config(lambda c: c["finetuning"].update(epochs="three")), 2,
                             r"steward\.yaml: key 'finetuning\.epochs': Input should be a valid integer",
                             "input_rejected"),
    "yaml-syntax-error": Case(_append("steward.yaml", b"seed: [1, 2\n"), 2,
                              r"steward\.yaml: YAML syntax error at line \d+, column \d+: expected ',' or ']'",
                              "input_rejected"),
    "config-not-utf8": Case(_append("steward.yaml", b"# caf\xe9\n"), 2,
                            r"steward\.yaml: line \d+: config is not UTF-8 text \(byte 0xe9\)$", "input_rejected"),
    "data-not-utf8": Case(_append("data/train.csv", b"caf\xe9 good great,praise\n"), 2,
                          rf"data/train\.csv: line {TRAIN_ROWS + 2}, column 4: not UTF-8 text \(byte 0xe9\)$",
                          "run_failed"),
    "unterminated-quote": Case(_append("data/train.csv", b'"good great,praise\nbad awful,complaint\n'), 2,
                               rf"data/train\.csv: line {TRAIN_ROWS + 2}: unterminated quoted field", "run_failed"),
    "truncated-last-row": Case(_append("data/train.csv", b"good great serv"), 2,
                               rf"data/train\.csv: line {TRAIN_ROWS + 2}: the file ends in the middle of a row",
                               "run_failed"),
    "stray-quote-in-cut-off-last-row": Case(_append("data/train.csv", b'office product"unterminated,quote'), 2,
                                            rf"data/train\.csv: line {TRAIN_ROWS + 2}, column 15: a quote inside an "
                                            r"unquoted field", "run_failed"),
    "null-text": Case(_append("data/train.csv", b",praise\n"), 1,
                      r"^validation failed: train: text nulls at most 0\.0% — 1 null row", "run_failed"),
    "null-label": Case(_append("data/train.csv", b"good great film,\n"), 1,
                       r"^validation failed: train: label nulls at most 0\.0% — 1 null row", "run_failed"),
    "test-label-unseen-in-training": Case(
        _append("data/test.csv", b"good great film,mystery\n"), 1,
        r"^validation failed: test: label in \{billing, complaint, praise\} — 1 row with other labels .*: mystery$",
        "run_failed"),
    "nonexistent-data-path": Case(_edit_config(lambda c: c["data"].update(train="data/nothere.csv")), 2,
                                  r"data/nothere\.csv: file not found \(train data\)$", "run_failed"),
    "base-model-missing": Case(_edit_config(lambda c: c.update(base_model="no-such-model-dir")), 2,
                               r"base_model 'no-such-model-dir': no such local directory", "run_failed"),
    "base-model-not-a-model": Case(_edit_config(lambda c: c.update(base_model="data")), 2,
                                   r"/data: not a model directory \(no config\.json\)$", "run_failed"),
    "base-model-pickle-only": Case(_pickle_only_model, 2,
                                   r"weights are pickle files only \(pytorch_model\.bin\).*allow_pickle: true",
                                   "run_failed"),
    "empty-domain-corpus": Case(_replace("data/corpus.txt", b"\n \n"), 2, r"data/corpus\.txt: file is empty$",
                                "run_failed"),
    "ten-megabyte-row": Case(_append("data/train.csv", b"good " * 2_000_000 + b",praise\n"), 1,
                             r"^validation failed: train: text length between 1 and 10000 — 1 row outside",
                             "run_failed",
                             warning=f"train.csv: unusually long text in the train data at row {TRAIN_ROWS + 1} "
                                     "(10,000,000 characters)"),
}


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("case", [pytest.param(case, id=name) for name, case in CASES.items()])
def test_bad_input_is_one_line_audited_and_registers_nothing(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], case: Case,
) -> None:
    config = write_project(tmp_path, tiny_model_dir)
    case.mutate(tmp_path)

    code = main(["run", "--config", str(config)])

    err = capsys.readouterr().err
    message = one_error_line(err)
    assert code == case.exit_code
    assert re.search(case.message, message), message
    assert case.warning is None or f"steward: warning: {tmp_path}/data/{case.warning}" in err
    with default_registry(tmp_path) as registry:
        assert registry.list_models() == []
        last = registry.audit.events()[-1]
        assert (last.event_type, last.payload["error"]) == (case.event, message)
        assert registry.audit.verify().ok


@pytest.mark.usefixtures("prefect_harness")
def test_ten_megabyte_row_is_named_in_a_warning_and_cut_for_training(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_project(tmp_path, tiny_model_dir, validation={"text_length": {"min": 1, "max": 20_000_000}},
                           pretraining={"enabled": False}, finetuning={"epochs": 1})
    CASES["ten-megabyte-row"].mutate(tmp_path)

    code = main(["run", "--config", str(config)])

    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err and "steward: error" not in err
    assert f"steward: warning: {tmp_path}/data/{CASES['ten-megabyte-row'].warning}" in err
    with default_registry(tmp_path) as registry:
        assert [v.version for v in registry.list_versions("tickets")] == [1]


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("command", ["validate", "finetune"])
def test_a_stray_quote_in_a_cut_off_last_row_stops_each_stage_command(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], command: str,
) -> None:
    config = write_project(tmp_path, tiny_model_dir)
    CASES["stray-quote-in-cut-off-last-row"].mutate(tmp_path)

    code = main([command, "--config", str(config)])

    message = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert re.search(CASES["stray-quote-in-cut-off-last-row"].message, message), message
    with default_registry(tmp_path) as registry:
        assert registry.list_models() == []


@pytest.mark.parametrize("where", ["flag", "environment", "config"])
def test_a_rejected_config_is_audited_where_its_registry_resolves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, where: str,
) -> None:
    registry_url = f"sqlite:///{tmp_path / 'elsewhere' / 'registry.db'}"
    config = tmp_path / "steward.yaml"
    config.write_text(yaml.safe_dump({"name": "tickets", "data": {"train": "t.csv", "test": "t.csv"},
                                      "colour": "blue", "registry": {"url": registry_url}}), encoding="utf-8")
    argv = ["validate", "--config", str(config)]
    ignored = tmp_path / "ignored.db"
    if where == "flag":
        argv += ["--registry", registry_url]
        config.write_text(config.read_text().replace(registry_url, f"sqlite:///{ignored}"), encoding="utf-8")
    elif where == "environment":
        monkeypatch.setenv("STEWARD_REGISTRY_URL", registry_url)

    assert main(argv) == 2

    message = one_error_line(capsys.readouterr().err)
    assert message == f"{config}: unknown key 'colour'"
    with Registry.open(registry_url) as registry:
        (event,) = registry.audit.events("tickets")
    assert (event.event_type, event.payload) == (
        "input_rejected",
        {"command": "validate", "config": str(config), "error": message, "exit_code": 2, "actor_source": "os_user"},
    )
    assert not (tmp_path / ".steward").exists() and not ignored.exists()
