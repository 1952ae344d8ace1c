"""The bundled demo dataset (steward/demo/): shape, splits, determinism, config, and difficulty."""

from __future__ import annotations

import csv
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from core.config import load_config
from steward import demo

SPLITS = ("train", "val", "test")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    demo.write_demo(root)
    return root


@pytest.fixture(scope="module")
def splits(workdir: Path) -> dict[str, list[dict[str, str]]]:
    return {name: _read_csv(workdir / "data" / f"{name}.csv") for name in SPLITS}


@pytest.fixture(scope="module")
def unlabelled(workdir: Path) -> dict[str, list[str]]:
    data = workdir / "data"
    return {
        "current": [row["text"] for row in _read_csv(data / "current.csv")],
        "drifted": [row["text"] for row in _read_csv(data / "drifted.csv")],
        "corpus": (data / "corpus.txt").read_text(encoding="utf-8").splitlines(),
    }


def test_write_demo_returns_the_config_path(tmp_path: Path) -> None:
    config_path = demo.write_demo(tmp_path / "fresh" / "dir")
    assert config_path == tmp_path / "fresh" / "dir" / "steward.yaml"
    assert config_path.is_file()
    names = sorted(p.name for p in (config_path.parent / "data").iterdir())
    assert names == ["corpus.txt", "current.csv", "drifted.csv", "test.csv", "train.csv", "val.csv"]


def test_row_counts_and_columns(workdir: Path, splits: dict, unlabelled: dict) -> None:
    data = workdir / "data"
    for name in SPLITS:
        with (data / f"{name}.csv").open(encoding="utf-8", newline="") as handle:
            assert next(csv.reader(handle)) == ["text", "label"]
    for name in ("current", "drifted"):
        with (data / f"{name}.csv").open(encoding="utf-8", newline="") as handle:
            assert next(csv.reader(handle)) == ["text"]

    total = sum(len(rows) for rows in splits.values())
    assert total >= 1500
    for name, share in zip(SPLITS, demo.SPLIT_FRACTIONS, strict=True):
        assert len(splits[name]) / total == pytest.approx(share, abs=0.02)
    assert 350 <= len(unlabelled["current"]) <= 450
    assert 350 <= len(unlabelled["drifted"]) <= 450
    assert len(unlabelled["corpus"]) >= 3000


def test_texts_are_clean_single_lines(splits: dict, unlabelled: dict) -> None:
    texts = [row["text"] for rows in splits.values() for row in rows]
    texts += [text for batch in unlabelled.values() for text in batch]
    for text in texts:
        assert text.strip() == text and text
        assert "\n" not in text and "\r" not in text
        assert "{" not in text and "}" not in text  # every template slot was filled
        assert len(text) <= 10_000


def test_six_labels_in_every_split(splits: dict) -> None:
    for rows in splits.values():
        assert {row["label"] for row in rows} == set(demo.LABELS)
    assert len(demo.LABELS) == 6


def test_splits_are_stratified(splits: dict) -> None:
    shares = {name: Counter(row["label"] for row in rows) for name, rows in splits.items()}
    train_total = len(splits["train"])
    for label in demo.LABELS:
        train_share = shares["train"][label] / train_total
        assert 0.10 <= train_share <= 0.25, label
        for name in ("val", "test"):
            share = shares[name][label] / len(splits[name])
            assert share == pytest.approx(train_share, abs=0.02), (label, name)


def test_no_duplicate_texts_within_or_across_files(splits: dict, unlabelled: dict) -> None:
    texts = [row["text"] for rows in splits.values() for row in rows]
    texts += unlabelled["current"] + unlabelled["drifted"] + unlabelled["corpus"]
    duplicates = [text for text, count in Counter(texts).items() if count > 1]
    assert duplicates == []


def test_same_seed_writes_the_same_bytes(tmp_path: Path, workdir: Path) -> None:
    first = demo.write_demo(tmp_path / "a").parent
    demo.write_demo(first)  # rewriting in place changes nothing either
    files = sorted(path.relative_to(workdir) for path in workdir.rglob("*") if path.is_file())
    assert len(files) == 8  # six data files and two configs
    assert {demo.CONFIG_FILE, demo.QUICK_CONFIG_FILE} <= {str(path) for path in files}
    for relative in files:
        assert (first / relative).read_bytes() == (workdir / relative).read_bytes(), relative


