"""The command line's promises that need no model: exit codes, one-line errors, fast start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.config import load_config
from steward.cli import main

STEWARD = [sys.executable, "-m", "steward.cli"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL_CONFIG = """\
name: tickets
data:
  train: train.csv
  test: test.csv
"""


def test_help_exits_zero_without_importing_heavy_libraries() -> None:
    probe = (
        "import sys; from steward.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    code = e.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'prefect', 'sqlalchemy', 'great_expectations',"
        " 'pandas') if m in sys.modules]\n"
        "print('HEAVY', heavy, 'CODE', code)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "HEAVY [] CODE 0" in out


def test_version_is_the_one_in_pyproject(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"steward {version('steward')}"


def test_unknown_command_is_one_line_exit_2() -> None:
    result = subprocess.run([*STEWARD, "frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "invalid choice: 'frobnicate'" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_required_option_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run"])
    assert exit_info.value.code == 2
    assert "--config" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["audit", "log", "--limit", "0"], "argument --limit: expected a whole number of at least 1, got '0'"),
        (["audit", "log", "--limit", "-5"], "argument --limit: expected a whole number of at least 1, got '-5'"),
        (["serve-model", "--model", "tickets@champion", "--poll-seconds", "0"],
         "argument --poll-seconds: expected a number of seconds above 0, got '0'"),
        (["serve-model", "--model", "tickets@champion", "--poll-seconds", "nan"],
         "argument --poll-seconds: expected a number of seconds above 0, got 'nan'"),
    ],
)
def test_out_of_range_numbers_are_refused_before_anything_runs(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize(
    ("config_text", "expected"),
    [
        (MINIMAL_CONFIG + "colour: blue\n", "unknown key 'colour'"),
        (MINIMAL_CONFIG + "pretraning:\n  enabled: false\n", "unknown key 'pretraning'"),
        (MINIMAL_CONFIG + "finetuning:\n  epoch: 3\n", "unknown key 'finetuning.epoch'"),
        ("name: tickets\n", "missing required key 'data'"),
        (MINIMAL_CONFIG + "seed: [1, 2\n", "YAML syntax error at line 6"),
        (MINIMAL_CONFIG + "finetuning:\n  epochs: -1\n", "key 'finetuning.epochs'"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        (MINIMAL_CONFIG + "evaluation:\n  min_score: basline\n",
         "key 'evaluation.min_score': must be a number or 'baseline', got 'basline'"),
        (MINIMAL_CONFIG + "evaluation:\n  min_score: '0.5'\n", "key 'evaluation.min_score': must be a number"),
        (MINIMAL_CONFIG + "validation:\n  min_examples_per_label: 0\n", "key 'validation.min_examples_per_label'"),
    ],
)
def test_bad_config_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config_text: str, expected: str,
) -> None:
    config = _write(tmp_path / "steward.yaml", config_text)
    code = main(["validate", "--config", str(config), "--registry", f"sqlite:///{tmp_path}/r.db"])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert str(config) in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(("written", "loaded"), [
    ("", "baseline"), ("  min_score: baseline\n", "baseline"), ("  min_score: 0.75\n", 0.75), ("  min_score: 0\n", 0.0),
])
def test_min_score_is_the_classical_baseline_or_a_number(tmp_path: Path, written: str, loaded: object) -> None:
    config = load_config(_write(tmp_path / "steward.yaml", MINIMAL_CONFIG + "evaluation:\n" + written
                                + "  primary_metric: macro_f1\n"))
    assert config.evaluation.min_score == loaded and type(config.evaluation.min_score) is type(loaded)
    assert config.validation.min_examples_per_label == 5


def test_missing_config_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--config", str(tmp_path / "nope.yaml")])
    assert code == 2
    assert "nope.yaml: config file not found" in capsys.readouterr().err


def test_json_error_is_one_object_on_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    code = main(["run", "--config", str(tmp_path / "nope.yaml"), "--json"])
    captured = capsys.readouterr()
    assert code == 2
    assert json.loads(captured.out) == {
        "ok": False, "error": f"{tmp_path / 'nope.yaml'}: config file not found", "exit_code": 2,
    }


def test_bad_model_reference_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["registry", "show", "no-version-here", "--registry", f"sqlite:///{tmp_path}/r.db"])
    assert code == 2
    assert "is not NAME:VERSION" in capsys.readouterr().err
