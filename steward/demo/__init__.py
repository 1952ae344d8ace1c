"""The bundled demo dataset: synthetic IT-support tickets, written by `steward demo`.

Everything here is the project's own text, generated with a seeded `random.Random` from hand-written building
blocks (templates and slot values, `templates.yaml` beside this file), so the same seed always writes the same
bytes. `write_demo` produces, under `<workdir>/data/`:

- `train.csv`, `val.csv`, `test.csv` (`text,label`): labelled tickets in six categories,
  split 70/15/15 per label. About 8% of tickets mention two categories and are labelled by the
  main issue, and about 11% are terse ("It's not working since 9am.") with little or no hint of
  their category, so the task is learnable but not trivial.
- `corpus.txt`: unlabelled in-domain text for continued pretraining (ticket bodies, agent replies,
  knowledge-base snippets, status updates), one document per line.
- `current.csv` (`text`): a fresh batch from the training distribution (no drift).
- `drifted.csv` (`text`): a shifted batch: tickets after a migration to a new collaboration suite
  ("Nimbus Workspace"), long chat transcripts and a phishing/security-incident outbreak.

and two configs beside `data/`: `steward.yaml` (Steward's full recipe) and `steward-quick.yaml`, the same with
`QUICK_RECIPE` applied: the lighter recipe `steward demo` runs, so that its first result comes in minutes on two
CPU cores; it still walks every stage and writes the audit report.
"""

from __future__ import annotations

import csv
import io
import random
import re
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

LABELS: tuple[str, ...] = ("access", "hardware", "network", "software", "email", "printing")

# Share of each label among labelled tickets (and in current.csv).
LABEL_WEIGHTS: dict[str, float] = {
    "access": 0.19,
    "hardware": 0.16,
    "network": 0.17,
    "software": 0.19,
    "email": 0.17,
    "printing": 0.12,
}

N_LABELLED = 1800
N_CURRENT = 400
N_DRIFTED = 400
N_CORPUS = 3200
AMBIGUOUS_FRACTION = 0.08  # tickets that mention two categories
VAGUE_FRACTION = 0.12  # of the others: terse tickets with little or no hint of the category
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
CONFIG_FILE, QUICK_CONFIG_FILE = "steward.yaml", "steward-quick.yaml"
# What the quick config changes in the full one: one fine-tuning epoch, a smaller self-training round.
QUICK_RECIPE: dict[str, Any] = {
    "finetuning": {"epochs": 1, "self_training": {"ratio": 0.5, "max_corpus_rows": 2000}},
}


