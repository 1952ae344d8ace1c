"""Loading every supported format into a `TextTable`, the error messages, and the validation split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from core.config import parse_config
from core.errors import BadInputError
from tasks.data import TextTable, fingerprint_rows, load_corpus, load_table, split_validation
from tests.conftest import SHARED_DATA, require

ROWS = [
    ("The battery died after two days.", 0),
    ("Great screen, fast delivery", 1),
    ("  café au lait was lovely  ", 1),  # accents and padding: NFC + strip in the fingerprint
    ('She said "never again"', 0),
]


def rows_frame() -> pd.DataFrame:
    return pd.DataFrame({"text": [t for t, _ in ROWS], "label": [y for _, y in ROWS], "id": range(len(ROWS))})


def write_format(directory: Path, kind: str) -> Path:
    """The same four rows in one of the supported formats (labels as ints where the format has types)."""
    frame = rows_frame()
    path = directory / f"rows.{kind}"
    if kind == "csv":
        frame.to_csv(path, index=False)
    elif kind == "tsv":
        lines = ["text\tlabel\tid", *(f"{t}\t{y}\t{i}" for i, (t, y) in enumerate(ROWS))]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif kind == "jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif kind == "parquet":
        frame.to_parquet(path)
    elif kind == "datasets":
        import datasets

        datasets.Dataset.from_pandas(frame).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl", "parquet", "datasets"])
def test_every_format_loads_to_the_same_rows_and_fingerprint(tmp_path: Path, kind: str) -> None:
    table = load_table(write_format(tmp_path, kind), "text", "label", "train")
    assert isinstance(table, TextTable)
    assert table.texts == [t for t, _ in ROWS]
    assert table.labels == ["0", "1", "1", "0"]
    assert table.rows == 4 and table.role == "train"
    assert set(table.schema) >= {"text", "label", "id"}
    assert table.fingerprint == fingerprint_rows([t for t, _ in ROWS], ["0", "1", "1", "0"])


def test_fingerprint_normalises_unicode_and_whitespace_but_sees_changes() -> None:
    base = fingerprint_rows(["café", "b"], ["1", "0"])
    assert fingerprint_rows(["cafe\u0301 ", "b"], ["1", "0"]) == base  # NFD + trailing space
    assert fingerprint_rows(["café", "b"], ["1", "1"]) != base  # a changed label
    assert fingerprint_rows(["café", "c"], ["1", "0"]) != base  # a changed text
    assert fingerprint_rows(["b", "café"], ["0", "1"]) != base  # order matters
    assert fingerprint_rows(["café", None], ["1", "0"]) != fingerprint_rows(["café", ""], ["1", "0"])


def test_a_changed_row_changes_the_file_fingerprint(tmp_path: Path) -> None:
    path = write_format(tmp_path, "csv")
    before = load_table(path, "text", "label", "train").fingerprint
    path.write_text(path.read_text().replace("two days", "three days"))
    assert load_table(path, "text", "label", "train").fingerprint != before


def test_txt_corpus_is_one_document_per_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("first document\n\n  \nsecond document\n", encoding="utf-8")
    table = load_table(path, "text", None, "corpus")
    assert table.texts == ["first document", "second document"]
    assert table.labels is None


def test_load_corpus_from_config_and_empty_corpus(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text('{"text": "a b c"}\n{"text": null}\n{"text": "d e"}\n')
    raw = {"name": "x", "data": {"train": "t.csv", "test": "t.csv", "domain_corpus": "corpus.jsonl"}}
    config = parse_config(raw, "steward.yaml", tmp_path)
    corpus = load_corpus(config)
    assert corpus.texts == ["a b c", "d e"] and corpus.role == "corpus"
    (tmp_path / "corpus.jsonl").write_text('{"text": "   "}\n')
    with pytest.raises(BadInputError, match=r"corpus\.jsonl: the domain corpus has no text"):
        load_corpus(config)


def test_nulls_are_kept_for_validation_to_report(tmp_path: Path) -> None:
    path = tmp_path / "nulls.csv"
    path.write_text('text,label\n"",1\nNone,\nNA,0\n')
    table = load_table(path, "text", "label", "train")
    assert table.texts == [None, "None", "NA"]  # only an empty field is null; "NA" is a word
    assert table.labels == ["1", None, "0"]
    assert table.complete_rows() == (["NA"], ["0"])


def test_tsv_keeps_quotes_inside_text(tmp_path: Path) -> None:
    path = tmp_path / "reviews.tsv"
    path.write_text('sentence\tscore\n"Great" movie, really\t1\nno "quotes" here\t0\n')
    table = load_table(path, "sentence", "score", "train")
    assert table.texts == ['"Great" movie, really', 'no "quotes" here']


def test_rfc4180_quoting_loads_as_written(tmp_path: Path) -> None:
    texts = ['a, b and c', 'she said "never again"', "two\nlines", "crlf\r\ninside", "", "plain"]
    path = tmp_path / "quoted.csv"
    path.write_bytes(
        b'text,label\r\n"a, b and c",1\r\n"she said ""never again""",0\r\n"two\nlines",1\r\n'
        b'"crlf\r\ninside","0"\r\n"",1\r\nplain,"1"'
    )
    table = load_table(path, "text", "label", "train")
    assert table.texts == [*texts[:4], None, "plain"]
    assert table.labels == ["1", "0", "1", "0", "1", "1"]
    assert table.fingerprint == fingerprint_rows(table.texts, table.labels)
    written = tmp_path / "written.csv"  # what pandas itself writes loads back the same
    pd.DataFrame({"text": texts[:4] + texts[5:], "label": [1, 0, 1, 0, 1]}).to_csv(written, index=False)
    assert load_table(written, "text", "label", "train").texts == texts[:4] + texts[5:]


