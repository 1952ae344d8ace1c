"""Drift of a batch of current text against the champion's reference data (Evidently 0.7).

Two steps, so a reference scored once can be compared with many batches:

1. `score_batch` draws a seeded sample (capped) of a table and computes, per row, what drift is
   measured on: three text descriptors (length in characters, the share of words the tokenizer
   does not know as whole words, the share of non-letter characters), and, from one forward
   pass of the champion classifier, its pooled sentence embedding (the pooling the base was
   trained with: mean pooling for MiniLM, as sentence-transformers reads it) and the predicted label.
2. `compare_batches` runs one Evidently report over those columns and applies the decision rule.

Decision rule: effect sizes decide, significance only qualifies. Every signal has an effect size with a
threshold and a significance test; it drifted when the effect is at least the threshold *and* the test is
significant (at these sample sizes a domain classifier at ROC AUC 0.55 is "significant" and means nothing):

| signal | effect size (threshold) | significance (Evidently) |
|---|---|---|
| `text` | domain classifier ROC AUC on TF-IDF (0.65) | AUC > 95th percentile of a random one |
| `embedding` | domain classifier ROC AUC on embeddings (0.65) | the same bootstrap |
| descriptors | Wasserstein / reference std (0.2, Cohen's "small") | K-S, p < 0.05 |
| `prediction`, `label` | Jensen-Shannon distance (0.1, Evidently's default) | chi-square homogeneity, p < 0.05 |

The label signals (prediction, and label when both sides have labels) describe the class mix; the covariate
signals (text, descriptors, embedding) describe the inputs. A changed class mix alone changes the inputs too
(more texts of one class look different in bulk), so when the predicted mix drifted, the covariate signals
compare the current batch with the reference resampled to the current's predicted mix (label shift: the texts
of each class did not change, their shares did). `drift_share` is the share of covariate signals that drifted;
the batch has drifted when it reaches `monitoring.drift_share_threshold`. When only the class mix drifted, the
finding is `prior_shift`, not drift. Thresholds are calibrated in `bench/drift.py`.

A causal language model's check (`tasks.lm_drift`) has its own perplexity signal and reuses the descriptors and their
report from here (`text_descriptors` without a vocabulary, `column_signals`).
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import BadInputError
from core.results import DriftResult, DriftSignal
from tasks.modeling import pick_device, quiet_transformers

if TYPE_CHECKING:
    import pandas as pd

    from core.hashing import ModelFiles
    from tasks.classifier import Classifier
    from tasks.data import TextTable
    from tasks.modeling import Device

TEXT = "text"
LABEL = "label"
PREDICTION = "prediction"
EMBEDDING = "embedding"
OOV_SHARE = "oov_share"
DESCRIPTORS = ("length", OOV_SHARE, "non_letter_share")
EMBEDDING_PREFIX = "emb_"
SCORING_BATCH_SIZE = 64
_WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class ScoredBatch:
    """A sample of a table with one row per text: text, descriptors, prediction, embedding, label. Plain columns
    (JSON data), so a scored reference can be kept in Prefect's task cache as it is."""

    source: str
    rows_total: int
    columns: dict[str, list[Any]]

    @classmethod
    def of_frame(cls, source: str, rows_total: int, frame: pd.DataFrame) -> ScoredBatch:
        return cls(source, rows_total, frame.to_dict(orient="list"))

    @cached_property
    def frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.columns)

    @property
    def rows_scored(self) -> int:
        return len(self.columns[TEXT])

    @property
    def has_labels(self) -> bool:
        return LABEL in self.columns

    @property
    def embedding_columns(self) -> list[str]:
        return [column for column in self.columns if column.startswith(EMBEDDING_PREFIX)]


COVARIATE, PRIOR = "covariate", "prior"  # what a signal describes: the inputs, or the class mix
DOMAIN_CLASSIFIER_AUC = 0.65  # text and embedding: ROC AUC of a classifier telling the two batches apart
NUMERIC_DISTANCE = 0.2  # descriptors: Wasserstein distance in reference standard deviations
CATEGORICAL_DISTANCE = 0.1  # predicted and true labels: Jensen-Shannon distance
SIGNIFICANCE = 0.05
MIN_MATCHED_ROWS = 100  # a reference matched to the current class mix needs this many rows, else it stays whole
HOMOGENEITY_TEST = "chisquare_homogeneity"


