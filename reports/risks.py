"""The audit report's "Defects and risks" section of a classifier, and its lines in the model card: slices beside
the reference model, the pairs most often confused, flip rates under perturbation beside the champion's, and the
token attributions of the surest errors and of one correct text per class (`tasks/risks.py` recorded them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.config import EvaluationConfig
from core.results import GATE_TOLERANCE, overall_flip_rate, weakest_slice
from reports.plots import flip_rates_svg, slices_svg
from reports.render import Block, Figure, Highlighted, Section, Styled, Table

if TYPE_CHECKING:
    from reports.evidence import Evidence

SHOWN_TEXT = 160  # characters of a confused pair's example


def _risks(evidence: Evidence) -> dict[str, Any] | None:
    return evidence.evaluation.risks if evidence.evaluation is not None else None


def _policy(evidence: Evidence) -> dict[str, Any]:
    """The run's evaluation settings, defaults filled in."""
    return EvaluationConfig(**evidence.detail.run.config.get("evaluation", {})).model_dump()


def card_lines(evidence: Evidence) -> list[str]:
    """The model card's limitations from the analysis: the weakest slice against its reference, the flip rate."""
    risks = _risks(evidence)
    if not risks:
        return []
    lines = []
    worst = weakest_slice(risks["slices"])
    if worst is not None:
        lines.append(f"Weakest slice against the {worst['reference_name']}: {worst['name']} ({worst['rows']} rows), "
                     f"{worst['metric']} {worst['score']:.3f} vs {worst['reference']:.3f}.")
    overall = overall_flip_rate(risks["robustness"])
    if overall is not None and overall["rows"]:
        lines.append(f"Changes its answer on {overall['rate']:.1%} of test texts under typos, case, spacing and "
                     f"punctuation changes ({overall['rows']} perturbed texts).")
    return lines


def section(evidence: Evidence) -> Section:
    risks = _risks(evidence)
    if not risks:
        return Section("defects-and-risks", "Defects and risks", [
            "Not analysed: the version was registered before the analysis existed, or by `steward finetune`, which "
            "has no gate."])
    blocks = [f"Analysed on the test set in {risks['seconds']:.1f} s, as the run's \"defects and risks\" stage.",
              *_slices(risks["slices"], _policy(evidence)), *_confusions(risks["confusions"]),
              *_robustness(risks["robustness"], _policy(evidence)), *_explanations(risks["explanations"])]
    return Section("defects-and-risks", "Defects and risks", blocks)


def _slices(slices: list[dict[str, Any]], policy: dict[str, Any]) -> list[Block]:
    reference_name = next((piece["reference_name"] for piece in slices if piece["reference_name"]), None)
    rows = [(piece["name"], f"{piece['rows']}", piece["metric"], f"{piece['score']:.3f}",
             f"{piece['ci_low']:.3f}–{piece['ci_high']:.3f}",
             "—" if piece["reference"] is None else f"{piece['reference']:.3f}", _verdict(piece, policy))
            for piece in slices]
    points = [(piece["name"], piece["score"], piece["ci_low"], piece["ci_high"], piece["reference"])
              for piece in slices]
    caption = (f"Slices: each class, the text-length quartiles and the named slice columns. The gate refuses a drop of "
               f"more than {policy['max_slice_drop']:.2f} below the {reference_name or 'reference'} on a slice of at "
               f"least {policy['min_slice_rows']} rows.")
    header = ("slice", "rows", "metric", "score", "95% interval", reference_name or "reference", "gate")
    return [Figure(caption, lambda: slices_svg(points, reference_name)), Table(header, rows)]


def _verdict(piece: dict[str, Any], policy: dict[str, Any]) -> Styled:
    if piece["drop"] is None:
        return Styled("no reference", "muted")
    if piece["rows"] < policy["min_slice_rows"]:
        return Styled("too few rows", "muted")
    if piece["drop"] > policy["max_slice_drop"] + GATE_TOLERANCE:
        return Styled(f"refused ({piece['drop']:+.3f})", "bad")
    return Styled("ok", "ok")


def _confusions(pairs: list[dict[str, Any]]) -> list[Block]:
    if not pairs:
        return ["No test text was misclassified."]
    rows = [(pair["true"], pair["predicted"], f"{pair['count']}",
             " · ".join(_clip(text) for text in pair["examples"])) for pair in pairs]
    return [Table(("true", "predicted", "errors", "examples"), rows, "The confusions most often made.")]


def _clip(text: str) -> str:
    return text if len(text) <= SHOWN_TEXT else text[: SHOWN_TEXT - 1] + "…"


def _robustness(rates: list[dict[str, Any]], policy: dict[str, Any]) -> list[Block]:
    tried = [rate for rate in rates if rate["rows"]]
    rows = [(rate["perturbation"], f"{rate['rows']}", f"{rate['flips']}", f"{rate['rate']:.1%}",
             "—" if rate["champion_rate"] is None else f"{rate['champion_rate']:.1%}") for rate in tried]
    limit = policy["max_flip_rate"]
    gate = ("report only (evaluation.max_flip_rate is unset)" if limit is None
            else f"the gate refuses an overall rate above {limit:.1%}")
    caption = f"Flip rate: the share of perturbed test texts whose label changed (seeded); {gate}."
    table = Table(("perturbation", "texts changed", "flips", "flip rate", "champion"), rows)
    bars = [(rate["perturbation"], rate["rate"], rate["champion_rate"]) for rate in tried]
    return [Figure(caption, lambda: flip_rates_svg(bars)), table]


def _explanations(explanations: list[dict[str, Any]]) -> list[Block]:
    if not explanations:
        return []
    rows = []
    for item in explanations:
        what = "Error" if item["kind"] == "error" else "Correct"
        title = (f"{what}, test row {item['row'] + 1}: true {item['true']}, predicted {item['label']} "
                 f"({item['score']:.2f}); convergence delta {item['delta']:+.3f}")
        spans = [(start, end, weight) for (start, end), weight in
                 zip(item["spans"], item["attributions"], strict=True)]
        rows.append((title, item["text"], spans))
    return [Highlighted(rows, "Why: token attributions (integrated gradients toward the predicted class; green "
                              "pushes toward it, red away) of the surest errors and one correct text per class")]