def test_kotzias_tsv_with_quotes_still_loads(tmp_path: Path) -> None:
    source = SHARED_DATA / "sentiment_labelled_sentences"
    require(source.is_dir(), f"the shared data at {source} (set STEWARD_SHARED_DATA)")
    for name in ("amazon_cells_labelled", "imdb_labelled", "yelp_labelled"):
        path = tmp_path / f"{name}.tsv"
        path.write_bytes((source / f"{name}.txt").read_bytes())
        table = load_table(path, "sentence", "score", "train")
        assert table.rows == 1000 and set(table.labels) == {"0", "1"}
        assert any('"' in text for text in table.texts)


def test_datasets_dict_picks_the_split_by_role_and_maps_class_labels(tmp_path: Path) -> None:
    import datasets

    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    train = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}, features=features)
    test = datasets.Dataset.from_dict({"text": ["c"], "label": [1]}, features=features)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dd"))
    assert load_table(tmp_path / "dd", "text", "label", "test").labels == ["pos"]
    assert load_table(tmp_path / "dd", "text", "label", "train").labels == ["neg", "pos"]
    with pytest.raises(BadInputError, match="splits train, test and none named 'validation'"):
        load_table(tmp_path / "dd", "text", "label", "validation")


def test_a_huge_single_text_is_kept(tmp_path: Path) -> None:
    huge = "word " * 250_000  # 1.25 MB in one cell
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps({"text": huge, "label": "a"}) + "\n")
    assert load_table(path, "text", "label", "test").texts == [huge]


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("empty.csv", b"", r"empty\.csv: file is empty"),
        ("blank.jsonl", b"\n  \n", r"blank\.jsonl: file is empty"),
        ("data.xlsx", b"x", r"data\.xlsx: unknown file type '\.xlsx'"),
        (
            "bad.csv",
            b"text,label\nok,1\ncaf\xe9,0\n",
            r"bad\.csv: line 3, column 4: not UTF-8 text \(byte 0xe9\)",
        ),
        (
            "quote.csv",
            b'text,label\nfine,1\n"never closed,0\nmore,1\n',
            r"quote\.csv: line 3: unterminated quoted",
        ),
        (
            "wide.csv",
            b"text,label\nfine,1\ntoo,many,fields\n",
            r"wide\.csv: line 3: expected 2 fields, saw 3",
        ),
        (
            "cut.jsonl",
            b'{"text": "a", "label": 1}\n{"text": "b", "lab',
            r"cut\.jsonl: line 2, column \d+: invalid JSON",
        ),
        (
            "cut.csv",  # the last line cut off inside a text with a stray quote: not a new label "quote"
            b'text,label\nfine,1\noffice product"unterminated,quote',
            r"cut\.csv: line 3, column 15: a quote inside an unquoted field",
        ),
        (
            "middle.csv",
            b'text,label\nfine,1\nshe said "no",0\nmore,1\n',
            r"middle\.csv: line 3, column 10: a quote inside an unquoted field",
        ),
        (
            "last.csv",
            b'text,label\nfine,1\n"never closed,0',
            r"last\.csv: line 3: unterminated quoted field",
        ),
        (
            "after.csv",
            b'text,label\nfine,1\n"multi\nline" tail,0\n',
            r"after\.csv: line 4: characters after the closing quote of a field",
        ),
        (
            "short.csv",  # pandas would fill the missing label with a null
            b"text,label\nfine,1\nno label here\nmore,1\n",
            r"short\.csv: line 3: expected 2 fields, saw 1",
        ),
        (
            "short.tsv",
            b'sentence\tscore\n"fine"\t1\nno score\nmore\t1\n',
            r"short\.tsv: line 3: expected 2 fields, saw 1",
        ),
        ("list.jsonl", b'["text", "label"]\n', r"list\.jsonl: line 1: expected a JSON object, got list"),
        ("broken.parquet", b"PAR1 not really", r"broken\.parquet: not a readable Parquet file"),
    ],
)
def test_unreadable_files_are_one_line_errors_naming_file_and_line(
    tmp_path: Path, name: str, data: bytes, message: str
) -> None:
    with pytest.raises(BadInputError, match=message) as caught:
        load_table(write_bytes(tmp_path / name, data), "text", "label", "train")
    assert "\n" not in str(caught.value)