def sample_rows(table: TextTable, cap: int, seed: int) -> tuple[list[str], list[str] | None]:
    """The non-blank texts (and their labels) of `table`, a seeded sample of `cap` rows when larger."""
    import numpy as np

    rows = [index for index, text in enumerate(table.texts) if text is not None and text.strip()]
    if not rows:
        raise BadInputError(f"{table.source}: the {table.role} batch has no text to check for drift")
    if len(rows) > cap:
        rows = sorted(np.random.default_rng(seed).choice(rows, size=cap, replace=False).tolist())
    texts = [table.texts[index] for index in rows]
    if table.labels is None:
        return texts, None
    labels = [table.labels[index] for index in rows]
    return texts, [label if label is not None else "(null)" for label in labels]


def text_descriptors(texts: list[str], vocabulary: set[str] | None) -> dict[str, list[float]]:
    """Length in characters, out-of-vocabulary word share and non-letter character share per text. Without a
    vocabulary the out-of-vocabulary share is left out: a language model's byte-level tokenizer has no list of
    whole words to miss, and its own perplexity is the better measure of unfamiliar words."""
    lengths, oov, non_letters = [], [], []
    for text in texts:
        words = _WORD.findall(text.lower())
        visible = [char for char in text if not char.isspace()]
        lengths.append(float(len(text)))
        if vocabulary is not None:
            oov.append(sum(_strip_accents(word) not in vocabulary for word in words) / len(words) if words else 0.0)
        non_letters.append(sum(not char.isalpha() for char in visible) / len(visible) if visible else 0.0)
    descriptors = dict(zip(DESCRIPTORS, (lengths, oov, non_letters), strict=True))
    if vocabulary is None:
        del descriptors[OOV_SHARE]
    return descriptors


def _strip_accents(word: str) -> str:
    """BERT's uncased vocabularies hold words without accents ("café" is "cafe")."""
    return "".join(char for char in unicodedata.normalize("NFD", word) if unicodedata.category(char) != "Mn")


def whole_word_vocabulary(classifier: Classifier) -> set[str]:
    """Tokenizer entries that are whole words (WordPiece continuations start with '##')."""
    return {token for token in classifier.tokenizer.get_vocab() if token.isalpha()}


def embed_and_predict(classifier: Classifier, texts: list[str], device: Device) -> tuple[list[list[float]], list[str]]:
    """The classifier's pooled sentence embeddings and predicted labels, from the same forward passes."""
    from tasks.classifier import batched_logits, encode

    logits, embeddings = batched_logits(classifier, encode(classifier, texts), SCORING_BATCH_SIZE, device,
                                        embeddings=True)
    predictions = [classifier.labels[index] for index in logits.argmax(dim=-1).tolist()]
    return embeddings.tolist(), predictions


def score_batch(table: TextTable, model: ModelFiles, sample_size: int, seed: int) -> ScoredBatch:
    """Sample `table` and compute the descriptors, embedding and prediction of every sampled row with the
    classifier in `model`'s folder (its files verified first)."""
    import pandas as pd

    from tasks.classifier import load_saved_classifier

    quiet_transformers()
    texts, labels = sample_rows(table, sample_size, seed)
    device = pick_device()
    classifier = load_saved_classifier(model.verified(), device)
    embeddings, predictions = embed_and_predict(classifier, texts, device)
    frame = pd.DataFrame({TEXT: texts, **text_descriptors(texts, whole_word_vocabulary(classifier))})
    frame[PREDICTION] = predictions
    if labels is not None:
        frame[LABEL] = labels
    width = len(embeddings[0])
    vectors = pd.DataFrame(embeddings, columns=[f"{EMBEDDING_PREFIX}{i}" for i in range(width)])
    return ScoredBatch.of_frame(str(table.source), table.rows, pd.concat([frame, vectors], axis=1))


