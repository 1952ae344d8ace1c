"""The YAML config file (SPEC's schema), validated with pydantic; unknown keys are errors."""

from __future__ import annotations

import difflib
import math
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import ConfigError
from core.vocabulary import CAUSAL_LM, REGISTRY_URL_ENV, LabelIssuePolicyName, PiiPolicyName, TaskName

BASELINE_FLOOR = "baseline"  # evaluation.min_score: the classical baseline's score on the same test set


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """A classifier needs `train` and `test`; a causal language model needs only `domain_corpus`, which it splits
    by document into train / validation / test (`corpus_validation`, `corpus_test`: the shares held out). A causal
    LM's `train`, when set, holds instruction pairs (`prompt` and `response` columns) it is tuned on after its
    continued pretraining, and `validation` the pairs held out for early stopping (default: a tenth of them)."""

    train: Path | None = None
    validation: Path | None = None
    test: Path | None = None
    text_column: str = "text"
    label_column: str = "label"
    domain_corpus: Path | None = None
    corpus_validation: float = Field(0.05, gt=0.0, lt=0.5)
    corpus_test: float = Field(0.1, gt=0.0, lt=0.5)
    # Columns of the test file whose values are slices the gate judges one by one (a source, a region).
    slice_columns: list[str] = Field(default_factory=list)


class TextLengthBounds(_Section):
    min: int = Field(1, ge=0)
    max: int = Field(10_000, ge=1)


class ValidationConfig(_Section):
    min_rows: int = Field(50, ge=0)
    max_null_fraction: float = Field(0.0, ge=0.0, le=1.0)
    max_duplicate_fraction: float = Field(0.1, ge=0.0, le=1.0)
    text_length: TextLengthBounds = TextLengthBounds()
    allowed_labels: list[str] | None = None
    min_examples_per_label: int = Field(5, ge=1)  # training rows each label needs
    min_tokens: int = Field(4_096, ge=1)  # causal-lm: the corpus's tokens in all, under the base's tokenizer
    # Personal data (tasks/pii.py) in every file before anything trains on it: `redact` replaces each finding with
    # its type (<EMAIL>), `report` only counts, `fail` stops the run. National phone numbers are read as
    # `phone_region`'s (ISO 3166 code); numbers written with +country code are found whatever it is.
    pii: PiiPolicyName = "redact"
    phone_region: str = Field("US", pattern=r"^[A-Z]{2}$")
    # Rows whose label the frozen base's out-of-fold probabilities contradict (tasks/label_issues.py, cleanlab).
    label_issues: LabelIssuePolicyName = "report"
    max_label_issue_share: float = Field(0.05, ge=0.0, le=1.0)  # `fail`: the largest share of a file's rows


class LoraConfig(_Section):
    """Low-rank adapters (Hu et al. 2021, through `peft`): what `pretraining.method: lora` trains instead of
    every weight. The defaults adapt every linear layer but the output one (peft's `all-linear`), without
    dropout: on SmolLM2 that gained more than the attention projections alone, and a dropout on each adapter's
    input cost a quarter of a CPU step (bench/RESULTS.md)."""

    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"  # or module names, e.g. [q_proj, v_proj]


class PretrainingConfig(_Section):
    enabled: bool = True
    method: Literal["full", "lora"] = "full"  # causal-lm: `lora` unless the config says otherwise
    lora: LoraConfig = LoraConfig()
    early_stopping_patience: int | None = Field(None, ge=1)  # evaluations without a better validation loss
    objective: Literal["auto", "mlm", "clm", "simcse", "tsdae"] = "auto"  # see tasks/pretrain.py
    max_steps: int = Field(200, ge=1)
    max_epochs: float = Field(1.0, gt=0)  # passes over the corpus (+ train texts); stops first if fewer steps
    batch_size: int = Field(32, ge=1)
    max_seq_length: int = Field(128, ge=8)
    learning_rate: float | None = Field(None, gt=0)  # None: the objective's own default
    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0)
    head_warmup_steps: int = Field(50, ge=0)
    save_steps: int = Field(50, ge=1)
    # Autocast the training steps to bf16 on a CPU whose cores compute bf16 natively (AVX512_BF16, AMX): about
    # 1.6x faster steps for SmolLM2 on 2 cores (bench/RESULTS.md). A GPU autocasts to bf16 whenever it can.
    cpu_bf16: bool = True


