"""Robustness: how often a classifier changes its answer when a text changes the way real text does.

Each perturbation keeps the text's meaning for a reader: one or two character typos (a character inserted,
dropped, swapped with its neighbour, or replaced by a neighbour on a QWERTY keyboard), a case change, doubled
whitespace, added or dropped punctuation, and for CJK text a switch between full-width and half-width forms and
homophones: one or two Chinese characters replaced by another with the same toned pinyin, as a pinyin IME offers
when the typist picks the wrong candidate. The source character's reading is pypinyin's in context (its phrase data,
no heteronyms); candidates are the 6,763 GB2312 hanzi (common characters), indexed once by their own pypinyin reading.
Each is drawn from a generator seeded per (perturbation, row), so the same test set perturbs the same way for
the champion and the candidate. The flip rate is the share of rows whose predicted label changes; a text a
perturbation cannot change (no letters to mistype, no character with a common homophone) is left out of that
perturbation's rows.
"""

from __future__ import annotations

import functools
import random
import string
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
NEIGHBOURS = {
    key: "".join(row[j] for j in (i - 1, i + 1) if 0 <= j < len(row))
    for row in KEYBOARD_ROWS for i, key in enumerate(row)
}
PUNCTUATION = ".,!?;:"
FULL_WIDTH_OFFSET = 0xFEE0  # U+FF01..U+FF5E are U+0021..U+007E shifted by this
GB2312_HANZI_ROWS = range(0xB0, 0xF8)  # hanzi at rows 0xB0..0xF7, cells 0xA1..0xFE (0xD7FA..0xD7FE unassigned)
GB2312_CELLS = range(0xA1, 0xFF)

Perturbation = Callable[[str, random.Random], str]


def _letter_positions(text: str) -> list[int]:
    return [i for i, character in enumerate(text) if character.isalpha()]


def typo(text: str, rng: random.Random) -> str:
    """One or two typos at letters: insert, drop, swap with the next character, or a keyboard neighbour (typos that
    change nothing, such as swapping "mm" or a swap undone by the next, are drawn again)."""
    for _attempt in range(10):
        changed = text
        for _ in range(rng.choice((1, 2))):
            changed = _one_typo(changed, rng)
        if changed != text:
            return changed
    return text


def _one_typo(text: str, rng: random.Random) -> str:
    positions = _letter_positions(text)
    if not positions:
        return text
    at = rng.choice(positions)
    kind = rng.choice(("insert", "drop", "swap", "neighbour"))
    lower = text[at].lower()
    if kind == "insert":
        return text[:at] + rng.choice(string.ascii_lowercase) + text[at:]
    if kind == "drop" and len(text) > 1:
        return text[:at] + text[at + 1 :]
    if kind == "swap" and at + 1 < len(text):
        return text[:at] + text[at + 1] + text[at] + text[at + 2 :]
    if lower in NEIGHBOURS:
        replacement = rng.choice(NEIGHBOURS[lower])
        return text[:at] + (replacement.upper() if text[at].isupper() else replacement) + text[at + 1 :]
    return text


def case(text: str, rng: random.Random) -> str:
    """All lower case, all upper case, or each word capitalised."""
    return rng.choice((str.lower, str.upper, str.title))(text)


def whitespace(text: str, rng: random.Random) -> str:
    """Spaces doubled at random word boundaries, and a space at either end."""
    words = text.split(" ")
    joined = "".join(word + (" " if rng.random() < 0.5 else "  ") for word in words).rstrip(" ")
    return f" {joined} " if rng.random() < 0.5 else joined


def punctuation(text: str, rng: random.Random) -> str:
    """The text's punctuation dropped, or a mark added at its end."""
    stripped = "".join(character for character in text if character not in PUNCTUATION)
    return stripped if stripped != text and rng.random() < 0.5 else text + rng.choice(PUNCTUATION)


def width(text: str, rng: random.Random) -> str:
    """CJK text: ASCII letters, digits and punctuation to their full-width forms, or full-width ones to ASCII."""
    if any(0xFF01 <= ord(character) <= 0xFF5E for character in text):
        return unicodedata.normalize("NFKC", text)
    return "".join(chr(ord(c) + FULL_WIDTH_OFFSET) if 0x21 <= ord(c) <= 0x7E else c for c in text)