def compare_batches(
    reference: ScoredBatch, current: ScoredBatch, drift_share_threshold: float, report_path: Path,
) -> DriftResult:
    """The class-mix signals, then the input signals against a reference with the current's class mix when
    that drifted; two Evidently reports, saved as HTML at `report_path` (inputs) and beside it (class mix)."""
    report_path = Path(report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    prior = column_signals(_prior_columns(reference, current), reference, current, class_mix_report_path(report_path))
    predicted_mix_drifted = any(signal.drifted for signal in prior if signal.name == PREDICTION)
    matched = class_matched(reference, current) if predicted_mix_drifted else reference
    covariate = [*column_signals([TEXT, *DESCRIPTORS], matched, current, report_path),
                 _embedding_signal(matched, current)]
    share = sum(signal.drifted for signal in covariate) / len(covariate)
    drift_detected = share >= drift_share_threshold
    return DriftResult(
        drift_detected=drift_detected,
        prior_shift=not drift_detected and any(signal.drifted for signal in prior),
        drift_share=share,
        threshold=drift_share_threshold,
        signals=[*covariate, *prior],
        reference_rows=reference.rows_total,
        reference_scored=reference.rows_scored,
        current_rows=current.rows_total,
        current_scored=current.rows_scored,
        covariate_reference_rows=matched.rows_scored,
        report_path=report_path,
    )


def class_mix_report_path(report_path: Path) -> Path:
    return report_path.with_name(f"{report_path.stem}-class-mix{report_path.suffix}")


def class_matched(reference: ScoredBatch, current: ScoredBatch) -> ScoredBatch:
    """The largest seeded subsample of the reference whose predicted-label mix is the current's (classes the
    reference never predicts are left out of the match); the whole reference when that leaves too few rows."""
    import numpy as np

    predicted = reference.frame[PREDICTION]
    wanted = current.frame[PREDICTION].value_counts(normalize=True)
    wanted = wanted[wanted.index.isin(predicted.unique())]
    if wanted.empty:  # the batch predicts only classes the reference never does: nothing to match
        return reference
    available = predicted.value_counts()
    rows = int(min(available[label] / share for label, share in (wanted / wanted.sum()).items()) + 1e-9)
    if rows < MIN_MATCHED_ROWS:
        return reference
    rng = np.random.default_rng(0)
    keep = [index for label, share in (wanted / wanted.sum()).items()
            for index in rng.choice(np.flatnonzero(predicted == label), round(rows * share), replace=False)]
    frame = reference.frame.iloc[sorted(keep)].reset_index(drop=True)
    return ScoredBatch.of_frame(f"{reference.source} (matched to the current class mix)", reference.rows_total, frame)


def column_signals(columns: list[str], reference: ScoredBatch, current: ScoredBatch, report_path: Path
                   ) -> list[DriftSignal]:
    """One signal per column (text, descriptors, labels) from one Evidently report over them, saved as HTML at
    `report_path`: the part of a drift check that a language model's check shares (its descriptors)."""
    return _column_signals(_saved_report(columns, reference, current, report_path))


def _prior_columns(reference: ScoredBatch, current: ScoredBatch) -> list[str]:
    return [PREDICTION, LABEL] if reference.has_labels and current.has_labels else [PREDICTION]


@dataclass(frozen=True)
class _ColumnTests:
    """The Evidently methods of one kind of column: (effect method, its threshold) and the test, if separate."""

    kind: str
    effect: str
    effect_threshold: float
    test: str | None  # None: the effect method's own verdict is the significance test (domain classifier)


_TEXT_TESTS = _ColumnTests(COVARIATE, "perc_text_content_drift", DOMAIN_CLASSIFIER_AUC, None)
_NUMERIC_TESTS = _ColumnTests(COVARIATE, "wasserstein", NUMERIC_DISTANCE, "ks")
_LABEL_TESTS = _ColumnTests(PRIOR, "jensenshannon", CATEGORICAL_DISTANCE, HOMOGENEITY_TEST)


def _tests_of(column: str) -> _ColumnTests:
    return _TEXT_TESTS if column == TEXT else _NUMERIC_TESTS if column in DESCRIPTORS else _LABEL_TESTS


def _saved_report(columns: list[str], reference: ScoredBatch, current: ScoredBatch, path: Path):
    """The Evidently report (an effect metric and a test metric per column) over `columns`, saved as HTML."""
    from evidently import Report
    from evidently.metrics import ValueDrift

    _register_homogeneity_test()
    metrics = []
    for column in columns:
        tests = _tests_of(column)
        metrics.append(ValueDrift(column=column, method=tests.effect,
                                  threshold=None if tests.test is None else tests.effect_threshold))
        if tests.test is not None:
            metrics.append(ValueDrift(column=column, method=tests.test, threshold=SIGNIFICANCE))
    snapshot = _run_quietly(Report(metrics, include_tests=True), columns, reference, current)
    snapshot.save_html(str(path))
    return snapshot


def _register_homogeneity_test() -> None:
    """Evidently's `chisquare` tests the current counts against the reference's shares taken as exact, which
    ignores the reference's own sampling noise: on two samples of one 12-class mix it fires far more often
    than p < 0.05 says. This is the two-sample test (chi-square on the 2 x classes contingency table)."""
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType

    register_stattest(StatTest(name=HOMOGENEITY_TEST, display_name="chi-square homogeneity p_value",
                               allowed_feature_types=[ColumnType.Categorical]), default_impl=_homogeneity_p_value)


def _homogeneity_p_value(reference_data, current_data, feature_type, threshold: float) -> tuple[float, bool]:
    import pandas as pd
    from scipy.stats import chi2_contingency

    counts = pd.concat([reference_data.value_counts(), current_data.value_counts()], axis=1).fillna(0)
    if len(counts) < 2:
        return 1.0, False
    p_value = float(chi2_contingency(counts.to_numpy().T).pvalue)
    return p_value, p_value < threshold


def _embedding_method():
    from evidently.metrics.embeddings import ModelDriftMethod

    return ModelDriftMethod(bootstrap=True)


def _run_quietly(report, columns: list[str], reference: ScoredBatch, current: ScoredBatch):
    """Run the report over `columns`; scikit-learn's convergence chatter is not the user's problem."""
    from evidently import DataDefinition, Dataset

    definition = DataDefinition(
        text_columns=[column for column in columns if column == TEXT],
        numerical_columns=[column for column in columns if column in DESCRIPTORS],
        categorical_columns=[column for column in columns if column in (PREDICTION, LABEL)],
    )
    current_data = Dataset.from_pandas(current.frame[columns], data_definition=definition)
    reference_data = Dataset.from_pandas(reference.frame[columns], data_definition=definition)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return report.run(current_data, reference_data)
        except ValueError as exc:
            if "no terms remain" in str(exc):
                raise BadInputError(
                    f"{current.source}: the batch has no words to compare with the reference (text drift needs words)"
                ) from None
            raise


def _column_signals(snapshot) -> list[DriftSignal]:
    """Each column's effect and test, as the report computed them (Evidently fails a test on significance)."""
    from evidently.core.metric_types import TestStatus

    results = snapshot.dict()
    columns = list(dict.fromkeys(entry["config"]["column"] for entry in results["metrics"]))
    values = {(entry["config"]["column"], entry["config"]["method"]): float(entry["value"])
              for entry in results["metrics"]}
    failed = {(test["metric_config"]["params"]["column"], test["metric_config"]["params"]["method"]):
              test["status"] == TestStatus.FAIL for test in results["tests"]}
    signals = []
    for column in columns:
        tests = _tests_of(column)
        effect = values[column, tests.effect]
        significant = failed[column, tests.test or tests.effect]
        method = tests.effect if tests.test is None else f"{tests.effect} + {tests.test} p < {SIGNIFICANCE}"
        signals.append(drift_signal(column, tests.kind, method, effect, tests.effect_threshold, significant))
    return signals


def drift_signal(name: str, kind: str, method: str, effect: float, threshold: float, significant: bool
                 ) -> DriftSignal:
    """The decision rule (module docstring): drifted when the effect reaches its threshold and is significant."""
    return DriftSignal(name=name, kind=kind, method=method, effect=effect, effect_threshold=threshold,
                       significant=significant, drifted=significant and effect >= threshold)


def _embedding_signal(reference: ScoredBatch, current: ScoredBatch) -> DriftSignal:
    """Evidently's embedding drift method, applied directly: its report metric would also fit a t-SNE
    for the plot, which costs ~30 s per 1,000 rows on 2 cores."""
    columns = reference.embedding_columns
    auc, significant, method = _embedding_method()(
        current.frame[columns].reset_index(drop=True).copy(), reference.frame[columns].reset_index(drop=True).copy()
    )
    return drift_signal(EMBEDDING, COVARIATE, f"{method} ROC AUC", float(auc), DOMAIN_CLASSIFIER_AUC, bool(significant))