def _package_text(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


@cache
def blocks() -> dict[str, Any]:
    """The building blocks in `templates.yaml`: slot values, templates per label, chat scripts."""
    import yaml

    return yaml.safe_load(_package_text("templates.yaml"))


def slots() -> dict[str, list[str]]:
    return blocks()["slots"]


def config_yaml() -> str:
    """The demo's full config (`steward.yaml`)."""
    return _package_text(CONFIG_FILE)


def quick_config_yaml() -> str:
    """The demo's lighter config: the full one with `QUICK_RECIPE` merged in."""
    import yaml

    config = _merged(yaml.safe_load(config_yaml()), QUICK_RECIPE)
    changes = yaml.safe_dump(QUICK_RECIPE, sort_keys=False, default_flow_style=True, width=1000).strip()
    header = (f"# The lighter recipe `steward demo` runs: {CONFIG_FILE} (the full recipe, with comments) with "
              f"{changes}.\n")
    return header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = _merged(base.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


# --------------------------------------------------------------------------------------------
# Generation.
# --------------------------------------------------------------------------------------------

_SLOT_PATTERN = re.compile(r"\{(\w+)\}")


def fill(template: str, rng: random.Random, values: dict[str, list[str]] | None = None) -> str:
    """Replace every `{slot}` in `template` (recursively) with a random value of that slot (`values`: the slots,
    by default the ticket slots)."""
    values = values if values is not None else slots()

    def pick(match: re.Match[str]) -> str:
        return fill(rng.choice(values[match.group(1)]), rng, values)

    return _SLOT_PATTERN.sub(pick, template)


def _typo(text: str, rng: random.Random) -> str:
    """One realistic slip in a random longer word: swapped, dropped or doubled letter."""
    words = text.split(" ")
    candidates = [i for i, word in enumerate(words) if len(word) >= 5 and word.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    word = words[i]
    j = rng.randrange(1, len(word) - 2)
    kind = rng.randrange(3)
    if kind == 0:
        word = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    elif kind == 1:
        word = word[:j] + word[j + 1 :]
    else:
        word = word[:j] + word[j] + word[j:]
    words[i] = word
    return " ".join(words)


def _dress(body: str, rng: random.Random) -> str:
    """Wrap a ticket body in the varied habits of real users: greetings, sign-offs, typos, case."""
    parts = []
    if rng.random() < 0.3:
        parts.append(rng.choice(blocks()["greetings"]))
    parts.append(body)
    if rng.random() < 0.3:
        parts.append(rng.choice(blocks()["extras"]))
    if rng.random() < 0.3:
        parts.append(rng.choice(blocks()["signoffs"]))
    text = fill(" ".join(parts), rng)
    if rng.random() < 0.1:
        text = fill(rng.choice(blocks()["prefixes"]), rng) + text
    if rng.random() < 0.15:
        text = _typo(text, rng)
    if rng.random() < 0.07:
        text = text.lower()
    return text


def _lower_first(text: str) -> str:
    return text[0].lower() + text[1:] if text[:2].isalpha() and not text[:2].isupper() else text


def ticket(label: str, rng: random.Random, ambiguous: bool = False) -> str:
    """One ticket of `label`; an ambiguous one mentions a second category but is mainly about `label`."""
    if not ambiguous:
        if rng.random() < VAGUE_FRACTION:
            return _dress(fill(rng.choice(blocks()["vague_templates"][label] + blocks()["generic_vague"]), rng), rng)
        return _dress(fill(rng.choice(blocks()["ticket_templates"][label]), rng), rng)
    if rng.random() < 0.4:
        return _dress(fill(rng.choice(blocks()["ambiguous_templates"][label]), rng), rng)
    other = rng.choice([name for name in LABELS if name != label])
    main = fill(rng.choice(blocks()["ticket_templates"][label]), rng)
    second = _lower_first(fill(rng.choice(blocks()["ticket_templates"][other]), rng))
    return _dress(rng.choice(blocks()["two_issue_connectors"]).format(main=main, second=second), rng)


def _unique(make: Callable[[], str], count: int, seen: set[str]) -> list[str]:
    """`count` texts from `make` that are not in `seen` (which is updated)."""
    texts: list[str] = []
    attempts = 0
    while len(texts) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise RuntimeError("demo generator ran out of distinct texts; add templates or slot values")
        text = make()
        if text not in seen:
            seen.add(text)
            texts.append(text)
    return texts


def _label_counts(total: int) -> dict[str, int]:
    counts = {label: int(total * LABEL_WEIGHTS[label]) for label in LABELS}
    counts[LABELS[0]] += total - sum(counts.values())
    return counts


def labelled_tickets(rng: random.Random, total: int, seen: set[str]) -> list[tuple[str, str]]:
    """`total` distinct (text, label) rows with the label mix of LABEL_WEIGHTS, in label order."""
    rows: list[tuple[str, str]] = []
    for label, count in _label_counts(total).items():

        def make(label: str = label) -> str:
            return ticket(label, rng, ambiguous=rng.random() < AMBIGUOUS_FRACTION)

        rows.extend((text, label) for text in _unique(make, count, seen))
    return rows


def stratified_split(
    rows: list[tuple[str, str]], rng: random.Random
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """Split per label into train/validation/test by SPLIT_FRACTIONS, then shuffle each split."""
    train: list[tuple[str, str]] = []
    val: list[tuple[str, str]] = []
    test: list[tuple[str, str]] = []
    for label in LABELS:
        group = [row for row in rows if row[1] == label]
        rng.shuffle(group)
        n_train = round(len(group) * SPLIT_FRACTIONS[0])
        n_val = round(len(group) * SPLIT_FRACTIONS[1])
        train += group[:n_train]
        val += group[n_train : n_train + n_val]
        test += group[n_train + n_val :]
    for split in (train, val, test):
        rng.shuffle(split)
    return train, val, test


def current_batch(rng: random.Random, total: int, seen: set[str]) -> list[str]:
    """New, unlabelled tickets from the training distribution (no drift)."""
    texts = [text for text, _ in labelled_tickets(rng, total, seen)]
    rng.shuffle(texts)
    return texts


def _chat_transcript(rng: random.Random) -> str:
    """A long one-line help-chat transcript about the Nimbus Workspace migration."""
    values = {**slots(), **blocks()["drift_slots"]}
    # One product, team, room, ... per conversation, so that the turns agree with each other.
    for key in ("nimbus", "team", "ioc", "room", "office", "laptop"):
        values[key] = [rng.choice(values[key])]
    agent = rng.choice(blocks()["drift_slots"]["agent"])
    user = rng.choice(slots()["name"])
    minutes = rng.randrange(8 * 60, 17 * 60)
    turns = []
    for turn in rng.choice(blocks()["chat_scripts"]):
        minutes += rng.randrange(1, 4)
        who = agent if turn["speaker"] == "agent" else user
        text = rng.choice(turn["says"]).replace("{name}", user)
        turns.append(f"[{minutes // 60:02d}:{minutes % 60:02d}] {who}: {fill(text, rng, values)}")
    return " ".join(turns)


def drifted_batch(rng: random.Random, total: int, seen: set[str]) -> list[str]:
    """A shifted batch: Nimbus Workspace migration tickets, chat transcripts, security incidents."""
    values = {**slots(), **blocks()["drift_slots"]}

    def make() -> str:
        kind = rng.random()
        if kind < 0.35:
            return _chat_transcript(rng)
        if kind < 0.7:
            return _dress(fill(rng.choice(blocks()["nimbus_tickets"]), rng, values), rng)
        return _dress(fill(rng.choice(blocks()["security_tickets"]), rng, values), rng)

    return _unique(make, total, seen)


def corpus_lines(rng: random.Random, total: int, seen: set[str]) -> list[str]:
    """Unlabelled in-domain documents: ticket bodies, agent replies, KB snippets, status updates."""

    def make() -> str:
        kind = rng.random()
        if kind < 0.45:
            return ticket(rng.choice(LABELS), rng, ambiguous=rng.random() < AMBIGUOUS_FRACTION)
        if kind < 0.7:
            return fill(rng.choice(blocks()["agent_replies"]), rng)
        if kind < 0.88:
            return fill(rng.choice(blocks()["kb_snippets"]), rng)
        return fill(rng.choice(blocks()["status_updates"]), rng)

    return _unique(make, total, seen)


# --------------------------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------------------------


def _csv_bytes(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)


def demo_files(seed: int = 7) -> dict[str, bytes]:
    """Every file of the demo, relative path -> content; the same seed gives the same bytes."""
    seen: set[str] = set()
    labelled = labelled_tickets(random.Random(f"{seed}:labelled"), N_LABELLED, seen)
    train, val, test = stratified_split(labelled, random.Random(f"{seed}:split"))
    current = current_batch(random.Random(f"{seed}:current"), N_CURRENT, seen)
    drifted = drifted_batch(random.Random(f"{seed}:drifted"), N_DRIFTED, seen)
    corpus = corpus_lines(random.Random(f"{seed}:corpus"), N_CORPUS, seen)
    return {
        "data/train.csv": _csv_bytes(("text", "label"), train),
        "data/val.csv": _csv_bytes(("text", "label"), val),
        "data/test.csv": _csv_bytes(("text", "label"), test),
        "data/current.csv": _csv_bytes(("text",), ((text,) for text in current)),
        "data/drifted.csv": _csv_bytes(("text",), ((text,) for text in drifted)),
        "data/corpus.txt": ("\n".join(corpus) + "\n").encode("utf-8"),
        CONFIG_FILE: config_yaml().encode("utf-8"),
        QUICK_CONFIG_FILE: quick_config_yaml().encode("utf-8"),
    }


def write_demo(workdir: Path, seed: int = 7) -> Path:
    """Write data/ and both configs into workdir; return the full config's path. Idempotent: rewrites the same
    bytes for the same seed."""
    workdir = Path(workdir)
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    for relative, content in demo_files(seed).items():
        _write_if_changed(workdir / relative, content)
    return workdir / CONFIG_FILE
