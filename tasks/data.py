"""Loading labelled tables and the domain corpus into one typed shape, `TextTable`.

Every reader ends in the same place: a list of texts, a list of string labels (or none, for the
corpus), a content fingerprint and the source schema. Problems the user can fix are one-line
`BadInputError`s naming the file, line and column; nulls are kept (validation reports them).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import BadInputError, warn

if TYPE_CHECKING:
    import datasets
    import pandas as pd

    from core.config import StewardConfig

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
NULL_MARK = "\\N"  # how a null cell enters the fingerprint (distinct from an empty string)
# A text this long is almost surely a broken file or a pasted blob; it is kept (validation's text_length
# judges it) but named in a warning, since training reads only its first max_seq_length tokens.
LONG_TEXT_CHARS = 100_000
LONG_ROWS_NAMED = 3
# `csv` refuses longer fields (128 KiB by default, process-wide); a long text is validation's to judge.
_CSV_FIELD_LIMIT = 2**31 - 1
_LINE_END = r"(?:\r\n|\n|\r|\Z)"
_LINE = re.compile(r"[^\r\n]*+(?:\r\n|\n|\r)?")  # one line and its end, as `csv` and pandas split lines


@dataclass(frozen=True)
class TextTable:
    """One dataset as the stages see it: texts, string labels (None for the corpus), provenance."""

    role: str
    source: Path
    texts: list[str | None]
    labels: list[str | None] | None
    fingerprint: str
    schema: dict[str, str]
    rows: int

    def label_set(self) -> list[str]:
        """The distinct non-null labels, sorted."""
        return sorted({label for label in self.labels or [] if label is not None})

    def complete_rows(self) -> tuple[list[str], list[str]]:
        """Texts and labels of the rows where neither is null (what training and evaluation use)."""
        if self.labels is None:
            raise BadInputError(f"{self.source}: the {self.role} set has no label column")
        pairs = [
            (t, y) for t, y in zip(self.texts, self.labels, strict=True) if t is not None and y is not None
        ]
        return [t for t, _ in pairs], [y for _, y in pairs]

    def present_texts(self) -> list[str]:
        """The non-null, non-blank texts (what continued pretraining reads)."""
        return [text for text in self.texts if text is not None and text.strip()]


def fingerprint_rows(texts: Sequence[str | None], labels: Sequence[str | None] | None) -> str:
    """sha256 over NFC-normalised, stripped rows, `text<TAB>label`, newline-separated, order kept."""
    digest = hashlib.sha256()
    for index, text in enumerate(texts):
        row = _normalise(text)
        if labels is not None:
            row += "\t" + _normalise(labels[index])
        digest.update((row + "\n").encode("utf-8"))
    return digest.hexdigest()


def make_table(
    role: str,
    source: Path,
    texts: list[str | None],
    labels: list[str | None] | None,
    schema: dict[str, str],
) -> TextTable:
    """A `TextTable` with its fingerprint and row count computed from the rows."""
    return TextTable(role, source, texts, labels, fingerprint_rows(texts, labels), schema, len(texts))


def _normalise(value: str | None) -> str:
    return NULL_MARK if value is None else unicodedata.normalize("NFC", value).strip()


@dataclass(frozen=True)
class Splits:
    """The data of one run: what a model trains on, is chosen on, is judged on, and adapts to."""

    train: TextTable
    validation: TextTable
    test: TextTable
    corpus: TextTable | None = None  # the unlabelled domain corpus, when the config names one

    def tables(self) -> list[TextTable]:
        return [self.train, self.validation, self.test, *([self.corpus] if self.corpus is not None else [])]

    def labelled(self) -> list[TextTable]:
        return [self.train, self.validation, self.test]


def load_table(path: Path, text_column: str, label_column: str | None, role: str,
               kinds: tuple[str, str] = ("text", "label")) -> TextTable:
    """Read a .csv/.tsv/.jsonl/.parquet file, a saved `datasets` dir, or (no labels) a .txt corpus. `kinds` name
    the two columns in an error about a missing one."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: file not found ({role} data)")
    frame = _read_frame(path, text_column, role)
    if frame.empty and len(frame.columns) > 0:
        raise BadInputError(f"{path}: no rows of data, only a header ({role} data)")
    _require_column(path, frame, text_column, kinds[0])
    if label_column is not None:
        _require_column(path, frame, label_column, kinds[1])
    texts = [_as_text(value) for value in frame[text_column].tolist()]
    _warn_about_long_texts(path, role, texts)
    labels = None if label_column is None else [_as_label(v) for v in frame[label_column].tolist()]
    schema = {str(column): str(dtype) for column, dtype in frame.dtypes.items()}
    return make_table(role, path, texts, labels, schema)