def test_another_seed_writes_other_data(tmp_path: Path, workdir: Path) -> None:
    other = demo.write_demo(tmp_path / "b", seed=8).parent
    assert (other / "data" / "train.csv").read_bytes() != (workdir / "data" / "train.csv").read_bytes()
    assert (other / "steward.yaml").read_bytes() == (workdir / "steward.yaml").read_bytes()


def test_config_loads_and_points_at_the_data(workdir: Path) -> None:
    config = load_config(workdir / "steward.yaml")
    assert config.name == "support-tickets"
    assert config.base_model == "minilm"
    assert config.seed == 13
    assert (config.data.text_column, config.data.label_column) == ("text", "label")
    assert config.validation.allowed_labels is None
    assert config.pretraining.enabled and config.pretraining.max_steps == 40
    assert config.finetuning.max_seq_length == 64
    assert config.evaluation.primary_metric == "macro_f1" and config.evaluation.min_score == "baseline"
    assert config.registry.url is None
    data_paths = [config.data.train, config.data.validation, config.data.test, config.data.domain_corpus]
    for path in data_paths:
        assert path is not None and not path.is_absolute()
        assert config.resolve(path).is_file(), path
    assert (workdir / "steward.yaml").read_text(encoding="utf-8").startswith("#")


def test_every_template_fills() -> None:
    rng = random.Random(0)
    blocks = demo.blocks()  # steward/demo/templates.yaml
    slots = {**demo.slots(), **blocks["drift_slots"]}
    templates = [t for group in blocks["ticket_templates"].values() for t in group]
    templates += [t for group in blocks["ambiguous_templates"].values() for t in group]
    templates += [t for group in blocks["vague_templates"].values() for t in group]
    templates += [*blocks["generic_vague"], *blocks["greetings"], *blocks["signoffs"], *blocks["extras"]]
    templates += [*blocks["prefixes"], *blocks["agent_replies"], *blocks["kb_snippets"], *blocks["status_updates"]]
    templates += [*blocks["nimbus_tickets"], *blocks["security_tickets"]]
    templates += [t for script in blocks["chat_scripts"] for turn in script for t in turn["says"]]
    for template in templates:
        assert "{" not in demo.fill(template, rng, slots), template
    assert set(blocks["ticket_templates"]) == set(blocks["ambiguous_templates"]) == set(demo.LABELS)
    assert all(len(group) >= 15 for group in blocks["ticket_templates"].values())


def test_module_imports_without_pandas() -> None:
    code = "import sys, steward.demo; assert 'pandas' not in sys.modules and 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_task_is_learnable_but_not_trivial(splits: dict) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = make_pipeline(vectorizer, LogisticRegression(max_iter=2000))
    model.fit([row["text"] for row in splits["train"]], [row["label"] for row in splits["train"]])
    predicted = model.predict([row["text"] for row in splits["test"]])
    macro_f1 = f1_score([row["label"] for row in splits["test"]], predicted, average="macro")
    assert 0.70 <= macro_f1 <= 0.97, macro_f1


def _domain_auc(positive: list[str], negative: list[str]) -> float:
    """How well a TF-IDF classifier tells the two batches apart (0.5: not at all)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline

    texts = positive + negative
    targets = [1] * len(positive) + [0] * len(negative)
    model = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    return float(cross_val_score(model, texts, targets, cv=folds, scoring="roc_auc").mean())


def test_drifted_batch_is_separable_from_test(splits: dict, unlabelled: dict) -> None:
    test_texts = [row["text"] for row in splits["test"]]
    assert _domain_auc(unlabelled["drifted"], test_texts) > 0.8


def test_current_batch_is_not_separable_from_test(splits: dict, unlabelled: dict) -> None:
    test_texts = [row["text"] for row in splits["test"]]
    assert _domain_auc(unlabelled["current"], test_texts) < 0.65
