"""The Prefect tasks the flows run: each compute function of `tasks/` wrapped once, here, with its retries,
timeout and caching. The functions themselves know nothing of Prefect; called outside a flow (by `steward predict`,
a benchmark or a test) they are plain Python.

Six are cached by Prefect across runs, in result storage under the workspace (`cached`), as JSON:
- `evaluate_model`, keyed by the model's recorded file hashes and the test set's fingerprint: the champion is
  scored on a test set once, whether by the run that trained it or by the run that next challenges it;
- `flip_rates`, keyed the same way and by the seed: the champion's flip rates under perturbation likewise;
- `score_documents`, keyed the same way: a language model's base and champion are scored on test documents once;
- `score_reference`, keyed the same way by the reference data: monitoring scores a champion's reference once;
  a causal-lm champion's goes through `score_documents`, where its own run left its test split's losses;
- `sample_reference`, keyed by the base's file hashes, the count, length and seed: a base's reference texts;
- `answer_prompts`, keyed by the model's file hashes and the prompts: the base answers the report's prompts once.
Every key also holds the task's source (`TASK_SOURCE`), so a changed evaluation recipe is not served stale results.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE, TASK_SOURCE, CacheKeyFnPolicy

from core.errors import StewardError
from core.hashing import run_key
from tasks import (
    baseline,
    causal_lm,
    compress,
    data,
    drift,
    evaluate,
    finetune,
    gate,
    label_issues,
    lm_drift,
    pii,
    pretrain,
    risks,
    self_training,
    validation,
)

if TYPE_CHECKING:
    from prefect.client.schemas.objects import TaskRun
    from prefect.context import TaskRunContext
    from prefect.states import State

LOAD_TIMEOUT_SECONDS = 600  # a file that takes longer to read is on a hung network mount


def _retry_unless_bad_input(_: Task, __: TaskRun, state: State) -> bool:
    """Retry transient I/O failures only; a user's bad input fails at once."""
    return not isinstance(state.result(raise_on_failure=False), StewardError)


def _model_and_data_key(_: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The cache key of scoring a model on a dataset: the model's file hashes and the data's fingerprint."""
    table = parameters.get("test", parameters.get("table"))
    inputs = {"model": parameters["model"].sha256, "data": None if table is None else table.fingerprint}
    extra = {name: value for name, value in parameters.items() if isinstance(value, int | float | str | tuple)}
    return run_key({**inputs, **extra})


_LOADING: dict[str, Any] = {"retries": 2, "retry_delay_seconds": 1, "retry_condition_fn": _retry_unless_bad_input,
                            "timeout_seconds": LOAD_TIMEOUT_SECONDS, "cache_policy": NO_CACHE}
_CACHED: dict[str, Any] = {"cache_policy": TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=_model_and_data_key),
                           "persist_result": True, "result_serializer": "json"}

load_table = task(data.load_table, name="load-table", **_LOADING)
load_corpus = task(data.load_corpus, name="load-corpus", **_LOADING)
load_documents = task(data.load_documents, name="load-documents", **_LOADING)
load_instructions = task(data.load_instructions, name="load-instructions", **_LOADING)
load_slice_columns = task(data.load_slice_columns, name="load-slice-columns", **_LOADING)
scan_personal_data = task(pii.scan_table, name="scan-personal-data", cache_policy=NO_CACHE)
find_label_issues = task(label_issues.find_label_issues, name="find-label-issues", cache_policy=NO_CACHE)
validate_table = task(validation.validate_table, name="validate-data", cache_policy=NO_CACHE)
validate_documents = task(validation.validate_documents, name="validate-documents", cache_policy=NO_CACHE)
continue_pretraining = task(pretrain.continue_pretraining, name="continue-pretraining", cache_policy=NO_CACHE)
fine_tune = task(finetune.fine_tune, name="fine-tune", cache_policy=NO_CACHE)
self_train = task(self_training.self_train, name="self-training", cache_policy=NO_CACHE)
evaluate_model = task(evaluate.evaluate_model, name="evaluate", **_CACHED)
flip_rates = task(risks.flip_rates_of, name="flip-rates", **_CACHED)
analyse_risks = task(risks.analyse, name="analyse-risks", cache_policy=NO_CACHE)
explain_test_examples = task(risks.explain_test_examples, name="explain-test-examples", cache_policy=NO_CACHE)
fit_classical_baseline = task(baseline.fit_classical_baseline, name="classical-baseline", cache_policy=NO_CACHE)
compress_model = task(compress.compress_model, name="compress", cache_policy=NO_CACHE)
decide_promotion = task(gate.decide_promotion, name="promotion-gate", cache_policy=NO_CACHE)
package_model = task(causal_lm.package_model, name="package-model", cache_policy=NO_CACHE)
score_documents = task(causal_lm.score_documents, name="score-documents", **_CACHED)
sample_reference = task(causal_lm.sample_reference, name="sample-reference", **_CACHED)
answer_prompts = task(causal_lm.answer_prompts, name="answer-prompts", **_CACHED)
decide_language_model = task(gate.decide_language_model, name="perplexity-gate", cache_policy=NO_CACHE)
score_reference = task(drift.score_batch, name="score-reference", **_CACHED)
score_current = task(drift.score_batch, name="score-current", cache_policy=NO_CACHE)
compare_batches = task(drift.compare_batches, name="compare-batches", cache_policy=NO_CACHE)
score_current_documents = task(causal_lm.score_documents, name="score-current-documents", cache_policy=NO_CACHE)
compare_documents = task(lm_drift.compare_documents, name="compare-documents", cache_policy=NO_CACHE)


def cached(step: Task, results: Path) -> Task:
    """`step` keeping its cached results in `results` (a workspace's folder)."""
    return step.with_options(result_storage=results)