def load_slice_columns(path: Path, text_column: str, columns: Sequence[str], role: str) -> dict[str, list[str | None]]:
    """The values of `columns` in each row of the file, as labels are read (1, 1.0 and "1" are one value), aligned
    with the rows `load_table` reads; a column the file lacks is bad input, named."""
    frame = _read_frame(Path(path), text_column, role)
    for column in columns:
        _require_column(Path(path), frame, column, "slice")
    return {column: [_as_label(value) for value in frame[column].tolist()] for column in columns}


def load_corpus(config: StewardConfig) -> TextTable:
    """The unlabelled domain corpus named by `data.domain_corpus`; an empty corpus is bad input."""
    if config.data.domain_corpus is None:
        raise BadInputError("config: data.domain_corpus is not set, so there is no corpus to pretrain on")
    path = config.resolve(config.data.domain_corpus)
    table = load_table(path, config.data.text_column, None, "corpus")
    documents = table.present_texts()
    if not documents:
        raise BadInputError(f"{path}: the domain corpus has no text")
    return make_table("corpus", path, list(documents), None, table.schema)


PROMPT_COLUMN, RESPONSE_COLUMN = "prompt", "response"


def load_instructions(path: Path, role: str) -> TextTable:
    """A causal LM's instruction pairs: a .csv/.tsv/.jsonl/.parquet file with `prompt` and `response` columns. The
    table's texts are the prompts and its labels the responses; a row lacking either is bad input, named."""
    table = load_table(path, PROMPT_COLUMN, RESPONSE_COLUMN, role, kinds=(PROMPT_COLUMN, RESPONSE_COLUMN))
    for row, (prompt, response) in enumerate(zip(table.texts, table.labels or [], strict=True), start=1):
        for column, value in ((PROMPT_COLUMN, prompt), (RESPONSE_COLUMN, response)):
            if value is None or not value.strip():
                raise BadInputError(f"{path}: row {row} has no {column} (every instruction pair needs both)")
    return table


DOCUMENT_SUFFIXES = (".txt", ".md")  # a folder of these is a corpus of one document per file


def load_documents(path: Path, text_column: str) -> TextTable:
    """A causal language model's corpus, every row kept (validation judges empty and repeated documents): a
    folder of .txt/.md files (one document each, in name order), or any file `load_table` reads (.txt: one
    document per line; .jsonl/.csv: the text column)."""
    path = Path(path)
    files = _document_files(path) if path.is_dir() else []
    if not files:
        table = load_table(path, text_column, None, "corpus")
        return make_table("corpus", path, table.texts, None, table.schema)
    texts: list[str | None] = [_read_utf8(file).strip() for file in files]
    _warn_about_long_texts(path, "corpus", texts)
    return make_table("corpus", path, texts, None, {text_column: "object"})


def _document_files(folder: Path) -> list[Path]:
    """The .txt/.md files under `folder` (recursively), or none when it is a saved `datasets` directory."""
    if any((folder / marker).is_file() for marker in ("dataset_dict.json", "dataset_info.json")):
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES)


def split_documents(corpus: TextTable, validation: float, test: float, seed: int) -> Splits:
    """Train / validation / test by whole documents (seeded), so no test document was seen in training."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(corpus.rows).tolist()
    held_test = max(1, round(test * corpus.rows))
    held_validation = max(1, round(validation * corpus.rows))
    if corpus.rows < held_test + held_validation + 1:
        raise BadInputError(f"{corpus.source}: {corpus.rows} documents, too few to split into train, validation "
                            "and test")
    test_rows = sorted(order[:held_test])
    validation_rows = sorted(order[held_test : held_test + held_validation])
    train_rows = sorted(order[held_test + held_validation :])
    return Splits(_subset(corpus, train_rows, "train"), _subset(corpus, validation_rows, "validation"),
                  _subset(corpus, test_rows, "test"))


def _warn_about_long_texts(path: Path, role: str, texts: list[str | None]) -> None:
    """Name the rows (numbered from 1, header excluded) whose text exceeds `LONG_TEXT_CHARS`."""
    long_rows = [(row, len(text)) for row, text in enumerate(texts, start=1) if text and len(text) > LONG_TEXT_CHARS]
    if not long_rows:
        return
    named = ", ".join(f"row {row} ({length:,} characters)" for row, length in long_rows[:LONG_ROWS_NAMED])
    more = f" and {len(long_rows) - LONG_ROWS_NAMED} more" if len(long_rows) > LONG_ROWS_NAMED else ""
    use = ("continued pretraining reads all of it" if role == "corpus"
           else "training and evaluation read only the first max_seq_length tokens of a text")
    warn(f"{path}: unusually long text in the {role} data at {named}{more} (a broken file or a pasted blob?); {use}")


def split_validation(train: TextTable, fraction: float = 0.1, seed: int = 0) -> tuple[TextTable, TextTable]:
    """Hold out `fraction` of train, stratified by label when every class can be split (seeded)."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise BadInputError(f"validation fraction must be between 0 and 1, got {fraction}")
    indices = list(range(train.rows))
    strata = [label or "" for label in train.labels] if train.labels is not None else None
    try:
        keep, held = train_test_split(indices, test_size=fraction, random_state=seed, stratify=strata)
    except ValueError:  # a class too small to stratify, or fewer held-out rows than classes
        keep, held = train_test_split(indices, test_size=fraction, random_state=seed)
    return _subset(train, sorted(keep), train.role), _subset(train, sorted(held), "validation")


