"""The parts of an audit report that are a causal language model's own: perplexity of the base, the champion and
this version on the same test documents and reference texts, the gain and forgetting the gate judged, per-document
loss before and after adaptation, the fixed prompts answered side by side, and the card's corpus and what was not
evaluated. `reports.audit` puts them where a classifier's report has its per-class results and calibration.

Everything comes from the registry (`Registry.language_model_evaluation` and the version's metrics): the report
runs no model and redoes no statistics.
"""

from __future__ import annotations

from statistics import median

from core.vocabulary import INSTRUCTIONS
from governance.records import (
    REFERENCE_SAMPLED_FROM_BASE,
    DocumentScores,
    GateDecisionRecord,
    LanguageModelEvaluationRecord,
)
from reports.evidence import Evidence
from reports.plots import LossPanel, loss_histograms_svg
from reports.render import Cell, Completions, Facts, Figure, Section, Styled, Table

# One model on one set of documents: perplexity, its 95% interval (low, high), cross-entropy (nats per token).
Summary = tuple[float, float, float, float]

NOT_EVALUATED = [
    "No task benchmark: perplexity says how well the model predicts text like its corpus, not whether it "
    "completes any task correctly.",
    "No safety evaluation: toxic, biased, private or otherwise harmful output was not looked for.",
    "No factual accuracy: fluent domain text can still be wrong.",
]
NO_INSTRUCTIONS = ("No instruction following or chat quality: continued pretraining on plain text does not teach "
                   "either.")
INSTRUCTIONS_LOSS_ONLY = ("Instruction following was measured only as the loss of the held-out pairs' responses, "
                          "not by judging answers.")
SPOT_CHECK = ("The fixed prompts answered in this report are a qualitative spot check (one greedy answer each), not "
              "a measurement.")
CEILING_NOTE = (
    "Perplexity is lower-is-better, so the base model sets a ceiling, not a floor: the candidate must come in at "
    "least min_perplexity_gain below the base's perplexity, with the gain's interval above 0."
)


