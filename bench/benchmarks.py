"""The real data sets the benchmarks read, and one seed's split of each into train, validation, test and corpus.

- Kotzias et al., "From Group to Individual Labels using Deep Features", KDD 2015 (CC BY 4.0): 1,000 labelled
  review sentences from each of Amazon, IMDB and Yelp, read from `../shared/data/sentiment_labelled_sentences/`
  beside the checkout (or $STEWARD_SHARED_DATA), never copied.
- The Debian `fortunes` package (`apt-get install fortunes`; BSD fortune-mod data, see
  /usr/share/doc/fortunes/copyright): quotations and jokes filed by topic in /usr/share/games/fortunes/<category>.
"""

from __future__ import annotations

import os
import random
import re
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path

from tasks.data import TextTable, make_table, split_validation

CITATION = 'Kotzias et al., "From Group to Individual Labels using Deep Features", KDD 2015 (CC BY 4.0)'
FORTUNES_CITATION = "the Debian `fortunes` package (fortune-mod data files), /usr/share/games/fortunes"
BESIDE_CHECKOUT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DOMAIN_FILES = {"amazon": "amazon_cells", "imdb": "imdb", "yelp": "yelp"}
SCHEMA = {"sentence": "object", "score": "object"}

FORTUNES_DIR = Path("/usr/share/games/fortunes")
# Topical categories with at least 200 entries in the package; not debian/linux/linuxcookie/perl (too close to
# each other), not the offensive-leaning ones (ethnic, men-women, drugs), not the catch-alls (fortunes, cookie).
FORTUNE_CATEGORIES = (
    "art", "computers", "definitions", "education", "law", "literature",
    "politics", "science", "songs-poems", "startrek", "wisdom", "work",
)
FORTUNE_CHARS = (20, 1_000)  # shorter is a fragment, longer a whole story or ASCII picture
FORTUNE_SCHEMA = {"text": "object", "label": "object"}
OVERSTRIKE = re.compile(r".\x08")  # `x<BS>x` bold or `_<BS>x` underline on a teletype: keep the second


@dataclass(frozen=True)
class Split:
    """One seed's data for one benchmark; every method sees exactly these rows."""

    train: TextTable
    validation: TextTable
    test: TextTable
    corpus: TextTable  # unlabelled in-domain text, disjoint from the test rows

    @property
    def classes(self) -> list[str]:
        return self.train.label_set()


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def data_dir() -> Path:
    return Path(os.environ.get("STEWARD_SHARED_DATA", BESIDE_CHECKOUT)) / "sentiment_labelled_sentences"


def read_domain(domain: str) -> TextTable:
    """One domain's `sentence<TAB>score` file, split on newlines only (IMDB has U+0085 inside sentences)."""
    path = data_dir() / f"{DOMAIN_FILES[domain]}_labelled.txt"
    rows = [line.rpartition("\t") for line in path.read_text(encoding="utf-8").split("\n")[1:] if line.strip()]
    texts: list[str | None] = [text.strip() for text, _, _ in rows]
    labels: list[str | None] = [score.strip() for _, _, score in rows]
    return make_table(domain, path, texts, labels, SCHEMA)


def stratified_indices(table: TextTable, size: int, seed: int) -> tuple[list[int], list[int]]:
    """A seeded, label-stratified choice of `size` row indices of `table`, and the other indices (both sorted)."""
    from sklearn.model_selection import train_test_split

    chosen, rest = train_test_split(range(table.rows), train_size=size, random_state=seed, stratify=table.labels)
    return sorted(chosen), sorted(rest)


def rows_of(table: TextTable, indices: list[int], role: str) -> TextTable:
    labels = None if table.labels is None else [table.labels[i] for i in indices]
    return make_table(role, table.source, [table.texts[i] for i in indices], labels, table.schema)


def kotzias_split(target: str, seed: int, train_limit: int | None) -> Split:
    """Train on the two other domains pooled (a seeded, stratified 10% is validation; then `train_limit` rows);
    the target domain halves, seeded and stratified, into an unlabelled corpus and the labelled test set."""
    sources = [read_domain(domain) for domain in DOMAIN_FILES if domain != target]
    texts = [text for table in sources for text in table.texts]
    labels = [label for table in sources for label in table.labels or []]
    train, validation = split_validation(make_table("train", data_dir(), texts, labels, SCHEMA), 0.1, seed)
    if train_limit is not None and train_limit < train.rows:
        train = rows_of(train, stratified_indices(train, train_limit, seed)[0], "train")
    domain = read_domain(target)
    adaptation, test = stratified_indices(domain, domain.rows // 2, seed)
    corpus = make_table("corpus", domain.source, [domain.texts[i] for i in adaptation], None, {"sentence": "object"})
    return Split(train, validation, rows_of(domain, test, "test"), corpus)


def clean_fortune(entry: str) -> str:
    """Overstrikes resolved, control characters dropped, whitespace (newlines included) collapsed to one space."""
    text = OVERSTRIKE.sub("", entry)
    return " ".join("".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text).split())


@cache
def fortune_pool() -> dict[str, tuple[str, ...]]:
    """Each category's cleaned entries (lines holding only `%` separate them) within the length bounds, in file
    order; repeats within a category kept once, and entries filed under two categories dropped from both."""
    shortest, longest = FORTUNE_CHARS
    entries = {}
    for category in FORTUNE_CATEGORIES:
        raw = (FORTUNES_DIR / category).read_text(encoding="utf-8", errors="replace")
        cleaned = (clean_fortune(entry) for entry in re.split(r"^%$", raw, flags=re.MULTILINE))
        entries[category] = list(dict.fromkeys(text for text in cleaned if shortest <= len(text) <= longest))
    filed = Counter(text for texts in entries.values() for text in texts)
    return {category: tuple(t for t in texts if filed[t] == 1) for category, texts in entries.items()}


def fortunes_split(seed: int, train_per_class: int, validation_per_class: int, test_per_class: int) -> Split:
    """Per category, seeded: `train_per_class` training rows, `validation_per_class` validation rows, up to
    `test_per_class` test rows, and every other entry of the category as unlabelled corpus."""
    rng = random.Random(seed)
    labelled = train_per_class + validation_per_class
    rows: dict[str, list[tuple[str, str]]] = {"train": [], "validation": [], "test": [], "corpus": []}
    for category, pool in fortune_pool().items():
        if len(pool) <= labelled:
            raise ValueError(f"fortunes: '{category}' has {len(pool)} entries, needs more than {labelled}")
        entries = rng.sample(pool, len(pool))
        cuts = (0, train_per_class, labelled, labelled + test_per_class, len(entries))
        for role, (start, end) in zip(rows, pairwise(cuts), strict=True):
            rows[role] += [(text, category) for text in entries[start:end]]

    def table(role: str) -> TextTable:
        texts: list[str | None] = [text for text, _ in rows[role]]
        labels: list[str | None] = [label for _, label in rows[role]]
        return make_table(role, FORTUNES_DIR, texts, labels, FORTUNE_SCHEMA)

    corpus_texts: list[str | None] = [text for text, _ in rows["corpus"]]
    corpus = make_table("corpus", FORTUNES_DIR, corpus_texts, None, {"text": "object"})
    return Split(table("train"), table("validation"), table("test"), corpus)
