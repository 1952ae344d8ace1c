"""The causal-lm lifecycle, stage by stage: validate the corpus → split it by document → continued pretraining
(LoRA by default) → instruction tuning, when `data.train` holds prompt/response pairs → package → perplexity of
the base, the champion and the candidate on the same test documents, forgetting on the reference texts →
register, with the per-document losses and the fixed prompts answered by the base and the candidate (what the
audit report shows) → gate.

Each stage records what it produced in the registry and audits it, as the classification stages do
(`flows.stages`); `flows.retrain` runs this lifecycle for a config whose task is causal-lm.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from core.errors import BadInputError
from core.hashing import ModelFiles
from core.results import GateOutcome
from core.vocabulary import CHAMPION, INSTRUCTIONS
from flows import steps
from flows.artifacts import publish_validation
from flows.context import RunContext, stage
from flows.events import announce_alias_move
from flows.stages import (
    LoadedData,
    base_model_dir,
    protect_personal_data,
    record_dataset,
    record_validation,
    stop_unless_valid,
)
from governance.registry import (
    REFERENCE_SAMPLED_FROM_BASE,
    DocumentScores,
    LanguageModelEvaluationIn,
    LanguageModelEvaluationRecord,
    ModelVersionRecord,
    PromptAnswer,
)
from tasks.causal_lm import PROMPT_TOKENS, PROMPTS
from tasks.data import Splits, TextTable, make_table, split_documents, split_validation
from tasks.modeling import load_tokenizer
from tasks.objectives.base import PretrainJob
from tasks.perplexity import DocumentLosses, relative_gain, relative_increase
from tasks.pretrain import PretrainResult
from tasks.validation import TOKENS_COLUMN

BOOTSTRAP_SEED = 0  # the bootstrap's resampling: fixed, so the same losses give the same intervals
HELDOUT_PAIRS = 0.1  # the instruction pairs held out for early stopping when the config names no data.validation


@dataclass(frozen=True)
class LanguageModelScores:
    """The candidate, its base and the champion (if any) on the same test documents and reference texts."""

    candidate: DocumentLosses
    base: DocumentLosses
    champion: DocumentLosses | None
    candidate_reference: DocumentLosses
    base_reference: DocumentLosses
    reference_source: str  # the evaluation.reference_text file, or REFERENCE_SAMPLED_FROM_BASE

    def metrics(self) -> dict[str, float]:
        """What the registry keeps for the candidate (floats only; `steward run --json` shows the interval as a
        pair, `perplexity_ci`)."""
        low, high = self.candidate.interval(BOOTSTRAP_SEED)
        gain = relative_gain(self.base, self.candidate, BOOTSTRAP_SEED)
        forgetting = relative_increase(self.base_reference, self.candidate_reference, BOOTSTRAP_SEED)
        return {
            "perplexity": self.candidate.perplexity, "perplexity_ci_low": low, "perplexity_ci_high": high,
            "cross_entropy": self.candidate.cross_entropy, "perplexity_gain": gain.value,
            "perplexity_gain_ci_low": gain.low, "perplexity_gain_ci_high": gain.high,
            "forgetting": forgetting.value, "forgetting_ci_low": forgetting.low, "forgetting_ci_high": forgetting.high,
            "reference_cross_entropy": self.candidate_reference.cross_entropy,
            "test_documents": float(len(self.candidate.tokens)), "test_tokens": float(self.candidate.tokens.sum()),
        }

    def base_metrics(self) -> dict[str, float]:
        low, high = self.base.interval(BOOTSTRAP_SEED)
        return {"perplexity": self.base.perplexity, "perplexity_ci_low": low, "perplexity_ci_high": high,
                "cross_entropy": self.base.cross_entropy,
                "reference_cross_entropy": self.base_reference.cross_entropy}

    def champion_metrics(self) -> dict[str, float] | None:
        if self.champion is None:
            return None
        low, high = self.champion.interval(BOOTSTRAP_SEED)
        return {"perplexity": self.champion.perplexity, "perplexity_ci_low": low, "perplexity_ci_high": high,
                "cross_entropy": self.champion.cross_entropy}


def load_valid_corpus(context: RunContext, base_dir: Path) -> LoadedData:
    """Read the corpus, check it with the expectation suite (token counts under the base's tokenizer), stop the run
    on a failed expectation, then split it by document into train / validation / test and record each part."""
    config, data = context.config, context.config.data
    with stage(context, "load data"):
        corpus = steps.load_documents(config.resolve(data.domain_corpus), data.text_column)
    (corpus,), findings = protect_personal_data(context, [corpus])
    with stage(context, "record data"):
        corpus_id = record_dataset(context, corpus)
    with stage(context, "validate"):
        tokenizer = load_tokenizer(base_dir)
        counts = [len(ids) for ids in tokenizer([text or "" for text in corpus.texts])["input_ids"]]
        report = steps.validate_documents(corpus, config.validation, counts, data.text_column)
        record_validation(context, [report], {corpus.role: corpus_id})
    publish_validation(config.name, [report])
    stop_unless_valid([report])
    splits = split_documents(corpus, data.corpus_validation, data.corpus_test, config.seed)
    split_with_corpus = Splits(splits.train, splits.validation, splits.test, corpus)
    dataset_ids = {table.role: record_dataset(context, table) for table in splits.tables()}
    return LoadedData(split_with_corpus, {**dataset_ids, corpus.role: corpus_id}, findings)


def tune_if_paired(context: RunContext, data: LoadedData, base_dir: Path,
                   adapted: PretrainResult) -> tuple[PretrainResult, LoadedData]:
    """Instruction tuning after the continued pretraining (`adapted`) when `data.train` names prompt/response pairs;
    the data comes back with the pairs' registry ids and personal-data findings added."""
    if context.config.data.train is None:
        return adapted, data
    train, heldout = load_instruction_pairs(context)
    (train, heldout), findings = protect_personal_data(context, [train, heldout], scan_labels=True)
    pair_ids = {table.role: record_dataset(context, table) for table in (train, heldout)}
    return tune_on_instructions(context, (train, heldout), pair_ids, base_dir, adapted), \
        replace(data, dataset_ids={**data.dataset_ids, **pair_ids}, pii_findings={**data.pii_findings, **findings})


def load_instruction_pairs(context: RunContext) -> tuple[TextTable, TextTable]:
    """`data.train`'s pairs and the held-out ones: `data.validation`, else a seeded tenth of them."""
    config, data = context.config, context.config.data
    with stage(context, "load instructions"):
        pairs = steps.load_instructions(config.resolve(data.train), INSTRUCTIONS)
        if data.validation is not None:
            return pairs, steps.load_instructions(config.resolve(data.validation), f"{INSTRUCTIONS}-validation")
        kept, held = split_validation(pairs, HELDOUT_PAIRS, config.seed)
        return kept, replace(held, role=f"{INSTRUCTIONS}-validation")


def tune_on_instructions(context: RunContext, pairs: tuple[TextTable, TextTable], pair_ids: dict[str, int],
                         base_dir: Path, adapted: PretrainResult) -> PretrainResult:
    """Completion-only fine-tuning on the pairs (`tasks.objectives.instructions`): LoRA goes on training the
    continued pretraining's adapter on the base; `full` trains the adapted weights."""
    config = context.config
    lora = config.pretraining.method == "lora"
    train, heldout = pairs
    with stage(context, "instruction tuning"):
        with context.workspace.claimed_work_dir("instructions", context.run.id) as work_dir:
            job = PretrainJob(base_dir if lora else adapted.model_dir, train, config.pretraining, config.seed, work_dir,
                              context.workspace.pretrain_cache, heldout, objective=INSTRUCTIONS,
                              start_dir=adapted.model_dir if lora else None)
            result = steps.continue_pretraining(job)
        context.registry.log_metrics(run_id=context.run.id, dataset_id=pair_ids[heldout.role], metrics={
            "instruction_loss_before": result.heldout_loss_before, "instruction_loss_after": result.heldout_loss_after,
            "instruction_steps": float(result.steps), "instruction_cache_hit": float(result.cache_hit),
        })
    return result


def package_candidate(context: RunContext, adapted: PretrainResult, base_dir: Path) -> ModelFiles:
    config = context.config
    with stage(context, "package"):
        folder = steps.package_model(adapted.model_dir, context.workspace.model_dir(config.name, context.run.id),
                                     config.base_model, base_dir, config.pretraining.max_seq_length)
        return ModelFiles.of(folder)


def evaluate_language_model(context: RunContext, data: LoadedData, candidate: ModelFiles, base_dir: Path,
                            champion: ModelVersionRecord | None) -> LanguageModelScores:
    """Perplexity on the test documents (the base and the champion from Prefect's cache when they were scored on
    them before) and cross-entropy on the reference texts."""
    config = context.config
    length = config.pretraining.max_seq_length
    base = ModelFiles.of(base_dir)
    score = steps.cached(steps.score_documents, context.workspace.results)
    with stage(context, "evaluate candidate"):
        reference = reference_texts(context, base)
        test = data.splits.test
        champion_files = context.registry.get_version(config.name, champion.version).model_files() if champion else None
        for model in (candidate, champion_files):  # the cache is keyed by recorded hashes: check the files first
            if model is not None:
                model.verified()
        return LanguageModelScores(
            candidate=DocumentLosses.from_json(score(candidate, test, length, str(base_dir))),
            base=DocumentLosses.from_json(score(base, test, length)),
            champion=None if champion_files is None else DocumentLosses.from_json(score(champion_files, test, length)),
            candidate_reference=DocumentLosses.from_json(score(candidate, reference, length, str(base_dir))),
            base_reference=DocumentLosses.from_json(score(base, reference, length)),
            reference_source=(REFERENCE_SAMPLED_FROM_BASE if config.evaluation.reference_text is None
                              else str(reference.source)),
        )


def reference_texts(context: RunContext, base: ModelFiles) -> TextTable:
    """`evaluation.reference_text` (one text per line), else texts sampled from the base (cached per base)."""
    config, evaluation = context.config, context.config.evaluation
    if evaluation.reference_text is not None:
        path = config.resolve(evaluation.reference_text)
        table = steps.load_table(path, config.data.text_column, None, "reference")
        if not table.present_texts():
            raise BadInputError(f"{path}: evaluation.reference_text has no text")
        return table
    sample = steps.cached(steps.sample_reference, context.workspace.results)
    texts = sample(base, evaluation.reference_samples, config.pretraining.max_seq_length, config.seed)
    return make_table("reference", base.folder, list(texts), None, {config.data.text_column: "object"})


def register_language_model(context: RunContext, data: LoadedData, model: ModelFiles, scores: LanguageModelScores,
                            champion: ModelVersionRecord | None) -> ModelVersionRecord:
    config = context.config
    with stage(context, "register"):
        version = context.registry.register_version(
            model_name=config.name, run_id=context.run.id, artifact_path=str(model.folder), files=model.sha256,
            base_model=config.base_model, parent_version=champion.version if champion else None,
            datasets={role: i for role, i in data.dataset_ids.items()},
            require_approval=config.evaluation.require_approval,
        )
        context.registry.log_metrics(run_id=context.run.id, version_id=version.id,
                                     dataset_id=data.dataset_ids["test"], metrics=scores.metrics())
        context.registry.log_metrics(run_id=context.run.id, dataset_id=data.dataset_ids["test"],
                                     metrics={f"base_{key}": value for key, value in scores.base_metrics().items()})
    record_language_model_evaluation(context, data, version, model, scores)
    return version


def record_language_model_evaluation(context: RunContext, data: LoadedData, version: ModelVersionRecord,
                                     model: ModelFiles, scores: LanguageModelScores) -> LanguageModelEvaluationRecord:
    """Answer the fixed prompts (`tasks.causal_lm.PROMPTS`) with the base and the registered candidate, and keep
    them in the registry with the per-document losses already computed, each set's perplexity and interval, and
    the corpus's token count: the audit report is built from the registry alone."""
    base_dir = base_model_dir(context)
    with stage(context, "answer fixed prompts"):
        answer = steps.cached(steps.answer_prompts, context.workspace.results)
        base = answer(ModelFiles.of(base_dir), PROMPTS, PROMPT_TOKENS)
        candidate = answer(model, PROMPTS, PROMPT_TOKENS, str(base_dir))
        return context.registry.record_language_model_evaluation(LanguageModelEvaluationIn(
            run_id=context.run.id, version_id=version.id, dataset_id=data.dataset_ids["test"],
            base_test=document_scores(scores.base),
            champion_test=None if scores.champion is None else document_scores(scores.champion),
            candidate_test=document_scores(scores.candidate),
            base_reference=document_scores(scores.base_reference),
            candidate_reference=document_scores(scores.candidate_reference),
            reference_source=scores.reference_source,
            corpus_tokens=_corpus_tokens(context, data),
            samples=tuple(PromptAnswer(*answers) for answers in zip(PROMPTS, base, candidate, strict=True)),
        ))


def document_scores(losses: DocumentLosses) -> DocumentScores:
    """The losses as the registry keeps them, with the perplexity and interval the run's metrics carry."""
    low, high = losses.interval(BOOTSTRAP_SEED)
    pairs = tuple(zip(losses.nll.tolist(), losses.tokens.tolist(), strict=True))
    return DocumentScores(pairs, losses.perplexity, low, high, losses.cross_entropy)


def _corpus_tokens(context: RunContext, data: LoadedData) -> int | None:
    """The corpus's tokens under the base's tokenizer, as its validation summed them (`load_valid_corpus`; GX
    reports the sum as text)."""
    corpus_id = data.dataset_ids.get("corpus")
    totals = [result.observed for result in context.registry.validation_results(context.run.id)
              if result.dataset_id == corpus_id and result.column == TOKENS_COLUMN]
    try:
        return int(float(str(totals[-1]))) if totals else None
    except ValueError:
        return None


def gate_language_model(context: RunContext, candidate: ModelVersionRecord, scores: LanguageModelScores,
                        champion: ModelVersionRecord | None) -> GateOutcome:
    """Decide, record the decision with its numbers, and move the alias it calls for."""
    config, registry = context.config, context.registry
    metrics = scores.metrics()
    with stage(context, "promotion gate"):
        policy = config.evaluation.model_copy(update={"require_approval": registry.requires_approval(config.name)})
        outcome = steps.decide_language_model(
            metrics["perplexity"], scores.base.perplexity, metrics["perplexity_gain_ci_low"], metrics["forgetting"],
            scores.champion.perplexity if scores.champion else None, policy,
        )
        registry.record_gate_decision(outcome, run_id=context.run.id, candidate_version_id=candidate.id,
                                      champion_version_id=champion.id if champion else None)
        if outcome.alias is not None:
            announce_alias_move(registry.set_alias(config.name, candidate.version, outcome.alias,
                                                   reason="; ".join(outcome.reasons)))
    return outcome


def champion_version(context: RunContext) -> ModelVersionRecord | None:
    return context.registry.alias_version(context.config.name, CHAMPION)