def _ppl(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _between(low: float, high: float, form: str = ".3f") -> str:
    return f"{low:{form}} to {high:{form}}"


def _evaluation_config(evidence: Evidence) -> dict:
    return evidence.detail.run.config.get("evaluation") or {}


def _pretraining_config(evidence: Evidence) -> dict:
    return evidence.detail.run.config.get("pretraining") or {}


# -- summary -----------------------------------------------------------------------------------------


def comparison(evidence: Evidence) -> Cell:
    """The summary's line on what the version was measured against (a classifier's is its classical baseline)."""
    base = evidence.run_metrics.get("base_perplexity")
    if base is None:
        return Styled("the base model's scores were not recorded for this run", "muted")
    return f"its base model {evidence.detail.version.base_model} on the same test documents: perplexity {base:.3f}"


def gate_numbers(evidence: Evidence, gate: GateDecisionRecord) -> str:
    """The gate's numbers with the base model's perplexity as the ceiling it is (lower is better)."""
    policy = _evaluation_config(evidence)
    champion = "no champion to beat" if gate.champion_score is None else (
        f"champion v{gate.champion_version} {gate.champion_score:.3f} "
        f"(Δ {gate.candidate_score - gate.champion_score:+.3f}, must be lower)"
    )
    base, gain = evidence.run_metrics.get("base_perplexity"), policy.get("min_perplexity_gain")
    ceiling = f"ceiling {gate.min_score:.3f}"
    if base is not None and gain is not None:
        ceiling += f" = the base's {base:.3f} less min_perplexity_gain {gain:.1%}"
    forgetting = policy.get("max_forgetting")
    limit = "" if forgetting is None else f"; forgetting at most {forgetting:.1%}"
    return (f"{gate.primary_metric} {gate.candidate_score:.3f} (lower is better) vs {champion}; {ceiling}, "
            f"the gain's 95% interval above 0{limit}")


# -- model card --------------------------------------------------------------------------------------


def model_line(evidence: Evidence) -> str:
    """What the version is: the base and how continued pretraining adapted it."""
    version, pretraining = evidence.detail.version, _pretraining_config(evidence)
    if pretraining.get("method") == "lora":
        lora = pretraining.get("lora") or {}
        how = (f"LoRA continued pretraining (rank {lora.get('r', '?')}, alpha {lora.get('alpha', '?')}; "
               "the version stores the adapter alone)")
    else:
        how = "continued pretraining of all its weights"
    return (f"{version.model_name} v{version.version}: causal-lm, adapted from {version.base_model} by {how}"
            f"{_instruction_clause(evidence)}")


def _instruction_clause(evidence: Evidence) -> str:
    """How the version was tuned on instruction pairs after its continued pretraining (empty if it was not)."""
    pairs = evidence.detail.datasets.get(INSTRUCTIONS)
    if pairs is None:
        return ""
    before, after = (evidence.run_metrics.get(f"instruction_loss_{when}") for when in ("before", "after"))
    losses = "" if before is None or after is None else f" (held-out response loss {before:.3f} → {after:.3f})"
    return f", then tuned on {pairs.rows:,} instruction pairs from {pairs.source}{losses}"


def corpus_line(evidence: Evidence) -> Cell:
    """What the version adapted to: the corpus's file, documents, tokens and fingerprint (a reviewer's first
    question about a domain-adapted model is which domain, how much of it)."""
    corpus = evidence.detail.datasets.get("corpus")
    if corpus is None:
        return Styled("not recorded", "muted")
    tokens = evidence.language_model.corpus_tokens if evidence.language_model else None
    counted = "tokens not recorded" if tokens is None else f"{tokens:,} tokens under the base's tokenizer"
    return f"{corpus.source} — {corpus.rows:,} documents, {counted} (sha256 {corpus.fingerprint[:12]}…)"


def _reference_source(evidence: Evidence) -> str:
    """The recorded source of the reference texts; for a version that predates the record, its config's."""
    if evidence.language_model is not None:
        return evidence.language_model.reference_source
    return _evaluation_config(evidence).get("reference_text") or REFERENCE_SAMPLED_FROM_BASE


def reference_line(evidence: Evidence) -> str:
    """Where the reference texts of the forgetting measure came from, and how many there were."""
    evaluation, source = evidence.language_model, _reference_source(evidence)
    count = "" if evaluation is None else f"{evaluation.candidate_reference.documents} "
    if source == REFERENCE_SAMPLED_FROM_BASE:
        config = evidence.detail.run.config
        length = _pretraining_config(evidence).get("max_seq_length", "?")
        return (f"reference texts: {count}texts sampled from the base itself (seed {config.get('seed', '?')}, at "
                f"most {length} tokens each), scored by the base and this version")
    return f"reference texts: {source} — {count}texts, scored by the base and this version"


def card_metrics(evidence: Evidence) -> list[Cell]:
    """The card's headline numbers: perplexity against the base, the gain and the forgetting the gate judged."""
    metrics = evidence.detail.metrics
    lines: list[Cell] = []
    test = _from_metrics(evidence.detail.metrics)
    if test is not None:
        documents, tokens = metrics.get("test_documents"), metrics.get("test_tokens")
        scope = "" if documents is None or tokens is None else (
            f" on {documents:.0f} test documents ({tokens:,.0f} tokens)")
        base = evidence.run_metrics.get("base_perplexity")
        lines.append(f"perplexity {test[0]:.3f} (95% interval {_between(test[1], test[2])}){scope}; "
                     f"the base: {_ppl(base)}")
    for name, value in (("gain", _gain(metrics)), ("forgetting", _forgetting(metrics))):
        if value:
            lines.append(f"{name}: {value}")
    return lines


def limitations(evidence: Evidence) -> list[str]:
    """What the test set's size and origin limit (a classifier's: its weakest class and calibration)."""
    metrics = evidence.detail.metrics
    documents = metrics.get("test_documents")
    if documents is None:
        return []
    return [f"Measured on {documents:.0f} test documents held out from the same corpus: text from elsewhere in "
            "the domain may score differently."]


def not_evaluated(evidence: Evidence) -> list[str]:
    """What no number in this report covers (the reference texts' own caveat depends on where they came from)."""
    source = _reference_source(evidence)
    if source == REFERENCE_SAMPLED_FROM_BASE:
        reference = ("Forgetting was measured on texts sampled from the base itself: it estimates how far the model "
                     "drifted from its base (a KL divergence), not its general language quality.")
    else:
        reference = f"Forgetting was measured on {source} alone: other general text may fare differently."
    tuned = INSTRUCTIONS in evidence.detail.datasets
    return [*NOT_EVALUATED, INSTRUCTIONS_LOSS_ONLY if tuned else NO_INSTRUCTIONS, reference, SPOT_CHECK]


def _gain(metrics: dict[str, float]) -> str:
    """The gain as the gate judged it (the registry's metric and interval), or "" when it was not recorded."""
    if "perplexity_gain" not in metrics:
        return ""
    interval = _between(metrics["perplexity_gain_ci_low"], metrics["perplexity_gain_ci_high"], ".2%")
    return f"{metrics['perplexity_gain']:.2%} lower perplexity than the base (95% interval {interval})"


def _forgetting(metrics: dict[str, float]) -> str:
    if "forgetting" not in metrics:
        return ""
    interval = _between(metrics["forgetting_ci_low"], metrics["forgetting_ci_high"], "+.2%")
    return (f"{metrics['forgetting']:+.2%} cross-entropy on the reference texts against the base "
            f"(95% interval {interval}; above 0 is worse)")


# -- perplexity --------------------------------------------------------------------------------------


def _summary(scores: DocumentScores | None) -> Summary | None:
    return None if scores is None else (scores.perplexity, scores.ci_low, scores.ci_high, scores.cross_entropy)


def _from_metrics(metrics: dict[str, float], prefix: str = "") -> Summary | None:
    keys = [f"{prefix}{name}" for name in ("perplexity", "perplexity_ci_low", "perplexity_ci_high", "cross_entropy")]
    if not all(key in metrics for key in keys):
        return None
    perplexity, low, high, cross_entropy = (metrics[key] for key in keys)
    return perplexity, low, high, cross_entropy


def _cells(summary: Summary | None) -> tuple[str, str, str]:
    if summary is None:
        return "—", "—", "—"
    perplexity, low, high, cross_entropy = summary
    return _ppl(perplexity), _between(low, high), f"{cross_entropy:.4f}"


def _perplexity_table(evidence: Evidence) -> Table:
    """Base, champion (when there was one) and this version on the test documents and on the reference texts."""
    evaluation, gate = evidence.language_model, evidence.gate
    this = f"this version (v{evidence.number})"
    if evaluation is None:  # registered before the per-document losses were kept: the run's metrics alone
        rows = [("base model", _from_metrics(evidence.run_metrics, "base_"), None),
                (this, _from_metrics(evidence.detail.metrics), None)]
    else:
        rows = [("base model", _summary(evaluation.base_test), _summary(evaluation.base_reference))]
        if evaluation.champion_test is not None:
            champion = f"champion v{gate.champion_version}" if gate and gate.champion_version else "champion"
            rows.append((champion, _summary(evaluation.champion_test), None))
        rows.append((this, _summary(evaluation.candidate_test), _summary(evaluation.candidate_reference)))
    header = ("model", "test perplexity", "95% interval", "test cross-entropy", "reference perplexity",
              "95% interval", "reference cross-entropy")
    return Table(header, [(name, *_cells(test), *_cells(reference)) for name, test, reference in rows],
                 "Perplexity (lower is better) and cross-entropy (nats per token)")


def _judged(evidence: Evidence) -> Facts:
    """The gain, forgetting and champion comparison as the gate judged them, with its thresholds."""
    metrics, gate, policy = evidence.detail.metrics, evidence.gate, _evaluation_config(evidence)
    if gate is None or gate.champion_score is None:
        champion: Cell = "no champion when this version was gated"
    else:
        lower = gate.candidate_score < gate.champion_score
        champion = Styled(f"perplexity {gate.candidate_score:.3f} vs champion v{gate.champion_version} "
                          f"{gate.champion_score:.3f} (Δ {gate.candidate_score - gate.champion_score:+.3f}): "
                          f"{'lower' if lower else 'not lower'}", "ok" if lower else "bad")
    thresholds = ", ".join(f"{name} {policy[name]:.1%}" for name in ("min_perplexity_gain", "max_forgetting")
                           if name in policy)
    return Facts([
        ("Gain over the base", _gain(metrics) or "—"),
        ("Forgetting", _forgetting(metrics) or "—"),
        ("Against the champion", champion),
        ("Gate thresholds", thresholds or "—"),
    ])


def _histogram(evidence: Evidence, evaluation: LanguageModelEvaluationRecord) -> Figure:
    this = f"this version (v{evidence.number})"
    sets = [("Domain test documents", evaluation.base_test, evaluation.candidate_test),
            ("Reference texts", evaluation.base_reference, evaluation.candidate_reference)]
    panels: list[LossPanel] = [
        (title, [("base", base.per_token(), base.cross_entropy), (this, after.per_token(), after.cross_entropy)])
        for title, base, after in sets
    ]
    rows = [
        (title, label, str(scores.documents), f"{scores.tokens:,}", *_spread(scores.per_token()))
        for title, base, after in sets for label, scores in (("base model", base), (this, after))
    ]
    fallback = Table(("documents", "model", "count", "tokens", "min", "median", "max"), rows,
                     "Loss per document (nats per token)")
    return Figure("Loss per document (nats per token) before adaptation (the base) and after (this version), on the "
                  "domain test documents and the reference texts; dashed lines: each model's cross-entropy over the "
                  "whole set. Lower is better: adaptation should move the test documents left and leave the "
                  "reference texts where they were.", lambda: loss_histograms_svg(panels), fallback)


def _spread(values: list[float]) -> tuple[str, str, str]:
    if not values:
        return "—", "—", "—"
    return f"{min(values):.4f}", f"{median(values):.4f}", f"{max(values):.4f}"


def perplexity_section(evidence: Evidence) -> Section:
    """Where a classifier's report has its metrics against the champion: the three models on the same documents,
    what the gate judged, and per-document loss before and after adaptation."""
    evaluation = evidence.language_model
    intro = ("Perplexity is exp(cross-entropy): the number of equally likely tokens the model is, on average, "
             "choosing among; lower is better. The base, the champion and this version are scored on the same test "
             "documents, held out from the corpus by document; the base and this version on the same reference "
             "texts (forgetting). Intervals are 95% percentile bootstraps over documents.")
    blocks: list = [intro, _perplexity_table(evidence), _judged(evidence)]
    if evaluation is None:
        blocks.append("No per-document losses were recorded for this version (it predates them): the table shows "
                      "the run's metrics alone.")
    else:
        blocks.append(_histogram(evidence, evaluation))
    return Section("perplexity", "Perplexity against the base and the champion", blocks)


# -- the fixed prompts -------------------------------------------------------------------------------


def samples_section(evidence: Evidence) -> Section:
    """What the numbers cannot show: the base and this version continuing the same fixed prompts, side by side."""
    evaluation = evidence.language_model
    title = "Fixed prompts, answered by the base and this version"
    if evaluation is None or not evaluation.samples:
        return Section("samples", title, ["No prompt answers were recorded for this version (it predates them)."])
    return Section("samples", title, [
        f"Every causal-lm version answers the same {len(evaluation.samples)} prompts, beside its base, so reports "
        "compare across versions. Greedy decoding (one deterministic answer each), at most a few dozen new tokens: "
        "a spot check of what adaptation changed, not a measurement. Each prompt is in bold, the model's "
        "continuation follows it.",
        Completions(("base model", f"this version (v{evidence.number})"),
                    [(sample.prompt, (sample.base, sample.candidate)) for sample in evaluation.samples]),
    ])