class SelfTrainingConfig(_Section):
    """Pseudo-labels from the domain corpus for a second fine-tuning (`tasks/self_training.py`); runs when the
    config names a domain corpus with at least `ratio` × training rows of new texts to choose from."""

    enabled: bool = True
    ratio: float = Field(2.0, gt=0)  # pseudo-labelled rows per class, per labelled training row of that class
    min_confidence: float = Field(0.8, ge=0.0, le=1.0)  # calibrated probability a pseudo-label needs
    max_corpus_rows: int = Field(20_000, ge=1)  # corpus texts scored (a seeded sample of a larger corpus)


class FinetuningConfig(_Section):
    epochs: int = Field(6, ge=1)  # a ceiling: early stopping on validation picks the best epoch
    batch_size: int = Field(16, ge=1)
    max_seq_length: int = Field(128, ge=8)
    learning_rate: float = Field(5.0e-5, gt=0)
    early_stopping_patience: int = Field(2, ge=1)
    self_training: SelfTrainingConfig = SelfTrainingConfig()


class EvaluationConfig(_Section):
    primary_metric: Literal["macro_f1", "accuracy"] = "macro_f1"
    min_score: float | Literal["baseline"] = BASELINE_FLOOR  # a number, or the classical baseline's score
    min_improvement: float = 0.0
    require_approval: bool = False
    # causal-lm: the first champion must lower the domain test perplexity by this share against the base, with
    # the bootstrap interval of the gain above 0; a challenger must beat the champion's perplexity.
    min_perplexity_gain: float = Field(0.05, ge=0.0, lt=1.0)
    # causal-lm: the largest relative increase of cross-entropy on the reference texts (forgetting) allowed.
    max_forgetting: float = Field(0.10, ge=0.0)
    reference_text: Path | None = None  # causal-lm: a general text file (one per line); default: base samples
    reference_samples: int = Field(32, ge=2)  # texts sampled from the base when reference_text is not set
    # A classifier's slices (tasks/slices.py): one with at least `min_slice_rows` rows whose score falls more than
    # `max_slice_drop` below the champion's (a first champion: the classical baseline's) refuses the candidate.
    min_slice_rows: int = Field(30, ge=1)
    max_slice_drop: float = Field(0.05, ge=0.0, le=1.0)
    # The share of test texts whose label flips under the perturbations of tasks/robustness.py, all together, above
    # which the candidate is refused; unset: reported beside the champion's, never refusing.
    max_flip_rate: float | None = Field(None, ge=0.0, le=1.0)

    @field_validator("min_score", mode="before")
    @classmethod
    def _number_or_baseline(cls, value: object) -> object:
        """One clear message for every other value (a plain union would report each member's error)."""
        if value == BASELINE_FLOOR:
            return value
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise ValueError(f"must be a number or '{BASELINE_FLOOR}', got {value!r}")


REFERENCE_SPLITS = ("test", "validation", "train")  # monitoring.reference: one of these, or a file
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(value: object) -> object:
    """'90s', '30m', '24h', '1d' as a timedelta; anything else is left to pydantic (seconds, ISO 8601)."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        return value
    return timedelta(**{_DURATION_UNITS[match.group(2)]: float(match.group(1))})


SERVED = "served"  # monitoring.current / --current: the prediction log's recent window instead of a file


class MonitoringConfig(_Section):
    drift_share_threshold: float = Field(0.3, ge=0.0, le=1.0)
    # The batch the scheduled monitor checks: a file production refreshes, or `served` (the prediction log).
    current: Path | None = None
    sample_size: int = Field(2_000, ge=50)  # rows drawn (seeded) from each side of a large batch
    # What "normal" is: the champion's test split (default: users resample and balance training sets, the
    # test set is the one meant to look like production), its validation or training split, or a file.
    reference: str = Field("test", min_length=1)
    cooldown: timedelta = timedelta(days=1)  # at most one drift-triggered retrain per champion in this time
    retrain_on_prior_shift: bool = False  # a change of the class mix alone does not retrain unless true
    # causal-lm: the champion's perplexity on the batch this much above its reference's (0.25: 25% higher), with a
    # bootstrap interval above 0, is drift on its own (`tasks/lm_drift.py`).
    max_perplexity_increase: float = Field(0.25, ge=0.0)

    @field_validator("cooldown", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value)

    @property
    def current_is_served(self) -> bool:
        return self.current is not None and str(self.current) == SERVED

    @property
    def reference_split(self) -> str | None:
        """The champion's split the reference is, or None when `reference` is a file path."""
        return self.reference if self.reference in REFERENCE_SPLITS else None


class DistillConfig(_Section):
    """A smaller student of the fine-tuned model (`tasks/distill.py`), quantized and gated as the `student` form."""

    layers: int = Field(3, ge=1)  # transformer layers the student keeps (evenly spaced, first and last)
    epochs: int = Field(3, ge=1)  # passes over the training texts and the corpus sample
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1.0e-4, gt=0)
    max_corpus_rows: int = Field(5_000, ge=0)  # domain-corpus texts the teacher labels for the student


