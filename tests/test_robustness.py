"""The perturbations real text has, and the flip rate they give: seeded (the champion and the candidate see the same
changed texts), meaning-keeping edits, and a case-insensitive word model that no case or spacing change can flip."""

from __future__ import annotations

import random

from pypinyin import Style, lazy_pinyin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from tasks.robustness import PERTURBATIONS, flip_rates, homophone, homophones, perturbed, typo, width
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


def test_a_homophone_is_one_or_two_common_characters_read_the_same_with_tone() -> None:
    text = "我去银行取钱打印文件"  # hanzi only, so lazy_pinyin gives one in-context reading per character
    readings, counts = lazy_pinyin(text, style=Style.TONE3), set()
    for seed in range(200):
        changed = homophone(text, random.Random(seed))
        at = [i for i, (a, b) in enumerate(zip(text, changed, strict=True)) if a != b]
        counts.add(len(at))
        for i in at:
            assert changed[i].encode("gb2312") and lazy_pinyin(changed[i], style=Style.TONE3) == [readings[i]]
        if 3 in at:
            assert readings[3] == "hang2" and changed[3] in "杭航绗珩颃"  # 行 read in context (银行), not xing2
    assert counts == {1, 2}


def test_homophones_are_indexed_once_over_the_gb2312_hanzi() -> None:
    index = homophones()
    assert homophones() is index
    assert sum(len(characters) for characters in index.values()) == 6763
    assert "银" in index["yin2"] and "行" in index["xing2"] and "行" not in index["hang2"]


def test_homophone_applies_to_chinese_text_only_and_is_seeded() -> None:
    assert [row for row, _ in perturbed(TEXTS, "homophone", 0)] == [3]
    assert perturbed(TEXTS, "homophone", 3) == perturbed(TEXTS, "homophone", 3)
    assert len({perturbed(TEXTS, "homophone", seed)[0][1] for seed in range(10)}) > 1
    for text in ("printer jammed", "日本語のテキスト", "프린터가 고장났어요", "白北打"):  # 白北打: no common homophone
        assert homophone(text, random.Random(0)) == text


def test_a_case_insensitive_word_model_flips_on_typos_but_never_on_case_or_spacing() -> None:
    rows = _sentences(random.Random(5), 300)
    texts, labels = [text for text, _ in rows], [label for _, label in rows]
    model = make_pipeline(TfidfVectorizer(lowercase=True), LogisticRegression(max_iter=1000)).fit(texts, labels)
    rates = {rate.perturbation: rate for rate in flip_rates(texts[:200], lambda batch: list(model.predict(batch)), 0)}
    assert rates["case"].rows > 0 and rates["case"].flips == 0
    assert rates["whitespace"].rows > 0 and rates["whitespace"].flips == 0
    assert 0 < rates["typo"].rate < 0.5
    assert rates["all"].rows == sum(rate.rows for name, rate in rates.items() if name != "all")
