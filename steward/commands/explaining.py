"""`steward explain`: which tokens decided a registered classifier's label, by integrated gradients
(`tasks/explain.py`), with the version's fp32 PyTorch model whatever form is served.

In a terminal each text is printed with its tokens coloured by weight (green supports the label, red opposes
it, brighter for a larger share of the text's largest |weight|), then its label, score and convergence delta;
`--json` prints the list of explanations (`Explanation.to_json()`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from steward.commands.common import console, emit, open_registry

if TYPE_CHECKING:
    from rich.text import Text

    from tasks.explain import Explanation

NEUTRAL = (150, 150, 150)  # a token that weighs nothing: grey, readable on dark and light terminals
SUPPORTS = (0, 200, 0)
OPPOSES = (220, 0, 0)


def explain(args: argparse.Namespace) -> int:
    from core.errors import BadInputError
    from core.refs import ModelRef
    from core.vocabulary import FP32
    from steward.loading import is_language_model, predictor_for, resolve_version

    ref = ModelRef.parse(args.model)
    with open_registry(args) as registry:
        detail = resolve_version(registry, ref)
    if is_language_model(detail):
        raise BadInputError(f"{ref} is a causal language model; explain needs a text classifier")
    model = predictor_for(detail, ref.alias, FP32)
    explanations = model.explain(args.text, steps=args.steps)
    emit(args, [explanation.to_json() for explanation in explanations],
         lambda: _render(explanations, f"{model.identity.name} v{model.version}"))
    return 0


def _render(explanations: list[Explanation], model: str) -> None:
    out = console()
    for explanation in explanations:
        out.print(highlighted(explanation))
        out.print(f"  → {explanation.label} ({explanation.score:.3f}) by {model}; "
                  f"convergence delta {explanation.delta:+.4f}", style="dim")


def highlighted(explanation: Explanation) -> Text:
    """The text with each token coloured by its weight; what lies between tokens (spaces) is left plain."""
    from rich.text import Text

    text = Text(explanation.text)
    largest = max((abs(weight) for weight in explanation.attributions), default=0.0) or 1.0
    for (start, end), weight in zip(explanation.spans, explanation.attributions, strict=True):
        text.stylize(_style(weight / largest), start, end)
    return text


def _style(share: float) -> str:
    """A colour between grey and green (share > 0) or red (share < 0), by |share| in [0, 1]; bold past half."""
    target = SUPPORTS if share > 0 else OPPOSES
    mix = min(abs(share), 1.0)
    red, green, blue = (round(low + (high - low) * mix) for low, high in zip(NEUTRAL, target, strict=True))
    return f"{'bold ' if mix > 0.5 else ''}rgb({red},{green},{blue})"
