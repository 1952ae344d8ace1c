"""`steward monitor` for a causal-lm champion on the tiny Llama: the champion's perplexity on a batch against its test
split (rebuilt from the corpus by document), the text descriptors, the retrain decision's episode and cooldown
rules, and a corpus edited after the run refused."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from steward.cli import main
from tasks.perplexity import DocumentLosses, unpaired_increase
from tests.test_flow_language_model import _documents, registry_for, run_json, write_lm_project
from tests.test_monitor import _cached_results, _set_monitoring

CORPUS_DOCUMENTS = 200  # 20 test documents: the reference
# The tiny decoder's LoRA gains only ~12% perplexity over its random base, so no batch can be much more than that worse
# than its test split; the threshold is scaled to it (a real base adapted to a real corpus meets the default, 0.25).
MAX_PERPLEXITY_INCREASE = 0.03
# Another desk's notes in the corpus's shape (a numbered note, four short sentences, the same lengths and punctuation)
# in words and phrasing the champion never saw: only the champion's perplexity can tell the batch apart.
OTHER_SUBJECTS = ["the movie", "my dog", "the screen", "the music", "the battery", "the story", "the film"]
OTHER_VERBS = ["sat with", "ran to", "felt", "hid from"]
OTHER_STATES = ["sad", "red", "blue", "big", "small", "happy", "poor", "nice", "green", "ugly"]


def _other_documents(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"note {rng.randrange(CORPUS_DOCUMENTS)}: " + " ".join(
        f"{rng.choice(OTHER_SUBJECTS)} {rng.choice(OTHER_VERBS)} {rng.choice(OTHER_STATES)}." for _ in range(4))
        for _ in range(count)]


def _same_domain_documents(count: int, seed: int) -> list[str]:
    """New notes of the corpus's grammar, numbered from the corpus's range as its test documents are."""
    return random.Random(seed).sample(_documents(CORPUS_DOCUMENTS, seed), count)


@pytest.fixture(scope="module")
def lm_champion(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, prefect_harness: None) -> Path:
    """A causal-lm project whose first run made its LoRA adapter v1, the champion (trained once for the module)."""
    config = write_lm_project(tmp_path_factory.mktemp("lm-monitor") / "p", tiny_llama_dir,
                              _documents(CORPUS_DOCUMENTS, 1),
                              monitoring={"max_perplexity_increase": MAX_PERPLEXITY_INCREASE})
    assert main(["run", "--config", str(config)]) == 0
    return config


@pytest.fixture
def monitoring_settings(lm_champion: Path) -> Iterator[None]:
    """The config as the module's champion was trained with, back after a test that changes its monitoring."""
    original = lm_champion.read_text(encoding="utf-8")
    yield
    lm_champion.write_text(original, encoding="utf-8")


def _monitor(capsys: pytest.CaptureFixture[str], config: Path, batch: Path) -> dict:
    code, outcome = run_json(capsys, "monitor", "--config", str(config), "--current", str(batch))
    assert code == 0, outcome
    return outcome