class CompressionConfig(_Section):
    """The compression stage after evaluation (`tasks/compress.py`): each method's form is evaluated on the test
    set and served in place of the fp32 model only when it passes both thresholds."""

    enabled: bool = True
    methods: list[Literal["onnx-int8"]] = Field(default_factory=lambda: ["onnx-int8"])
    distill: DistillConfig | None = None  # set: also a distilled student, quantized like the teacher
    max_metric_drop: float = Field(0.01, ge=0.0, le=1.0)  # of the primary metric, against the fp32 model
    min_agreement: float = Field(0.98, ge=0.0, le=1.0)  # share of test predictions equal to the fp32 model's

    @field_validator("methods")
    @classmethod
    def _each_once(cls, methods: list[str]) -> list[str]:
        if len(set(methods)) < len(methods):
            raise ValueError(f"lists a method twice: {methods}")
        return methods


class ServingConfig(_Section):
    """`steward serve-model`'s prediction log, and the window `--current served` reads from it."""

    log_predictions: bool = True
    log_text: bool = True  # false: no raw text is stored (drift then cannot be checked from the log)
    log_url: str | None = None  # another database for the log; default: the registry's
    log_retention: timedelta = timedelta(days=30)
    window: timedelta = timedelta(hours=24)  # how far back `--current served` reads (`--since` overrides)

    @field_validator("log_retention", "window", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value)

    @field_validator("log_retention", "window")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration (for example 30m, 24h, 30d)")
        return value


class RegistryConfig(_Section):
    url: str | None = None


class ScheduleConfig(_Section):
    retrain_cron: str = "0 3 * * 1"
    monitor_cron: str = "0 * * * *"


class AuditConfig(_Section):
    """Signed anchors of the audit chain (`governance/anchors.py`), written by `steward serve` on `anchor_cron`.

    Paths are relative to the config's folder. The key is the private half from `steward audit keygen`; keep
    it, and the anchor directory, off the database host, or whoever can rewrite the chain can re-sign it too.
    """

    anchor_cron: str | None = None  # None: no scheduled anchors
    anchor_dir: Path | None = None
    anchor_key: Path | None = None

    @model_validator(mode="after")
    def _cron_needs_paths(self) -> AuditConfig:
        missing = [key for key in ("anchor_dir", "anchor_key") if getattr(self, key) is None]
        if self.anchor_cron is not None and missing:
            raise ValueError(f"anchor_cron needs {' and '.join(missing)} too")
        return self


class CardConfig(_Section):
    """The model card's words that the registry cannot know (shown in the audit report)."""

    intended_use: str = ""
    limitations: list[str] = Field(default_factory=list)
    out_of_scope: list[str] = Field(default_factory=list)
    contact: str | None = None


class StewardConfig(_Section):
    """One retraining job. Relative data paths are resolved against the config file's folder."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    base_model: str = "minilm"
    task: TaskName = "text-classification"
    seed: int = 13
    allow_pickle: bool = False
    data: DataConfig
    validation: ValidationConfig = ValidationConfig()
    pretraining: PretrainingConfig = PretrainingConfig()
    finetuning: FinetuningConfig = FinetuningConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    compression: CompressionConfig = CompressionConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    serving: ServingConfig = ServingConfig()
    registry: RegistryConfig = RegistryConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    audit: AuditConfig = AuditConfig()
    card: CardConfig = CardConfig()
    workdir: Path = Path(".")

    @model_validator(mode="before")
    @classmethod
    def _lora_for_language_models(cls, raw: object) -> object:
        """A causal language model adapts through LoRA unless `pretraining.method` says otherwise."""
        if not isinstance(raw, dict) or raw.get("task") != CAUSAL_LM:
            return raw
        pretraining = raw.get("pretraining")
        if pretraining is None:
            return {**raw, "pretraining": {"method": "lora"}}
        if isinstance(pretraining, dict) and "method" not in pretraining:
            return {**raw, "pretraining": {**pretraining, "method": "lora"}}
        return raw

    @model_validator(mode="after")
    def _length_bounds_ordered(self) -> StewardConfig:
        bounds = self.validation.text_length
        if bounds.min > bounds.max:
            raise ValueError("validation.text_length.min is greater than validation.text_length.max")
        return self

    @model_validator(mode="after")
    def _data_for_the_task(self) -> StewardConfig:
        if self.task == CAUSAL_LM:
            if self.data.domain_corpus is None:
                raise ValueError("task causal-lm needs data.domain_corpus (the documents it adapts to)")
            if self.data.test is not None:
                raise ValueError("task causal-lm tests on documents held out of data.domain_corpus (data.corpus_test);"
                                 " data.test is not read")
            if self.data.validation is not None and self.data.train is None:
                raise ValueError("data.validation holds instruction pairs held out of data.train, which is not set")
            return self
        missing = [f"data.{key}" for key in ("train", "test") if getattr(self.data, key) is None]
        if missing:
            raise ValueError(f"task {self.task} needs {' and '.join(missing)}")
        if self.pretraining.method == "lora":
            raise ValueError("pretraining.method lora is for task causal-lm")
        return self

    def resolve(self, path: Path) -> Path:
        """A data path as written in the config, made absolute against the config's folder."""
        return path if path.is_absolute() else (self.workdir / path).resolve()

    def snapshot(self) -> dict:
        """The config as plain JSON data, for the run record."""
        return self.model_dump(mode="json")


