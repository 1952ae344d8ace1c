"""Fuzzing: random configs and random CSV bytes never crash `steward validate` or `steward run`.

Whatever hypothesis feeds in, a command ends with exit 0, 1 or 2, a failure is exactly one
`steward: error:` line with no traceback, the audit chain still verifies, and broken data never
becomes a registered model version.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from core.config import StewardConfig
from governance.registry import Registry
from steward.cli import main
from tests.test_bad_input import one_error_line
from tests.test_flow_retrain import write_project

FUZZ = settings(
    deadline=None, database=None, derandomize=True,  # the same examples on every run: CI never flakes
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_FUZZ_ROWS = 15  # below the project's validation.min_rows (20): fuzzed data is never valid training data


def _config_keys(model: type[BaseModel] = StewardConfig, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of the config schema, sections and leaves (`workdir` is internal)."""
    paths = []
    for name, field in model.model_fields.items():
        if name == "workdir":
            continue
        paths.append((*prefix, name))
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            paths += _config_keys(field.annotation, (*prefix, name))
    return paths


CONFIG_KEYS = _config_keys()
words = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)  # YAML can hold any but surrogates
values = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**9), 10**9), st.floats(), words,
    st.lists(words, max_size=3), st.dictionaries(words, st.integers(), max_size=2),
)
key_paths = st.one_of(
    st.sampled_from(CONFIG_KEYS),
    st.lists(words.filter(bool), min_size=1, max_size=3).map(tuple),  # mostly keys the schema lacks
)


@st.composite
def config_mutations(
    draw: st.DrawFn, keep: tuple[str, ...] = (), min_size: int = 1,
) -> list[tuple[tuple[str, ...], object]]:
    """A few (key path, new value) changes; `keep` names top-level sections left alone."""
    paths = key_paths.filter(lambda path: path[0] not in keep)
    return draw(st.lists(st.tuples(paths, values), min_size=min_size, max_size=3))


def _mutated(config: dict, mutations: list[tuple[tuple[str, ...], object]]) -> dict:
    for path, value in mutations:
        section = config
        for key in path[:-1]:
            if not isinstance(section.get(key), dict):
                section[key] = {}
            section = section[key]
        section[path[-1]] = value
    return config


config_texts = st.one_of(
    config_mutations().map(lambda m: ("mutation", m)),
    st.text(max_size=200).map(lambda text: ("text", text.encode("utf-8", "surrogatepass"))),
    st.binary(max_size=200).map(lambda data: ("bytes", data)),
)
cells = st.lists(st.sampled_from([*'ab ,"\n\r\t\\é\x00', "good", "bad", "refund "]), max_size=12).map("".join)


@st.composite
def csv_bytes(draw: st.DrawFn) -> bytes:
    """CSV-like bytes: a header (right or wrong), up to MAX_FUZZ_ROWS rows of awkward cells, maybe cut
    short or spiked with bytes that are not UTF-8; or plain random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=400))
    header = draw(st.sampled_from(["text,label", "label,text", "text", "body,label", "text,label,extra", ""]))
    rows = draw(st.lists(st.lists(cells, min_size=0, max_size=3), max_size=MAX_FUZZ_ROWS))
    text = header + "\n" + "".join(",".join(row) + "\n" for row in rows)
    data = text.encode("utf-8", "surrogatepass")
    cut = draw(st.integers(0, len(data)))
    spike = draw(st.sampled_from([b"", b"\xff", b"\xc3", b"\x00"]))
    return data[:cut] + spike + data[cut:] if draw(st.booleans()) else data[:cut] + spike


@contextmanager
def fresh_project(tiny_model_dir: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="steward-fuzz-") as folder:
        yield write_project(Path(folder), tiny_model_dir)


def _write_config(config_path: Path, kind: str, content: object) -> None:
    if kind == "mutation":
        config = _mutated(yaml.safe_load(config_path.read_text(encoding="utf-8")), content)  # type: ignore[arg-type]
        config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    else:
        config_path.write_bytes(content)  # type: ignore[arg-type]


def assert_clean_ending(code: int, output: pytest.CaptureResult[str], registry_url: str) -> None:
    """Exit 0/1/2; a failure is one error line (or, from `steward validate`, its list of failed
    expectations on stdout); no version registered; the audit chain verifies."""
    assert code in (0, 1, 2)
    if code == 0 or (code == 1 and output.out.startswith("Validation failed")):
        assert "Traceback" not in output.err and "steward: error" not in output.err
    else:
        one_error_line(output.err)
    with Registry.open(registry_url) as registry:
        assert all(model.version_count == 0 for model in registry.list_models())
        assert registry.audit.verify().ok


@pytest.mark.usefixtures("prefect_harness")
@settings(FUZZ, max_examples=40)
@given(config=config_texts)
def test_validate_survives_random_configs(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], config: tuple[str, object],
) -> None:
    with fresh_project(tiny_model_dir) as config_path:
        _write_config(config_path, *config)
        registry_url = f"sqlite:///{config_path.parent / 'registry.db'}"
        code = main(["validate", "--config", str(config_path), "--registry", registry_url])
        assert_clean_ending(code, capsys.readouterr(), registry_url)


@pytest.mark.usefixtures("prefect_harness")
@settings(FUZZ, max_examples=25)
@given(data=csv_bytes())
def test_validate_survives_random_csv_bytes(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], data: bytes,
) -> None:
    with fresh_project(tiny_model_dir) as config_path:
        (config_path.parent / "data" / "train.csv").write_bytes(data)
        registry_url = f"sqlite:///{config_path.parent / 'registry.db'}"
        code = main(["validate", "--config", str(config_path), "--registry", registry_url])
        assert code in (1, 2)
        assert_clean_ending(code, capsys.readouterr(), registry_url)


@pytest.mark.usefixtures("prefect_harness")
@settings(FUZZ, max_examples=8)
@given(data=csv_bytes(), mutations=config_mutations(keep=("validation",), min_size=0))
def test_run_never_registers_a_version_from_broken_data(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], data: bytes,
    mutations: list[tuple[tuple[str, ...], object]],
) -> None:
    with fresh_project(tiny_model_dir) as config_path:
        _write_config(config_path, "mutation", mutations)
        (config_path.parent / "data" / "train.csv").write_bytes(data)
        registry_url = f"sqlite:///{config_path.parent / 'registry.db'}"
        code = main(["run", "--config", str(config_path), "--registry", registry_url])
        assert code in (1, 2)
        assert_clean_ending(code, capsys.readouterr(), registry_url)