def _is_ideograph(character: str) -> bool:
    return 0x4E00 <= ord(character) <= 0x9FFF  # CJK Unified Ideographs


def _is_japanese(text: str) -> bool:
    return any(0x3040 <= ord(character) <= 0x30FF for character in text)  # kana: kanji are not typed by pinyin


def _readings(text: str) -> list[str]:
    """Each character's toned pinyin ("hang2"; neutral tone has no digit), in context; "" where it has none."""
    from pypinyin import Style, pinyin

    readings = pinyin(text, style=Style.TONE3, heteronym=False, errors=lambda run: [""] * len(run))
    return [reading[0] for reading in readings]


def _gb2312_hanzi() -> list[str]:
    decoded = (bytes((row, cell)).decode("gb2312", "ignore") for row in GB2312_HANZI_ROWS for cell in GB2312_CELLS)
    return [character for character in decoded if character]  # "" where the code is unassigned


@functools.cache
def homophones() -> dict[str, tuple[str, ...]]:
    """Toned pinyin -> the common (GB2312) hanzi whose own reading it is, in GB2312 order; built once, on first use."""
    from pypinyin import Style, pinyin

    hanzi = _gb2312_hanzi()
    index: defaultdict[str, list[str]] = defaultdict(list)
    for character, reading in zip(hanzi, pinyin(hanzi, style=Style.TONE3, heteronym=False), strict=True):
        index[reading[0]].append(character)
    return {reading: tuple(characters) for reading, characters in index.items()}


def _substitutes(text: str) -> dict[int, list[str]]:
    """Position -> the other common hanzi read as the one there is, for each ideograph that has some."""
    index = homophones()
    options = {at: [other for other in index.get(reading, ()) if other != text[at]]
               for at, reading in enumerate(_readings(text)) if _is_ideograph(text[at])}
    return {at: others for at, others in options.items() if others}


def homophone(text: str, rng: random.Random) -> str:
    """Chinese text: one or two hanzi replaced by a different common hanzi with the same toned pinyin (hanzi with no
    common homophone are skipped; Japanese text, with kana, is left unchanged)."""
    if _is_japanese(text) or not any(_is_ideograph(character) for character in text):
        return text
    options, characters = _substitutes(text), list(text)
    for at in rng.sample(sorted(options), min(rng.choice((1, 2)), len(options))):
        characters[at] = rng.choice(options[at])
    return "".join(characters)


def is_cjk(text: str) -> bool:
    return any(unicodedata.east_asian_width(character) == "W" for character in text)


PERTURBATIONS: dict[str, Perturbation] = {"typo": typo, "case": case, "whitespace": whitespace,
                                          "punctuation": punctuation, "width": width, "homophone": homophone}
CJK_ONLY = frozenset({"width", "homophone"})


def perturbed(texts: Sequence[str], name: str, seed: int) -> list[tuple[int, str]]:
    """(row, perturbed text) for each text the perturbation changes; `width` and `homophone` apply to CJK texts only."""
    perturb = PERTURBATIONS[name]
    rows = []
    for row, text in enumerate(texts):
        if name in CJK_ONLY and not is_cjk(text):
            continue
        changed = perturb(text, random.Random(f"{seed}:{name}:{row}"))
        if changed != text:
            rows.append((row, changed))
    return rows


@dataclass(frozen=True)
class FlipRate:
    perturbation: str
    rows: int  # texts the perturbation changed
    flips: int  # of which the predicted label changed

    @property
    def rate(self) -> float:
        return self.flips / self.rows if self.rows else 0.0


def flip_rates(texts: Sequence[str], predict: Callable[[list[str]], list[str]], seed: int) -> list[FlipRate]:
    """Per perturbation and overall ("all"), how often `predict`'s label changes under it."""
    original = predict(list(texts))
    rates = []
    for name in PERTURBATIONS:
        rows = perturbed(texts, name, seed)
        labels = predict([text for _, text in rows]) if rows else []
        rates.append(FlipRate(name, len(rows), sum(label != original[row] for (row, _), label in
                                                   zip(rows, labels, strict=True))))
    rates.append(FlipRate("all", sum(r.rows for r in rates), sum(r.flips for r in rates)))
    return rates
