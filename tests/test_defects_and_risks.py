"""Defects and risks before promotion: slices with intervals beside a reference, the slice gate, flip rates under
perturbation, and where a user sees them (`steward run/evaluate --json`, the audit report, the audit trail)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
import yaml
from sklearn.metrics import f1_score

from core.config import EvaluationConfig
from tasks.gate import decide_promotion
from tasks.slices import SliceScore, confusion_pairs, score_slices, slices_of
from tests.test_flow_retrain import FILLER, LABEL_WORDS, registry_for, run_json

# A second domain whose texts say the same three things in words the first never uses.
CLINIC_WORDS = {
    "praise": ["kind", "caring", "gentle", "thorough", "patient", "calm", "friendly", "helpful"],
    "complaint": ["painful", "late", "dirty", "careless", "cold", "dismissive", "crowded", "unsafe"],
    "billing": ["insurance", "copay", "bill", "claim", "coverage", "deductible", "statement", "charge"],
}


def test_slice_scores_are_sklearns_with_an_interval_around_them() -> None:
    rng = random.Random(0)
    truth = [rng.choice("abc") for _ in range(300)]
    predicted = [label if rng.random() < 0.8 else rng.choice("abc") for label in truth]
    texts = ["x" * rng.randint(3, 90) for _ in truth]
    source = [rng.choice(["web", "mail", None]) for _ in truth]
    slices = slices_of(texts, truth, {"source": source})
    assert sorted(piece.name for piece in slices if piece.kind != "length") == [
        "class=a", "class=b", "class=c", "source=(missing)", "source=mail", "source=web"]
    lengths = [piece for piece in slices if piece.kind == "length"]
    assert len(lengths) == 4 and sorted(row for piece in lengths for row in piece.rows) == list(range(300))
    for piece, score in zip(slices, score_slices(slices, truth, predicted, truth, "champion"), strict=True):
        if piece.kind == "class":
            expected = f1_score(truth, predicted, labels=[piece.value], average=None)[0]
        else:
            rows = list(piece.rows)
            expected = f1_score([truth[i] for i in rows], [predicted[i] for i in rows], average="macro")
        assert score.score == pytest.approx(expected)
        assert score.ci_low <= score.score <= score.ci_high and score.ci_high - score.ci_low > 0.01
        assert score.reference == 1.0 and score.drop == pytest.approx(1.0 - score.score)


def test_confusion_pairs_count_the_most_common_mistakes_first() -> None:
    pairs = confusion_pairs(["t1", "t2", "t3", "t4"], ["a", "a", "a", "b"], ["b", "b", "a", "a"])
    assert [(p.true_label, p.predicted, p.count, p.examples) for p in pairs] == [
        ("a", "b", 2, ("t1", "t2")), ("b", "a", 1, ("t4",))]


def _slice(name: str, rows: int, score: float, reference: float) -> SliceScore:
    return SliceScore("source", name, rows, "macro_f1", score, score - 0.05, score + 0.05, reference, "champion")


def test_the_gate_refuses_a_slice_that_falls_too_far_and_names_it() -> None:
    policy = EvaluationConfig(min_score=0.0)
    slices = [_slice("web", 40, 0.90, 0.91), _slice("mail", 35, 0.70, 0.80), _slice("fax", 12, 0.20, 0.90)]
    outcome = decide_promotion({"macro_f1": 0.9}, {"macro_f1": 0.85}, policy, None, slices)
    assert outcome.outcome == "rejected"
    refused = [reason for reason in outcome.reasons if reason.startswith("slice")]
    assert len(refused) == 1 and "slice source=mail (35 rows)" in refused[0] and "0.1000 below" in refused[0]
    looser = EvaluationConfig(min_score=0.0, max_slice_drop=0.15)
    assert decide_promotion({"macro_f1": 0.9}, {"macro_f1": 0.85}, looser, None, slices).passed


def test_the_flip_rate_gates_only_when_a_limit_is_set() -> None:
    candidate = {"macro_f1": 0.9}
    assert decide_promotion(candidate, None, EvaluationConfig(min_score=0.0), None, (), 0.4).passed
    outcome = decide_promotion(candidate, None, EvaluationConfig(min_score=0.0, max_flip_rate=0.1), None, (), 0.4)
    assert not outcome.passed and "flip rate under perturbation 40.0% above max_flip_rate 10.0%" in outcome.reasons


def _rows(rng: random.Random, count: int, words: dict[str, list[str]], source: str) -> list[tuple[str, str, str]]:
    rows = []
    for index in range(count):
        label = sorted(words)[index % len(words)]
        picked = rng.sample(FILLER, 4) + rng.sample(words[label], 2)
        rng.shuffle(picked)
        rows.append((" ".join(picked), label, source))
    return rows


def _write(path: Path, rows: list[tuple[str, str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label", "source"])
        writer.writerows(rows)


def _two_domain_project(root: Path, base_model: Path) -> Path:
    """Tickets from a shop and a clinic, each with its own words for the same three classes; `source` says which."""
    rng = random.Random(11)
    data = root / "data"
    data.mkdir(parents=True)
    for name, count in (("train", 90), ("val", 30), ("test", 45)):
        _write(data / f"{name}.csv", _rows(rng, count, LABEL_WORDS, "shop") + _rows(rng, count, CLINIC_WORDS, "clinic"))
    config = {
        "name": "tickets", "base_model": str(base_model), "seed": 3,
        "data": {"train": "data/train.csv", "validation": "data/val.csv", "test": "data/test.csv",
                 "slice_columns": ["source"]},
        "validation": {"min_rows": 20, "label_issues": "off"},
        "pretraining": {"enabled": False},
        "finetuning": {"epochs": 4, "batch_size": 8, "max_seq_length": 32, "learning_rate": 5.0e-3},
        # Loose enough for the tiny model beside TF-IDF on the first run, far tighter than losing a domain.
        "evaluation": {"min_score": 0.0, "min_improvement": -1.0, "max_slice_drop": 0.2},
        "compression": {"enabled": False},
    }
    path = root / "steward.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _drop_domain(path: Path, source: str) -> None:
    with path.open(encoding="utf-8") as handle:
        rows = [tuple(row) for row in csv.reader(handle)][1:]
    _write(path, [row for row in rows if row[2] != source])


@pytest.mark.usefixtures("prefect_harness")
def test_a_candidate_worse_on_one_domain_only_is_refused_naming_the_slice(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    project = _two_domain_project(tmp_path, tiny_model_dir)
    code, first = run_json(capsys, "run", "--config", str(project))
    assert code == 0 and first["promoted"], (first["reasons"], first["metrics"])
    by_name = {piece["name"]: piece for piece in first["slices"]}
    assert {"source=shop", "source=clinic", "class=billing"} <= set(by_name)
    assert by_name["source=clinic"]["reference_name"] == "classical baseline"
    assert {rate["perturbation"] for rate in first["robustness"]} >= {"typo", "case", "whitespace", "all"}
    assert all(rate["champion_rate"] is None for rate in first["robustness"])
    assert {item["kind"] for item in first["explanations"]} >= {"correct"}

    # The second candidate never sees a clinic ticket: fine on the shop's, lost on the clinic's.
    for name in ("train.csv", "val.csv"):
        _drop_domain(project.parent / "data" / name, "clinic")
    code, second = run_json(capsys, "run", "--config", str(project))
    assert code == 1 and second["decision"] == "rejected"
    refused = [reason for reason in second["reasons"] if reason.startswith("slice source=")]
    assert len(refused) == 1 and refused[0].startswith("slice source=clinic (45 rows)"), refused
    assert all(rate["champion_rate"] is not None for rate in second["robustness"])

    with registry_for(project) as registry:
        decided = [e for e in registry.audit.events("tickets") if e.event_type == "gate_decision"][-1]
        assert "slice source=clinic" in decided.payload["reasons"]
        assert registry.evaluation(registry.get_version("tickets", 2).version.id).risks["slices"] == second["slices"]
        stages = [e.payload["stage"] for e in registry.audit.events("tickets") if e.event_type == "stage_completed"]
        assert stages.count("defects and risks") == 2
    report = Path(second["report"]).read_text(encoding="utf-8")
    assert 'id="defects-and-risks"' in report and "source=clinic" in report and "<mark" in report

    code, evaluated = run_json(capsys, "evaluate", "--config", str(project), "--model", "tickets:2")
    assert code == 0 and evaluated["slices"] == second["slices"] and evaluated["explanations"]


def test_a_slice_column_the_test_file_lacks_is_named(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    project = _two_domain_project(tmp_path, tiny_model_dir)
    config = yaml.safe_load(project.read_text())
    config["data"]["slice_columns"] = ["region"]
    project.write_text(yaml.safe_dump(config))
    code, refused = run_json(capsys, "run", "--config", str(project))
    assert code == 2
    assert refused["error"] == (f"{project.parent / 'data' / 'test.csv'}: no slice column 'region' "
                                "(columns found: text, label, source)")
