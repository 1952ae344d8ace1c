"""Label errors, found before anything trains: confident learning (Northcutt et al. 2021) through `cleanlab`.

cleanlab needs, for every labelled row, predicted class probabilities from a model that did not see that row. The
recipe its authors give, and that costs seconds here: embed every text once with the frozen base (its own pooling,
L2-normalised), fit a logistic regression on those embeddings in k folds of the training rows to get each
training row's out-of-fold probabilities, and one fitted on all training rows to score the validation and test
rows. `cleanlab.filter.find_label_issues` then flags the rows whose given label the probabilities contradict,
ranked by self-confidence (the probability of the given label), worst first.

Each issue names its file and line as the strict-table errors do (the header is line 1, so data row r is line
r + 1), the given label, the suggested one and the model's confidence in it. Texts are never part of an issue.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import BadInputError, exception_line
from tasks.classifier import base_pooling, load_encoder, pool
from tasks.modeling import load_tokenizer

if TYPE_CHECKING:
    from tasks.data import TextTable

FOLDS = 5
BATCH = 64
MIN_ROWS_PER_CLASS = 2  # out-of-fold probabilities need every class in every fold's training part


@dataclass(frozen=True)
class LabelIssue:
    file: str
    line: int
    role: str  # the file's role: train, validation, test
    row: int  # 0-based data row, what `drop` removes
    given: str
    suggested: str
    confidence: float  # the model's probability of `suggested`

    def to_json(self) -> dict[str, Any]:
        """What `--json`, the CSV and the audit event show: where, what was given, what is suggested."""
        return {key: value for key, value in asdict(self).items() if key not in ("role", "row")}


@dataclass(frozen=True)
class LabelIssues:
    issues: list[LabelIssue]
    checked: dict[str, int]  # role -> labelled rows checked

    def of(self, role: str) -> list[LabelIssue]:
        return [issue for issue in self.issues if issue.role == role]

    def share(self, role: str) -> float:
        return len(self.of(role)) / self.checked[role] if self.checked.get(role) else 0.0

    def counts(self) -> dict[str, int]:
        """Issues per file."""
        return dict(Counter(issue.file for issue in self.issues))

    def per_class(self, role: str) -> dict[str, int]:
        """Issues per given label: where the noise sits."""
        return dict(sorted(Counter(issue.given for issue in self.of(role)).items()))


def find_label_issues(train: TextTable, held_out: list[TextTable], base_model_dir: Path, max_seq_length: int,
                      seed: int) -> LabelIssues:
    """Out-of-fold probabilities for the training file's rows, a probe fitted on all of them for the `held_out`
    files' (validation, test), then cleanlab on each file. Rows whose label the training file lacks are left to
    validation's label checks."""
    embed = embedder(base_model_dir, max_seq_length)
    train_rows, train_x, train_labels = _labelled(train, embed)
    classes = sorted(set(train_labels))
    train_codes = np.array([classes.index(label) for label in train_labels])
    checked = {train.role: len(train_rows)}
    probabilities = out_of_fold_probabilities(train_x, train_codes, seed)
    if probabilities is None:
        return LabelIssues([], checked)  # too few rows of some class to hold any out
    issues = _flagged(train, train_rows, train_codes, probabilities, classes)
    probe = _probe().fit(train_x, train_codes)
    for table in held_out:
        rows, x, labels = _labelled(table, embed)
        known = [i for i, label in enumerate(labels) if label in classes]
        checked[table.role] = len(known)
        if len(known) > len(classes):
            codes = np.array([classes.index(labels[i]) for i in known])
            issues += _flagged(table, [rows[i] for i in known], codes, probe.predict_proba(x[known]), classes)
    return LabelIssues(issues, checked)


def out_of_fold_probabilities(x: np.ndarray, codes: np.ndarray, seed: int) -> np.ndarray | None:
    """Each row's class probabilities from a probe fitted on the other folds (stratified, seeded); None when some
    class has too few rows to be held out."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    counts = np.bincount(codes)
    folds = min(FOLDS, int(counts.min())) if len(counts) > 1 else 0
    if folds < MIN_ROWS_PER_CLASS:
        return None
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(_probe(), x, codes, cv=splitter, method="predict_proba")


def ranked_issues(codes: np.ndarray, probabilities: np.ndarray) -> list[int]:
    """The rows cleanlab flags, worst (lowest probability of the given label) first."""
    import cleanlab

    return cleanlab.filter.find_label_issues(labels=codes, pred_probs=probabilities,
                                             return_indices_ranked_by="self_confidence", n_jobs=1).tolist()


def _probe() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000)


def file_line(path: Path, row: int) -> int:
    """The line of data row `row` (0-based) as the strict-table errors count it: a CSV/TSV's header is line 1; a
    JSON Lines or text file has none; a table without lines (Parquet, a `datasets` dir) counts rows from 1."""
    return row + (2 if Path(path).suffix.lower() in (".csv", ".tsv") else 1)


def _flagged(table: TextTable, rows: list[int], codes: np.ndarray, probabilities: np.ndarray,
             classes: list[str]) -> list[LabelIssue]:
    return [LabelIssue(str(table.source), file_line(table.source, rows[i]), table.role, rows[i], classes[codes[i]],
                       classes[int(probabilities[i].argmax())], float(probabilities[i].max()))
            for i in ranked_issues(codes, probabilities)]


def _labelled(table: TextTable, embed: Any) -> tuple[list[int], np.ndarray, list[str]]:
    """The rows (0-based) with both a text and a label, their embeddings and labels."""
    rows = [i for i, (text, label) in enumerate(zip(table.texts, table.labels or [], strict=True))
            if text is not None and label is not None]
    texts = [table.texts[i] or "" for i in rows]
    return rows, embed(texts), [str((table.labels or [])[i]) for i in rows]


def embedder(base_model_dir: Path, max_seq_length: int) -> Any:
    """texts -> the frozen base's L2-normalised sentence embeddings (its own pooling), batched, without gradients."""
    import torch

    try:
        tokenizer, encoder = load_tokenizer(base_model_dir), load_encoder(base_model_dir).eval()
    except Exception as exc:  # a damaged or foreign checkpoint: safetensors raises its own error type
        raise BadInputError(f"{base_model_dir}: the base model does not load to check the labels "
                            f"({exception_line(exc)}); validation.label_issues: off skips the check") from None
    pooling = base_pooling(base_model_dir)

    def embed(texts: list[str]) -> np.ndarray:
        vectors = []
        with torch.inference_mode():
            for start in range(0, len(texts), BATCH):
                batch = tokenizer(texts[start : start + BATCH], truncation=True, max_length=max_seq_length,
                                  padding=True, return_tensors="pt")
                hidden = encoder(**batch).last_hidden_state
                vectors.append(torch.nn.functional.normalize(pool(hidden, batch["attention_mask"], pooling), dim=-1))
        return torch.cat(vectors).numpy() if vectors else np.zeros((0, encoder.config.hidden_size))

    return embed
