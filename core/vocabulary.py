"""The project's vocabularies, one home each: what a gate, a drift check, a compression or a task may say.

Each is a `Literal` (for type checkers) and the tuple of its values (for checks at run time and for the
registry, which refuses anything else).
"""

from __future__ import annotations

from typing import Literal, get_args

REGISTRY_URL_ENV = "STEWARD_REGISTRY_URL"  # where the registry is, when --registry does not say
CHAMPION = "champion"  # the alias the gate moves and the server follows by default
CHALLENGER = "challenger"  # the alias of a candidate that passed but waits for approval

# What a model does (config `task`): a classifier of texts, or a causal language model adapted to a domain.
TaskName = Literal["text-classification", "causal-lm"]
CLASSIFICATION: TaskName = "text-classification"
CAUSAL_LM: TaskName = "causal-lm"
TASKS: tuple[str, ...] = get_args(TaskName)
# The dataset role (and training objective) of a causal LM's prompt/response pairs, tuned on after its continued
# pretraining; their held-out part is recorded as `instructions-validation`.
INSTRUCTIONS = "instructions"

# Personal data that validation finds (`tasks.pii`) and redaction replaces with `<TYPE>`.
PiiTypeName = Literal["EMAIL", "PHONE", "CARD", "IBAN", "IP", "CN_ID", "CN_MOBILE", "CN_USCC"]
PII_TYPES: tuple[str, ...] = get_args(PiiTypeName)
# What validation does with personal data it finds: counts it, replaces it with its type, or stops the run.
PiiPolicyName = Literal["report", "redact", "fail"]
# What validation does with rows whose label looks wrong (`tasks.label_issues`): lists them, trains without them
# (training and validation files; a test file's are listed), stops the run above a share, or does not look (`off`:
# the check embeds every labelled text with the base once per run).
LabelIssuePolicyName = Literal["report", "drop", "fail", "off"]

GateOutcomeName = Literal["promoted", "challenger", "rejected"]
GATE_OUTCOMES: tuple[str, ...] = get_args(GateOutcomeName)
# Where the gate's floor came from; a language model's first champion must beat its base model.
FloorSource = Literal["min_score", "classical baseline", "base model"]

CLASSICAL_BASELINE_NAME = "TF-IDF + LR"  # the classical baseline, as reasons and reports name it
CLASSICAL_BASELINE_PREFIX = "classical_baseline_"  # its run metrics: classical_baseline_macro_f1, _accuracy, _c, ...

# What a drift check found: covariate drift, a change of the label mix alone (prior shift), or neither.
DriftFindingName = Literal["drift", "prior_shift", "none"]
DRIFT_FINDINGS: tuple[str, ...] = get_args(DriftFindingName)
# What a drift check decided about retraining: `requested` (the drift event was emitted), `cooldown` (the
# champion's last request is younger than monitoring.cooldown), `same_episode` (this drift episode already
# asked this champion for a retrain; that retrain gave no new champion), `not_needed` (no finding that retrains).
RetrainDecisionName = Literal["requested", "cooldown", "same_episode", "not_needed"]
RETRAIN_DECISIONS: tuple[str, ...] = get_args(RetrainDecisionName)

# The forms a version can be served in: the fine-tuned PyTorch model, its ONNX Runtime dynamic-int8
# quantization, and (with compression.distill) a smaller distilled student, quantized the same way.
FormName = Literal["fp32", "int8", "student"]
FORMS: tuple[str, ...] = get_args(FormName)
FP32: FormName = "fp32"
# What the compression gate made of a form: it met max_metric_drop and min_agreement (`passed`), it did not
# (`refused`), or export, quantization or its evaluation raised (`failed`). Only a passed form is served.
CompressionStatusName = Literal["passed", "refused", "failed"]
COMPRESSION_STATUSES: tuple[str, ...] = get_args(CompressionStatusName)