def test_missing_file_and_columns_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"nope\.csv: file not found"):
        load_table(tmp_path / "nope.csv", "text", "label", "train")
    path = write_format(tmp_path, "csv")
    with pytest.raises(BadInputError, match=r"no text column 'body' \(columns found: text, label, id\)"):
        load_table(path, "body", "label", "train")
    with pytest.raises(
        BadInputError, match=r"rows\.csv: no label column 'intent' \(columns found: text, label, id\)"
    ):
        load_table(path, "text", "intent", "train")
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(BadInputError, match="not a dataset saved with `datasets`"):
        load_table(tmp_path / "plain_dir", "text", "label", "train")


def labelled_table(count_per_label: dict[str, int]) -> TextTable:
    from tasks.data import make_table

    labels = [label for label, count in count_per_label.items() for _ in range(count)]
    texts = [f"text {index}" for index in range(len(labels))]
    return make_table("train", Path("train.csv"), texts, list(labels), {"text": "object"})


def test_split_validation_is_stratified_seeded_and_complete() -> None:
    table = labelled_table({"a": 60, "b": 30, "c": 10})
    train, validation = split_validation(table, 0.2, seed=4)
    assert (train.rows, validation.rows) == (80, 20)
    assert Counter(validation.labels) == {"a": 12, "b": 6, "c": 2}
    assert sorted(train.texts + validation.texts) == sorted(table.texts)
    assert validation.role == "validation" and train.role == "train"
    again = split_validation(table, 0.2, seed=4)[1]
    assert again.fingerprint == validation.fingerprint
    assert split_validation(table, 0.2, seed=5)[1].fingerprint != validation.fingerprint


def test_split_validation_falls_back_when_a_class_is_too_small() -> None:
    table = labelled_table({"a": 30, "b": 1})
    train, validation = split_validation(table, 0.1, seed=0)
    assert train.rows + validation.rows == 31
