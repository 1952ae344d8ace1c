"""The objectives of continued pretraining, one module each; a recipe for `tasks.training` per objective."""

from __future__ import annotations

from core.vocabulary import INSTRUCTIONS
from tasks.objectives.base import Adaptation
from tasks.objectives.instructions import InstructionTuning
from tasks.objectives.language_modelling import LanguageModelling
from tasks.objectives.simcse import SimCSE
from tasks.objectives.tsdae import TSDAE

LANGUAGE_MODELLING = ("mlm", "clm")  # the objectives whose held-out loss is a perplexity
RECIPES: dict[str, type[Adaptation]] = {"mlm": LanguageModelling, "clm": LanguageModelling, "simcse": SimCSE,
                                        "tsdae": TSDAE, INSTRUCTIONS: InstructionTuning}
