"""Drift of a batch of documents for a causal language model: the champion's own perplexity on the batch against
its reference (by default its test split), beside the text descriptors of `tasks.drift`.

A language model has no labels and no class mix; what drift means for it is text it predicts worse than the text it
was judged on. So its first signal is its own surprise, and the descriptors of `tasks.drift` say what else changed:

| signal | effect size (threshold) | significance |
|---|---|---|
| `perplexity` | ppl(current) / ppl(reference) - 1 (`monitoring.max_perplexity_increase`) | bootstrap 95% CI low > 0 |
| `length`, `non_letter_share` | Wasserstein / reference std (0.2), the same Evidently report | K-S, p < 0.05 |

Perplexity is token-weighted: exp(summed nll / predicted tokens) over all documents of a batch.

The bootstrap resamples the documents of each batch independently (`tasks.perplexity.unpaired_increase`): the two
batches share no documents, so both samples' noise belongs in the interval. Left out, on purpose: the
out-of-vocabulary share (a byte-level tokenizer has no list of whole words to miss, and perplexity measures unfamiliar
words directly), the TF-IDF domain classifier and the embeddings (the model's perplexity is its own content signal),
and the class-mix signals (there are no classes).

Decision: `drift_share` is the share of these signals that drifted, against `monitoring.drift_share_threshold`, as for
a classifier; and a drifted perplexity is drift on its own, whatever the share: the champion predicts the batch
materially and measurably worse than its test documents, which is what retraining on new documents is for. With three
signals the default threshold (0.3) is met by any one of them; 0.5 asks two of three (perplexity still decides alone).
A language model's finding is never `prior_shift`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.results import DriftResult, DriftSignal
from tasks.data import TextTable, make_table
from tasks.drift import (
    COVARIATE,
    DESCRIPTORS,
    OOV_SHARE,
    TEXT,
    ScoredBatch,
    column_signals,
    drift_signal,
    sample_rows,
    text_descriptors,
)
from tasks.perplexity import DocumentLosses, unpaired_increase

PERPLEXITY = "perplexity"
DOCUMENT_DESCRIPTORS = tuple(name for name in DESCRIPTORS if name != OOV_SHARE)
BOOTSTRAP_SEED = 0  # fixed: the same losses give the same interval


@dataclass(frozen=True, eq=False)
class ScoredDocuments:
    """A sample of a batch's documents and the champion's loss on each one, in the same order."""

    source: str
    rows_total: int  # rows of the whole batch, before sampling
    texts: list[str]
    losses: DocumentLosses

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.losses):
            raise ValueError(f"{len(self.texts)} documents but {len(self.losses)} losses")

    @classmethod
    def of(cls, table: TextTable, sample: TextTable, losses: dict[str, Any]) -> ScoredDocuments:
        """`sample` of `table` with its losses as `tasks.causal_lm.score_documents` returns them (JSON)."""
        return cls(str(table.source), table.rows, sample.present_texts(), DocumentLosses.from_json(losses))

    @property
    def rows_scored(self) -> int:
        return len(self.texts)

    def descriptors(self) -> ScoredBatch:
        """The documents with their text descriptors, in the shape the Evidently report of `tasks.drift` reads."""
        return ScoredBatch(self.source, self.rows_total, {TEXT: self.texts, **text_descriptors(self.texts, None)})


def sample_documents(table: TextTable, cap: int, seed: int) -> TextTable:
    """The non-blank documents of `table`, a seeded sample of `cap` of them when there are more (the rows
    `tasks.drift.sample_rows` draws for a classifier). The table itself when nothing is left out, so that its
    fingerprint, which keys its cached scores, stays the one the registry recorded."""
    texts, _ = sample_rows(table, cap, seed)
    if len(texts) == table.rows:
        return table
    return make_table(table.role, table.source, list(texts), None, table.schema)


def perplexity_signal(reference: DocumentLosses, current: DocumentLosses, max_increase: float) -> DriftSignal:
    """How much more perplexed the champion is by the current batch than by its reference, significant when the
    interval's low end is above 0; the method names both perplexities and the interval, so a report shows what the
    effect was computed from."""
    increase = unpaired_increase(reference, current, BOOTSTRAP_SEED)
    method = (f"relative perplexity increase ({reference.perplexity:.4g} -> {current.perplexity:.4g}), "
              f"bootstrap 95% CI [{increase.low:.3g}, {increase.high:.3g}]")
    return drift_signal(PERPLEXITY, COVARIATE, method, increase.value, max_increase, increase.low > 0)


def compare_documents(
    reference: ScoredDocuments, current: ScoredDocuments, max_perplexity_increase: float,
    drift_share_threshold: float, report_path: Path,
) -> DriftResult:
    """The perplexity signal and the descriptor signals (their Evidently report saved as HTML at `report_path`),
    and the decision rule of the module docstring."""
    report_path = Path(report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    perplexity = perplexity_signal(reference.losses, current.losses, max_perplexity_increase)
    descriptors = column_signals(list(DOCUMENT_DESCRIPTORS), reference.descriptors(), current.descriptors(),
                                 report_path)
    signals = [perplexity, *descriptors]
    share = sum(signal.drifted for signal in signals) / len(signals)
    return DriftResult(
        drift_detected=perplexity.drifted or share >= drift_share_threshold,
        prior_shift=False,
        drift_share=share,
        threshold=drift_share_threshold,
        signals=signals,
        reference_rows=reference.rows_total,
        reference_scored=reference.rows_scored,
        current_rows=current.rows_total,
        current_scored=current.rows_scored,
        covariate_reference_rows=reference.rows_scored,
        report_path=report_path,
    )
