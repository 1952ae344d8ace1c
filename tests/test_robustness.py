"""The perturbations real text has, and the flip rate they give: seeded (the champion and the candidate see the same
changed texts), meaning-keeping edits, and a case-insensitive word model that no case or spacing change can flip."""

from __future__ import annotations

import random

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from tasks.robustness import PERTURBATIONS, flip_rates, perturbed, typo, width
from tests.test_flow_retrain import _sentences

TEXTS = ["the printer on floor two is jammed again", "vpn drops every hour, please help!",
         "Refund my last invoice", "打印机又卡纸了，请帮忙。"]


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def test_the_same_seed_perturbs_the_same_way() -> None:
    for name in PERTURBATIONS:
        assert perturbed(TEXTS, name, 3) == perturbed(TEXTS, name, 3)
    assert perturbed(TEXTS, "typo", 3) != perturbed(TEXTS, "typo", 4)


def test_a_typo_is_one_or_two_small_edits() -> None:
    for seed in range(200):
        changed = typo(TEXTS[0], random.Random(seed))
        assert 1 <= edit_distance(TEXTS[0], changed) <= 4  # a swap is two substitutions


def test_width_applies_to_cjk_text_and_round_trips() -> None:
    assert [row for row, _ in perturbed(TEXTS, "width", 0)] == [3]
    full = width("价格 100 元, OK", random.Random(0))
    assert full == "价格 １００ 元， ＯＫ"
    assert width(full, random.Random(0)) == "价格 100 元, OK"


def test_a_case_insensitive_word_model_flips_on_typos_but_never_on_case_or_spacing() -> None:
    rows = _sentences(random.Random(5), 300)
    texts, labels = [text for text, _ in rows], [label for _, label in rows]
    model = make_pipeline(TfidfVectorizer(lowercase=True), LogisticRegression(max_iter=1000)).fit(texts, labels)
    rates = {rate.perturbation: rate for rate in flip_rates(texts[:200], lambda batch: list(model.predict(batch)), 0)}
    assert rates["case"].rows > 0 and rates["case"].flips == 0
    assert rates["whitespace"].rows > 0 and rates["whitespace"].flips == 0
    assert 0 < rates["typo"].rate < 0.5
    assert rates["all"].rows == sum(rate.rows for name, rate in rates.items() if name != "all")