@pytest.mark.usefixtures("prefect_harness")
def test_same_domain_batch_is_not_flagged_and_the_reference_is_the_runs_own_scores(
    lm_champion: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh = lm_champion.parent / "fresh.txt"  # one document per line, from the corpus's grammar
    fresh.write_text("\n".join(_same_domain_documents(60, 11)) + "\n", encoding="utf-8")
    before = _cached_results(lm_champion)
    code, outcome = run_json(capsys, "monitor", "--config", str(lm_champion), "--current", str(fresh),
                             "--fail-on-drift")
    assert code == 0, outcome
    assert (outcome["finding"], outcome["drift_detected"], outcome["retrain"]) == ("none", False, "not_needed")
    signals = {signal["name"]: signal for signal in outcome["signals"]}
    assert set(signals) == {"perplexity", "length", "non_letter_share"}
    assert {signal["kind"] for signal in signals.values()} == {"covariate"}
    perplexity = signals["perplexity"]
    assert perplexity["effect_threshold"] == MAX_PERPLEXITY_INCREASE
    assert perplexity["effect"] < MAX_PERPLEXITY_INCREASE and not perplexity["significant"]
    assert (outcome["reference"], outcome["reference_scored"], outcome["current_rows"]) == ("test", 20, 60)
    assert outcome["class_mix_report"] == ""  # a language model has no classes
    assert "Value Drift for column length" in Path(outcome["report"]).read_text(encoding="utf-8")
    # The champion's losses on its test split come from Prefect's cache, where its own run left them.
    assert _cached_results(lm_champion) == before


@pytest.mark.usefixtures("prefect_harness", "monitoring_settings")
def test_shifted_batch_asks_for_one_retrain_per_episode_and_none_within_the_cooldown(
    lm_champion: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shifted = lm_champion.parent / "other-desk"  # a folder of documents, one per file
    shifted.mkdir()
    for index, document in enumerate(_other_documents(40, 5)):
        (shifted / f"{index:03}.md").write_text(document + "\n", encoding="utf-8")
    fresh = lm_champion.parent / "fresh.jsonl"
    fresh.write_text("".join(json.dumps({"text": text}) + "\n" for text in _same_domain_documents(40, 12)),
                     encoding="utf-8")
    _set_monitoring(lm_champion, drift_share_threshold=0.5)  # so only the perplexity rule can find drift

    first = _monitor(capsys, lm_champion, shifted)
    assert (first["finding"], first["retrain"], first["drifted_signals"]) == ("drift", "requested", ["perplexity"])
    assert first["drift_share"] < first["threshold"] == 0.5  # a drifted perplexity is drift on its own
    perplexity = next(signal for signal in first["signals"] if signal["name"] == "perplexity")
    assert perplexity["significant"] and perplexity["effect"] >= MAX_PERPLEXITY_INCREASE
    assert "bootstrap 95% CI" in perplexity["method"]

    assert [(o["finding"], o["retrain"]) for o in (_monitor(capsys, lm_champion, batch) for batch in
                                                   (shifted, fresh, shifted))] == [
        ("drift", "same_episode"),  # the retrain it asked for gave no new champion
        ("none", "not_needed"),  # the episode ends
        ("drift", "cooldown"),  # a new episode, within a day of the last request
    ]
    with registry_for(lm_champion) as registry:
        drifted = [e for e in registry.audit.events("notes") if e.event_type == "drift_detected"]
        assert [e.payload["retrain"] for e in drifted] == ["requested", "same_episode", "cooldown"]
        assert registry.audit.verify().ok
        assert len(registry.list_versions("notes")) == 1


@pytest.mark.usefixtures("prefect_harness")
def test_a_corpus_edited_after_the_run_is_refused_in_one_line(
    lm_champion: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = lm_champion.parent / "notes.txt"
    original = corpus.read_text(encoding="utf-8")
    batch = lm_champion.parent / "batch.txt"
    batch.write_text("\n".join(_same_domain_documents(5, 13)) + "\n", encoding="utf-8")
    try:
        corpus.write_text(original + "note 200: the refund was paid.\n", encoding="utf-8")
        code, outcome = run_json(capsys, "monitor", "--config", str(lm_champion), "--current", str(batch))
    finally:
        corpus.write_text(original, encoding="utf-8")
    assert code == 2
    error = outcome["error"]
    assert error.startswith(f"{corpus}: changed since notes v1 was trained on it") and "\n" not in error
    assert error.endswith("drift needs the champion's test data as reference")


def _losses(cross_entropies: list[float], tokens: int = 50) -> DocumentLosses:
    return DocumentLosses(np.asarray(cross_entropies) * tokens, np.full(len(cross_entropies), tokens))


def test_unpaired_increase_is_the_perplexity_ratio_with_each_batch_resampled_on_its_own() -> None:
    rng = np.random.default_rng(0)
    reference = _losses(list(rng.normal(2.0, 0.2, 40)))
    worse = _losses(list(rng.normal(2.0 + np.log(1.5), 0.2, 60)))
    increase = unpaired_increase(reference, worse, seed=0)
    assert increase.value == pytest.approx(worse.perplexity / reference.perplexity - 1)
    assert 0 < increase.low < increase.value < increase.high
    # The same documents on both sides still vary: the two resamplings are independent, not paired.
    same = unpaired_increase(reference, reference, seed=0)
    assert same.value == pytest.approx(0) and same.low < 0 < same.high