def resolve_registry_url(config: StewardConfig | None) -> str:
    """Where the registry is: STEWARD_REGISTRY_URL (the command line puts --registry there), else the config's
    registry.url, else a SQLite file in the config's folder (the current directory without a config)."""
    if config is None:
        return registry_url_for(None, Path.cwd())
    return registry_url_for(config.registry.url, config.workdir)


def registry_url_for(configured: str | None, folder: Path) -> str:
    """STEWARD_REGISTRY_URL, else `configured` (a config's registry.url), else `folder`'s SQLite registry."""
    return os.environ.get(REGISTRY_URL_ENV) or configured or default_registry_url(folder)


def default_registry_url(folder: Path) -> str:
    """The SQLite registry a config in `folder` uses when nothing else names one."""
    return f"sqlite:///{(folder / '.steward' / 'registry.db').resolve()}"


def _known_keys(location: tuple) -> list[str]:
    """The keys allowed in the section that holds `location` (for 'did you mean')."""
    section: type[BaseModel] = StewardConfig
    for part in location[:-1]:
        annotation = section.model_fields[str(part)].annotation if str(part) in section.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        section = annotation
    return [key for key in section.model_fields if key != "workdir"]


def _describe(error: dict) -> str:
    location = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(error["loc"][-1]), _known_keys(error["loc"]), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown key '{location}'{hint}"
    if error["type"] == "missing":
        return f"missing required key '{location}'"
    message = error["msg"].removeprefix("Value error, ")  # our own validators' words, without pydantic's prefix
    return f"key '{location}': {message}" if location else message


def _readable_parts(raw: dict) -> tuple[str | None, str | None]:
    """The model name and registry.url of an invalid config, where they are plain strings."""
    name = raw.get("name")
    registry = raw.get("registry")
    url = registry.get("url") if isinstance(registry, dict) else None
    return (name if isinstance(name, str) else None), (url if isinstance(url, str) else None)


def parse_config(raw: object, source: str, workdir: Path) -> StewardConfig:
    """Validate already-parsed YAML; errors name the file and the offending key."""
    if raw is None:
        raise ConfigError(f"{source}: the config file is empty", Path(source))
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the config must be a YAML mapping of keys, got {type(raw).__name__}",
                          Path(source))
    name, registry_url = _readable_parts(raw)
    if "workdir" in raw:
        raise ConfigError(f"{source}: unknown key 'workdir'", Path(source), name, registry_url)
    try:
        return StewardConfig.model_validate({**raw, "workdir": workdir})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc.errors()[0])}", Path(source), name, registry_url) from None


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found", path) from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a directory, not a config file", path) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})", path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        byte = data[exc.start : exc.start + 1].hex()
        raise ConfigError(f"{path}: line {line}: config is not UTF-8 text (byte 0x{byte})", path) from None


def load_config(path: str | Path) -> StewardConfig:
    """Read and validate a config file; every failure is a one-line `ConfigError`. The same text at the same
    path is validated once per process: the command line checks a config before its flow starts (a bad one
    must not start Prefect), and the flow reads the same file."""
    path = Path(path)
    text = _read_text(path)
    key = (path.resolve(), text)
    if key not in _VALIDATED:
        _VALIDATED.clear()
        _VALIDATED[key] = parse_config(_parse_yaml(path, text), str(path), path.resolve().parent)
    return _VALIDATED[key]


_VALIDATED: dict[tuple[Path, str], StewardConfig] = {}  # the last config validated (configs are frozen)


def _parse_yaml(path: Path, text: str) -> object:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}", path) from None