def without_rows(table: TextTable, rows: set[int]) -> TextTable:
    """The table less the given 0-based rows (its fingerprint then covers what is left)."""
    return _subset(table, [i for i in range(table.rows) if i not in rows], table.role)


def _subset(table: TextTable, indices: list[int], role: str) -> TextTable:
    texts = [table.texts[i] for i in indices]
    labels = None if table.labels is None else [table.labels[i] for i in indices]
    return make_table(role, table.source, texts, labels, table.schema)


def _read_frame(path: Path, text_column: str, role: str) -> pd.DataFrame:
    if path.is_dir():
        return _read_datasets_dir(path, role)
    suffix = path.suffix.lower()
    if suffix not in (*TABLE_SUFFIXES, ".txt"):
        supported = ", ".join((*TABLE_SUFFIXES, ".txt (corpus)", "a saved `datasets` directory"))
        raise BadInputError(f"{path}: unknown file type '{suffix or path.name}' (supported: {supported})")
    if suffix == ".parquet":
        return _read_parquet(path)
    text = _read_utf8(path)
    if suffix == ".jsonl":
        return _read_jsonl(path, text)
    if suffix == ".txt":
        return _read_lines(path, text, text_column)
    return _read_delimited(path, text, "\t" if suffix == ".tsv" else ",")


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = data[exc.start : exc.start + 1].hex()
        raise BadInputError(f"{path}: line {line}, column {column}: not UTF-8 text (byte 0x{byte})") from None
    if not text.strip():
        raise BadInputError(f"{path}: file is empty")
    return text.removeprefix("\ufeff")


def _read_delimited(path: Path, text: str, separator: str) -> pd.DataFrame:
    import pandas as pd

    # TSV is read without quoting (the IANA format has none): a review that starts with `"` stays intact.
    quoting = csv.QUOTE_NONE if separator == "\t" else csv.QUOTE_MINIMAL
    _refuse_malformed_rows(path, text, separator, quoting)
    try:
        return pd.read_csv(
            io.StringIO(text),
            sep=separator,
            quoting=quoting,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
        )
    except pd.errors.ParserError as exc:  # only where pandas disagrees with the strict pass above
        raise BadInputError(f"{path}: malformed table: {' '.join(str(exc).split())}") from None


def _refuse_malformed_rows(path: Path, text: str, separator: str, quoting: int) -> None:
    """Refuse the first row an RFC 4180 reading rejects, as one line naming the file and the line.

    pandas reads such rows leniently: too few fields become nulls, text after a closing quote is glued on,
    and a quote inside an unquoted field is kept as data, so a cut-off `office product"unterminated,quote`
    becomes a row with a new label. One regular-expression pass checks every record against the grammar and
    the header's field count; only a record that fails is read again, to say what is wrong with it.
    Whitespace-only lines are skipped, as pandas skips them.
    """
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    field, blank = _field_and_blank(separator, quoting)
    header_lines = (line.group() for line in _LINE.finditer(text, re.match(f"(?:{blank})*+", text).end()))
    width = len(next(csv.reader(header_lines, delimiter=separator, quoting=quoting)))
    record = rf"{field}(?:{re.escape(separator)}{field}){{{width - 1}}}+{_LINE_END}"  # `width` fields
    end = re.match(f"(?:{record}|{blank})*+", text).end()
    if end < len(text):
        raise _malformed_record(path, text, end, separator, quoting, width)


def _field_and_blank(separator: str, quoting: int) -> tuple[str, str]:
    """Regular expressions for one field and for a whitespace-only line of a delimited file."""
    sep = re.escape(separator)
    # Quoted (with "" for a quote inside) or free of quotes; in TSV (QUOTE_NONE) a quote is data.
    quoted_or_plain = rf'(?:"(?:[^"]++|"")*+"|[^"{sep}\r\n]*+)'
    field = rf"[^{sep}\r\n]*+" if quoting == csv.QUOTE_NONE else quoted_or_plain
    return field, rf"[^\S\r\n{sep}]*+{_LINE_END}"


