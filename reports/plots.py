"""The audit report's plots as inline SVG. matplotlib is imported only when a plot is drawn, so the command
line starts fast; a bare `Figure` (no pyplot) renders off-screen with no backend or global state to set."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from governance.records import ReliabilityBin

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Curve = tuple[str, str, str, list[tuple[int, float]]]  # title, x label, y label, (step, value) points

_RC = {
    "svg.hashsalt": "steward-report",  # stable element ids: the same registry gives the same report
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
# Inline SVG in HTML needs no prolog, namespaces or RDF metadata (which name external URLs).
_STRIP = (
    re.compile(r"\A.*?(?=<svg)", re.DOTALL),
    re.compile(r"<metadata>.*?</metadata>", re.DOTALL),
    re.compile(r'\s+xmlns(:\w+)?="[^"]*"'),
)
INK, ACCENT, WARM, GRID = "#1f2933", "#2f5d8a", "#d9822b", "#9aa5b1"


def _svg(draw: Callable[[Figure], None], size: tuple[float, float]) -> str:
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(_RC):
        figure = Figure(figsize=size, layout="constrained")
        draw(figure)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", bbox_inches="tight", pad_inches=0.08)
    text = buffer.getvalue()
    for pattern in _STRIP:
        text = pattern.sub("", text)
    return text


def confusion_matrix_svg(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> str:
    """Counts of [true][predicted] as a heat map with every count written in its cell."""
    peak = max((max(row) for row in matrix), default=0) or 1

    def draw(figure: Figure) -> None:
        axes = figure.subplots()
        image = axes.imshow([list(row) for row in matrix], cmap="Blues", vmin=0)
        axes.spines[["top", "right"]].set_visible(True)
        ticks = range(len(labels))
        tilt = len(labels) > 3
        axes.set_xticks(ticks, labels, rotation=30 if tilt else 0, ha="right" if tilt else "center")
        axes.set_yticks(ticks, labels)
        axes.set_xlabel("predicted class")
        axes.set_ylabel("true class")
        for row, counts in enumerate(matrix):
            for column, count in enumerate(counts):
                colour = "white" if count > peak / 2 else INK
                axes.text(column, row, str(count), ha="center", va="center", color=colour, fontsize=10)
        figure.colorbar(image, ax=axes, shrink=0.8, label="examples")

    side = 2.6 + 0.6 * len(labels)
    return _svg(draw, (side + 1.2, side))


def reliability_svg(bins: Sequence[ReliabilityBin], ece: float | None, ece_uncalibrated: float | None = None) -> str:
    """Accuracy against confidence per bin (a calibrated model follows the diagonal), counts below; the title
    gives the ECE, and the ECE before calibration when it was measured."""
    title = "Reliability" if ece is None else f"Reliability (ECE {ece:.4f}"
    if ece is not None:
        title += ")" if ece_uncalibrated is None else f"; {ece_uncalibrated:.4f} before calibration)"
    centres = [(b.lower + b.upper) / 2 for b in bins]
    width = 0.9 * min((b.upper - b.lower for b in bins), default=0.1)

    def draw(figure: Figure) -> None:
        top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
        top.bar(centres, [b.accuracy for b in bins], width=width, color=ACCENT, alpha=0.85, label="accuracy")
        top.scatter(centres, [b.mean_confidence for b in bins], color=WARM, zorder=3, marker="_", s=220,
                    linewidths=2.5, label="mean confidence")
        top.plot([0, 1], [0, 1], linestyle="--", color=GRID, label="perfect calibration")
        top.set(ylim=(0, 1.02), ylabel="accuracy", title=title)
        top.legend(loc="upper left", frameon=False)
        bottom.bar(centres, [b.count for b in bins], width=width, color=GRID)
        bottom.set(xlim=(0, 1), xlabel="confidence of the predicted class", ylabel="examples")

    return _svg(draw, (6.4, 4.8))


def curves_svg(curves: Sequence[Curve]) -> str:
    """One small line plot per series, side by side."""

    from matplotlib.ticker import MaxNLocator

    def draw(figure: Figure) -> None:
        panels = figure.subplots(1, len(curves), squeeze=False)[0]
        for axes, (title, xlabel, ylabel, points) in zip(panels, curves, strict=True):
            steps, values = zip(*points, strict=True)
            axes.plot(steps, values, color=ACCENT, marker="o" if len(points) <= 20 else None, markersize=3)
            axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes.grid(alpha=0.3)

    return _svg(draw, (3.4 * len(curves) + 0.6, 3.0))


def compression_svg(forms: Sequence[tuple[str, float, float, float]]) -> str:
    """Per form (name, throughput ×, single-text speed ×, size ×, each relative to fp32): grouped bars, with
    the fp32 level as a dashed line."""
    names = [name for name, *_ in forms]
    series = (("throughput at batch 32", 1, ACCENT), ("speed at batch 1", 2, WARM), ("size", 3, GRID))

    def draw(figure: Figure) -> None:
        axes = figure.subplots()
        width = 0.8 / len(series)
        for offset, (label, column, colour) in enumerate(series):
            positions = [index + (offset - 1) * width for index in range(len(forms))]
            values = [form[column] for form in forms]
            bars = axes.bar(positions, values, width=width, color=colour, label=label)
            axes.bar_label(bars, labels=[f"{value:.2f}×" for value in values], fontsize=8, padding=2)
        axes.axhline(1.0, linestyle="--", color=INK, linewidth=0.8)
        axes.set_xticks(range(len(forms)), names)
        peak = max((max(form[1:]) for form in forms), default=1.0)
        axes.set(ylabel="relative to fp32 PyTorch", title="Compressed forms against the fp32 model",
                 ylim=(0, 1.18 * max(peak, 1.0)))
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(series), frameon=False)

    return _svg(draw, (2.2 + 1.8 * len(forms), 3.4))


LossSeries = tuple[str, list[float], float]  # label, per-document loss (nats per token), the set's cross-entropy
LossPanel = tuple[str, list[LossSeries]]  # title, the series overlaid in it


def loss_histograms_svg(panels: Sequence[LossPanel]) -> str:
    """Per panel (one set of documents), the per-document loss of each model as overlaid histograms on shared bins,
    each model's token-weighted cross-entropy a dashed line in its colour: a shift left is lower loss after
    adaptation, a wider spread documents it helped unevenly."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    colours = (WARM, ACCENT, GRID)

    def draw(figure: Figure) -> None:
        axes_row = figure.subplots(1, len(panels), squeeze=False)[0]
        for axes, (title, series) in zip(axes_row, panels, strict=True):
            values = [value for _, losses, _ in series for value in losses]
            edges = np.histogram_bin_edges(values, bins=min(30, max(5, len(values) // 4)))
            for (label, losses, cross_entropy), colour in zip(series, colours, strict=False):
                axes.hist(losses, bins=edges, color=colour, alpha=0.45, label=f"{label} ({len(losses)} documents)")
                axes.hist(losses, bins=edges, color=colour, histtype="step", linewidth=1.2)
                axes.axvline(cross_entropy, color=colour, linestyle="--", linewidth=1.2,
                             label=f"{label} cross-entropy {cross_entropy:.3f}")
            axes.set(title=title, xlabel="loss per document (nats per token)", ylabel="documents")
            axes.yaxis.set_major_locator(MaxNLocator(integer=True))
            axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False, fontsize=7.5)
            axes.grid(alpha=0.3)

    return _svg(draw, (4.6 * len(panels) + 0.6, 3.9))


SlicePoint = tuple[str, float, float, float, float | None]  # name, score, interval low, high, the reference's score


def slices_svg(points: Sequence[SlicePoint], reference_name: str | None) -> str:
    """Each slice's score with its bootstrap interval as a horizontal bar, the reference's score as a hollow mark."""

    def draw(figure: Figure) -> None:
        axes = figure.subplots()
        rows = list(range(len(points)))[::-1]
        scores = [point[1] for point in points]
        errors = [[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]]
        axes.errorbar(scores, rows, xerr=errors, fmt="o", color=ACCENT, capsize=3, label="this version (95% interval)")
        marked = [(row, p[4]) for row, p in zip(rows, points, strict=True) if p[4] is not None]
        if marked:
            axes.scatter([value for _, value in marked], [row for row, _ in marked], marker="D", facecolors="none",
                         edgecolors=WARM, zorder=3, label=reference_name or "reference")
        axes.set_yticks(rows, [point[0] for point in points])
        lowest = min([p[2] for p in points] + [value for _, value in marked])
        axes.set(xlabel="score (a class: its F1; other slices: macro-F1)", xlim=(max(0.0, lowest - 0.05), 1.01))
        axes.grid(axis="x", color=GRID, linewidth=0.4)
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1 - 1.5 / (4 + len(points))), ncol=2, frameon=False)

    return _svg(draw, (6.4, 1.2 + 0.32 * len(points)))


def flip_rates_svg(rates: Sequence[tuple[str, float, float | None]]) -> str:
    """Per perturbation (name, this version's flip rate, the champion's or None): grouped bars."""

    def draw(figure: Figure) -> None:
        axes = figure.subplots()
        positions = range(len(rates))
        mine = axes.bar([i - 0.2 for i in positions], [rate for _, rate, _ in rates], width=0.4, color=ACCENT,
                        label="this version")
        axes.bar_label(mine, labels=[f"{rate:.1%}" for _, rate, _ in rates], fontsize=8, padding=2)
        theirs = [(i, rate) for i, (_, _, rate) in zip(positions, rates, strict=True) if rate is not None]
        if theirs:
            axes.bar([i + 0.2 for i, _ in theirs], [rate for _, rate in theirs], width=0.4, color=WARM,
                     label="champion")
        axes.set_xticks(list(positions), [name for name, _, _ in rates])
        axes.set(ylabel="share of perturbed texts whose label flipped")
        axes.legend(frameon=False)

    return _svg(draw, (1.6 + 0.9 * len(rates), 3.0))