def _malformed_record(path: Path, text: str, offset: int, separator: str, quoting: int, width: int) -> BadInputError:
    """What is wrong with the record at `offset`, which the grammar refused: `csv` in strict mode names an
    unterminated quoted field or text after a closing quote; else its field count is off, or, since `csv`
    takes that as data, a quote sits inside an unquoted field."""
    line, _ = _line_and_column(text, offset)
    stream = io.StringIO(text[offset:], newline="")
    reader = csv.reader(stream, delimiter=separator, quoting=quoting, strict=True)
    try:
        count = len(next(reader))
    except csv.Error as exc:
        return BadInputError(f"{path}: {_describe_csv_error(str(exc), line, line + reader.line_num - 1)}")
    if count < width and not stream.read() and not text.endswith(("\n", "\r")):
        return BadInputError(f"{path}: line {line}: the file ends in the middle of a row ({count} of {width} "
                             "fields; truncated?)")
    if count != width:
        return BadInputError(f"{path}: line {line}: expected {width} fields, saw {count} (truncated or malformed row)")
    return _stray_quote(path, text, offset, separator, quoting)


def _stray_quote(path: Path, text: str, offset: int, separator: str, quoting: int) -> BadInputError:
    """The record at `offset` keeps to the grammar up to a quote inside an unquoted field: name where it is."""
    field, _ = _field_and_blank(separator, quoting)
    valid = re.compile(f"{field}(?:{re.escape(separator)}{field})*+").match(text, offset).end()
    line, column = _line_and_column(text, valid)
    return BadInputError(f"{path}: line {line}, column {column}: a quote inside an unquoted field "
                         '(quote the whole field and double each quote in it: "say ""hi""")')


def _line_and_column(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of `offset`; a line ends at \\n, \\r\\n or \\r, as `csv` and pandas end them."""
    line_start = max(text.rfind("\n", 0, offset), text.rfind("\r", 0, offset)) + 1
    return len(re.findall(r"\r\n?|\n", text[:offset])) + 1, offset - line_start + 1


def _describe_csv_error(message: str, first: int, current: int) -> str:
    """A strict `csv` error as `line N: ...`: the record's first line if it never ends, else the line read."""
    if message == "unexpected end of data":
        return f"line {first}: unterminated quoted field (the quote never closes)"
    if message.endswith("expected after '\"'"):
        return f"line {current}: characters after the closing quote of a field (quote the whole field)"
    return f"line {current}: malformed row ({message})"


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    import pandas as pd

    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInputError(
                f"{path}: line {number}, column {exc.colno}: invalid JSON ({exc.msg})"
            ) from None
        if not isinstance(record, dict):
            raise BadInputError(f"{path}: line {number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return pd.DataFrame.from_records(records)


def _read_lines(path: Path, text: str, text_column: str) -> pd.DataFrame:
    import pandas as pd

    documents = [line for line in text.splitlines() if line.strip()]
    return pd.DataFrame({text_column: pd.Series(documents, dtype=object)})


def _read_parquet(path: Path) -> pd.DataFrame:
    import pandas as pd
    import pyarrow

    if path.stat().st_size == 0:
        raise BadInputError(f"{path}: file is empty")
    try:
        return pd.read_parquet(path)
    except (pyarrow.ArrowInvalid, OSError) as exc:
        reason = " ".join(str(exc).split())
        raise BadInputError(f"{path}: not a readable Parquet file ({reason})") from None


def _read_datasets_dir(path: Path, role: str) -> pd.DataFrame:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise BadInputError(
            f"{path}: a directory, but not a dataset saved with `datasets` save_to_disk"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        loaded = _pick_split(path, loaded, role)
    frame = loaded.to_pandas()
    for column, feature in loaded.features.items():
        if isinstance(feature, datasets.ClassLabel):  # label ids back to their names
            frame[column] = [None if v is None or v < 0 else feature.int2str(int(v)) for v in frame[column]]
    return frame


def _pick_split(path: Path, splits: datasets.DatasetDict, role: str) -> datasets.Dataset:
    names = list(splits.keys())
    if role in names:
        return splits[role]
    if len(names) == 1:
        return splits[names[0]]
    raise BadInputError(f"{path}: a DatasetDict with splits {', '.join(names)} and none named '{role}'")


def _require_column(path: Path, frame: pd.DataFrame, column: str, kind: str) -> None:
    if column not in frame.columns:
        found = ", ".join(str(c) for c in frame.columns) or "none"
        raise BadInputError(f"{path}: no {kind} column '{column}' (columns found: {found})")


def _is_null(value: object) -> bool:
    import pandas as pd

    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _as_text(value: object) -> str | None:
    return None if _is_null(value) else value if isinstance(value, str) else str(value)


def _as_label(value: object) -> str | None:
    """Labels are strings: 1, 1.0 and "1" all become "1"; booleans become "true"/"false"."""
    if _is_null(value):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return _as_label(value.item())
    return str(value).strip()
