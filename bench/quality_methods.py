"""The seven ways to a text classifier that `bench/quality.py` compares, each on exactly the same split.

Methods, each on exactly the same split per seed, each timed in wall and CPU seconds (model loading included;
the Steward methods are whole `steward` processes, Prefect's temporary server included):
- `tfidf+lr`: TF-IDF word 1-2 grams + logistic regression, C picked on validation macro-F1.
- `frozen+lr`: frozen mean-pooled, L2-normalised MiniLM embeddings + logistic regression, C picked on validation.
- `plain-loop`: the PyTorch loop a user would write with `AutoModelForSequenceClassification`: AdamW at a constant
  5e-5, 6 epochs, batch 16, dynamic padding, scored after the last epoch (no validation).
- `setfit`: the `setfit` library (the `bench` extra) with its defaults, except `num_iterations` (`--setfit-iterations`:
  its default pairs every two training rows, far too many steps for a CPU) and the body's max length; no validation.
- `prompt`: few-shot in-context classification with the packaged decoder SmolLM2-135M-Instruct, no training: a prompt
  of seeded training examples (2 per class up to 4 classes, else 1), each label word scored by its log-likelihood
  after the text; summed, per-token or contextually calibrated scores (Zhao et al. 2021), picked on validation.
- `steward-finetune`: `steward finetune --json` with pretraining disabled, Steward's defaults otherwise.
- `steward-run`: `steward run --json` with the domain corpus and Steward's defaults (self-training on; continued
  pretraining as `auto` picks it, none for MiniLM), the gate's `min_score` at 0 so it never matters here.
All but TF-IDF and prompt start from the packaged all-MiniLM-L6-v2 (offline); all but TF-IDF cut texts at
`--max-seq-length` tokens (the model's own tokens).
`--steward-set KEY=VALUE` (dotted key, YAML value; repeatable) changes both Steward methods' configs.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from benchmarks import Split, progress  # bench/benchmarks.py, beside this file

from tasks.data import TextTable

if TYPE_CHECKING:
    import numpy as np
    import torch
    from transformers import BatchEncoding, PreTrainedTokenizerBase

C_GRID = (0.0625, 0.25, 1.0, 4.0, 16.0)  # LogisticRegression's C (TF-IDF, frozen embeddings), picked on validation
PLAIN_LOOP = {"learning_rate": 5e-5, "epochs": 6, "batch_size": 16}
INFERENCE_BATCH = 64
SETFIT_ITERATIONS = 2  # 2 × 2 × rows pairs: about the plain loop's compute; setfit < 1.0 defaulted to 20
STEWARD = "steward-run"
FINETUNE_ONLY = "steward-finetune"


@dataclass(frozen=True)
class Setup:
    """What every method of one bench run shares."""

    model_dir: Path  # the packaged all-MiniLM-L6-v2
    max_seq_length: int
    setfit_iterations: int
    steward_overrides: dict[str, Any]  # dotted config key -> value, for both Steward methods


@dataclass(frozen=True)
class Job:
    """One method on one seed's split; `folder` is its private scratch space, removed afterwards."""

    split: Split
    seed: int
    folder: Path


@dataclass(frozen=True)
class Scores:
    macro_f1: float
    accuracy: float
    ece: float


@dataclass(frozen=True)
class Method:
    name: str
    run: Callable[[Job, Setup], Scores]
    requires: str | None = None  # an optional package; the method is skipped without it


# ---- scoring ---------------------------------------------------------------------------------------------------


def scored(test: TextTable, classes: list[str], probabilities: np.ndarray) -> Scores:
    """Macro-F1, accuracy and ECE of class probabilities whose columns follow `classes`."""
    import torch
    from sklearn.metrics import accuracy_score, f1_score

    from tasks.evaluate import expected_calibration_error

    _, labels = test.complete_rows()
    truth = [classes.index(label) for label in labels]
    predicted = probabilities.argmax(axis=1)
    ece = expected_calibration_error(torch.as_tensor(probabilities, dtype=torch.float32), truth)
    return Scores(float(f1_score(truth, predicted, average="macro")), float(accuracy_score(truth, predicted)), ece)

def best_on_validation(candidates: list[Any], features: Any, labels: list[str]) -> Any:
    """The fitted sklearn classifier with the best validation macro-F1."""
    from sklearn.metrics import f1_score

    return max(candidates, key=lambda model: f1_score(labels, model.predict(features), average="macro"))


# ---- the methods -----------------------------------------------------------------------------------------------


def tfidf_lr(job: Job, setup: Setup) -> Scores:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts, labels = job.split.train.complete_rows()
    candidates = [
        make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(C=c, max_iter=1000))
        .fit(texts, labels)
        for c in C_GRID
    ]
    best = best_on_validation(candidates, *job.split.validation.complete_rows())
    return scored(job.split.test, job.split.classes, best.predict_proba(job.split.test.complete_rows()[0]))

def in_length_order(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> Iterator[tuple[list[int], BatchEncoding]]:
    """Padded batches of texts of similar length (little padding), with the positions of their texts."""
    order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
    for start in range(0, len(order), INFERENCE_BATCH):
        positions = order[start : start + INFERENCE_BATCH]
        batch = [texts[index] for index in positions]
        yield positions, tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")

def inferred(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, max_length: int,
    forward: Callable[[BatchEncoding], torch.Tensor],
) -> np.ndarray:
    """`forward` of every text (one row each, in the order of `texts`), without gradients."""
    import numpy as np
    import torch

    rows: list[np.ndarray] = [np.empty(0)] * len(texts)
    with torch.inference_mode():
        for positions, batch in in_length_order(texts, tokenizer, max_length):
            for position, row in zip(positions, forward(batch).numpy(), strict=True):
                rows[position] = row
    return np.stack(rows)

def mean_pooled(model: torch.nn.Module, batch: BatchEncoding) -> torch.Tensor:
    """all-MiniLM-L6-v2's sentence embedding: token states averaged over the attention mask, L2-normalised."""
    import torch

    states = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
    pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)

def frozen_lr(job: Job, setup: Setup) -> Scores:
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(setup.model_dir)
    encoder = AutoModel.from_pretrained(setup.model_dir).eval()
    embed = partial(inferred, tokenizer=tokenizer, max_length=setup.max_seq_length,
                    forward=partial(mean_pooled, encoder))
    texts, labels = job.split.train.complete_rows()
    validation_texts, validation_labels = job.split.validation.complete_rows()
    train_x = embed(texts)
    candidates = [LogisticRegression(C=c, max_iter=2000).fit(train_x, labels) for c in C_GRID]
    best = best_on_validation(candidates, embed(validation_texts), validation_labels)
    return scored(job.split.test, job.split.classes, best.predict_proba(embed(job.split.test.complete_rows()[0])))

Probabilities = Callable[[list[str]], "np.ndarray"]  # texts -> class probabilities, columns in `classes` order


def plain_loop_model(job: Job, setup: Setup) -> Probabilities:
    """The loop a user would write: AdamW at a constant rate, fixed epochs, dynamic padding, no validation."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    torch.manual_seed(job.seed)
    classes = job.split.classes
    tokenizer = AutoTokenizer.from_pretrained(setup.model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(setup.model_dir, num_labels=len(classes))
    examples = [
        {**tokenizer(text, truncation=True, max_length=setup.max_seq_length), "labels": classes.index(label)}
        for text, label in zip(*job.split.train.complete_rows(), strict=True)
    ]
    loader = DataLoader(
        examples, batch_size=PLAIN_LOOP["batch_size"], shuffle=True, collate_fn=DataCollatorWithPadding(tokenizer),
        generator=torch.Generator().manual_seed(job.seed),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=PLAIN_LOOP["learning_rate"])
    model.train()
    for _ in range(PLAIN_LOOP["epochs"]):
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
    return lambda texts: inferred(texts, tokenizer, setup.max_seq_length,
                                  lambda batch: model(**batch).logits.softmax(dim=-1))


def plain_loop(job: Job, setup: Setup) -> Scores:
    probabilities = plain_loop_model(job, setup)(job.split.test.complete_rows()[0])
    return scored(job.split.test, job.split.classes, probabilities)


def setfit_model(job: Job, setup: Setup) -> Probabilities:
    """SetFit's defaults (contrastive body training, then a logistic-regression head) but `num_iterations`."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    classes = job.split.classes
    texts, labels = job.split.train.complete_rows()
    model = SetFitModel.from_pretrained(str(setup.model_dir))
    model.model_body.max_seq_length = setup.max_seq_length
    args = TrainingArguments(
        output_dir=str(job.folder), num_iterations=setup.setfit_iterations, seed=job.seed, report_to="none",
        show_progress_bar=False,
    )
    train = Dataset.from_dict({"text": texts, "label": [classes.index(label) for label in labels]})
    Trainer(model=model, args=args, train_dataset=train).train()
    return lambda batch: model.predict_proba(batch, as_numpy=True)


def setfit_defaults(job: Job, setup: Setup) -> Scores:
    probabilities = setfit_model(job, setup)(job.split.test.complete_rows()[0])
    return scored(job.split.test, job.split.classes, probabilities)


# ---- few-shot prompting of the packaged decoder -----------------------------------------------------------------


PROMPT_BASE = "smollm2"  # the packaged SmolLM2-135M-Instruct (tasks.bases)
LABEL_WORDS = {"0": "negative", "1": "positive", "songs-poems": "songs and poems", "startrek": "Star Trek"}
CONTENT_FREE = ("N/A", "", "[MASK]")  # Zhao et al. 2021's content-free inputs, their label probabilities averaged
PROMPT_BATCH = 16  # texts per forward pass on the shared prefix
SCORING_RULES = ("sum", "mean", "calibrated")  # picked per run on validation macro-F1, in this order on ties


def shots_per_class(classes: int) -> int:
    """Labelled examples per class in the prompt: 2 for up to 4 classes, else 1 (12 classes: 12 examples)."""
    return 2 if classes <= 4 else 1

def demonstrations(train: TextTable, classes: list[str], seed: int) -> list[tuple[str, str]]:
    """A seeded choice of `shots_per_class` training rows per class, in a seeded shuffled order."""
    import random

    rng = random.Random(seed)
    texts, labels = train.complete_rows()
    chosen = []
    for label in classes:
        rows = [text for text, row_label in zip(texts, labels, strict=True) if row_label == label]
        chosen += [(text, label) for text in rng.sample(rows, min(shots_per_class(len(classes)), len(rows)))]
    rng.shuffle(chosen)
    return chosen

@dataclass
class PromptScorer:
    """Log-likelihood of every label word as the continuation of `<instruction><examples>Text: <text>\\nLabel:`.

    The instruction and the examples are one prefix, run once; its KV cache, repeated, serves a batch of texts
    of similar length (right-padded, pads masked). Every label's first token is read off each text's last
    logits; the later tokens of the multi-token labels run in one more batch on the texts' cache."""

    model: Any
    tokenizer: PreTrainedTokenizerBase
    max_length: int
    label_ids: list[list[int]]
    prefix: Any = None  # the prefix's KV cache (a transformers DynamicCache)
    prefix_length: int = 0

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def query(self, text: str) -> list[int]:
        """`Text: <text cut at max_length tokens>\\nLabel:`, pieces tokenised apart so that every row is alike."""
        return self.ids("Text:") + self.ids(" " + " ".join(text.split()))[: self.max_length] + self.ids("\nLabel:")

    def start(self, words: list[str], shots: list[tuple[str, str]]) -> None:
        import torch

        ids = self.ids(f"Classify each text as one of: {', '.join(words)}.\n\n")
        for text, word in shots:
            ids += self.query(text) + self.ids(f" {word}") + self.ids("\n\n")
        with torch.inference_mode():
            self.prefix = self.model(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1).past_key_values
        self.prefix_length = len(ids)

    def batch(self, queries: list[list[int]]) -> torch.Tensor:
        """Each label's summed token log-probabilities after the prefix and each query: [queries, labels]."""
        import copy

        import torch

        rows, widest, pad = len(queries), max(len(ids) for ids in queries), self.tokenizer.pad_token_id or 0
        cache = copy.deepcopy(self.prefix)
        cache.batch_repeat_interleave(rows)
        padded = torch.tensor([query + [pad] * (widest - len(query)) for query in queries])
        mask = torch.tensor([[1] * (self.prefix_length + len(ids)) + [0] * (widest - len(ids)) for ids in queries])
        states = self.model.model(input_ids=padded, attention_mask=mask, past_key_values=cache, use_cache=True)
        ends = torch.tensor([len(query) - 1 for query in queries])
        first = self.model.lm_head(states.last_hidden_state[torch.arange(rows), ends]).log_softmax(dim=-1)
        totals = first[:, [label[0] for label in self.label_ids]].clone()
        longer = [index for index, label in enumerate(self.label_ids) if len(label) > 1]
        if longer:  # every longer label's tokens but its last, right-padded, after each query's last real token
            steps = max(len(self.label_ids[index]) for index in longer) - 1
            cache.batch_repeat_interleave(len(longer))
            tails = [self.label_ids[index][:-1] for index in longer]
            tail_ids = torch.tensor([tail + [pad] * (steps - len(tail)) for tail in tails] * rows)
            tail_mask = torch.cat([mask.repeat_interleave(len(longer), dim=0),
                                   torch.ones(rows * len(longer), steps, dtype=torch.long)], dim=1)
            after = (self.prefix_length + ends + 1).repeat_interleave(len(longer))
            positions = after.unsqueeze(1) + torch.arange(steps)
            logits = self.model(input_ids=tail_ids, attention_mask=tail_mask, position_ids=positions,
                                past_key_values=cache).logits.log_softmax(dim=-1)
            logits = logits.view(rows, len(longer), steps, -1)
            for slot, index in enumerate(longer):
                label = self.label_ids[index]
                for step in range(1, len(label)):
                    totals[:, index] += logits[:, slot, step - 1, label[step]]
        return totals

    def table(self, texts: list[str]) -> np.ndarray:
        """`batch` over every text, texts of similar length together; rows in the order of `texts`."""
        import numpy as np
        import torch

        queries = [self.query(text) for text in texts]
        order = sorted(range(len(texts)), key=lambda index: len(queries[index]))
        rows = np.empty((len(texts), len(self.label_ids)))
        with torch.inference_mode():
            for first in range(0, len(order), PROMPT_BATCH):
                positions = order[first : first + PROMPT_BATCH]
                rows[positions] = self.batch([queries[index] for index in positions]).numpy()
        return rows

def rule_scores(rule: str, sums: np.ndarray, lengths: np.ndarray, content_free: np.ndarray) -> np.ndarray:
    """Label scores under one rule: the summed log-likelihood, its per-token mean, or the sum contextually
    calibrated (Zhao et al. 2021: divided by the labels' probabilities for content-free inputs)."""
    import numpy as np
    from scipy.special import log_softmax

    if rule == "sum":
        return sums
    if rule == "mean":
        return sums / lengths
    prior = np.exp(log_softmax(content_free, axis=1)).mean(axis=0)
    return sums - np.log(prior)

def prompted(job: Job, setup: Setup) -> Scores:
    """A prompt of `shots_per_class` seeded training examples per class (2 each for 2 classes, 1 each for 12),
    each text cut at `max_seq_length` tokens; every label word scored as the continuation of each validation
    and test text; the scoring rule (`SCORING_RULES`) picked on validation macro-F1; every test row scored;
    probabilities the softmax of the label scores."""
    import numpy as np
    from scipy.special import softmax
    from sklearn.metrics import f1_score
    from transformers import AutoModelForCausalLM

    from tasks.modeling import load_tokenizer, resolve_base_model

    classes = job.split.classes
    folder = resolve_base_model(PROMPT_BASE)
    tokenizer = load_tokenizer(folder)
    words = [LABEL_WORDS.get(label, label) for label in classes]
    scorer = PromptScorer(AutoModelForCausalLM.from_pretrained(folder).eval(), tokenizer, setup.max_seq_length,
                          [tokenizer(f" {word}", add_special_tokens=False).input_ids for word in words])
    scorer.start(words, [(text, LABEL_WORDS.get(label, label)) for text, label in
                         demonstrations(job.split.train, classes, job.seed)])
    lengths = np.array([len(ids) for ids in scorer.label_ids], dtype=float)
    content_free = scorer.table(list(CONTENT_FREE))
    validation_texts, validation_labels = job.split.validation.complete_rows()
    validation = scorer.table(validation_texts)
    truth = [classes.index(label) for label in validation_labels]

    def validation_f1(rule: str) -> float:
        predicted = rule_scores(rule, validation, lengths, content_free).argmax(axis=1)
        return float(f1_score(truth, predicted, average="macro"))

    f1 = {rule: validation_f1(rule) for rule in SCORING_RULES}
    rule = max(SCORING_RULES, key=f1.__getitem__)
    progress(f"      prompt: validation macro-F1 {', '.join(f'{name} {value:.3f}' for name, value in f1.items())}; "
             f"scoring by {rule}")
    test = scorer.table(job.split.test.complete_rows()[0])
    return scored(job.split.test, classes, softmax(rule_scores(rule, test, lengths, content_free), axis=1))


# ---- the Steward methods: the command line on files, as a user runs it ----------------------------------------


def write_table(path: Path, table: TextTable) -> str:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("text", "label"))
        writer.writerows(zip(*table.complete_rows(), strict=True))
    return path.name

def write_corpus(path: Path, corpus: TextTable) -> str:
    """One document per line: line breaks inside a document (IMDB's U+0085 too) become spaces."""
    path.write_text("".join(" ".join(text.split()) + "\n" for text in corpus.present_texts()), encoding="utf-8")
    return path.name

def with_override(config: dict[str, Any], key: str, value: Any) -> None:
    *sections, leaf = key.split(".")
    for section in sections:
        config = config.setdefault(section, {})
    config[leaf] = value

def steward_config(job: Job, setup: Setup, adapt: bool) -> dict[str, Any]:
    """Steward's defaults but for the data, the seed, the length cut and the switches this comparison needs."""
    split, folder = job.split, job.folder
    data = {role: write_table(folder / f"{role}.csv", getattr(split, role)) for role in ("train", "validation", "test")}
    config: dict[str, Any] = {
        "name": "bench", "base_model": "minilm", "seed": job.seed, "data": data,
        "pretraining": {"max_seq_length": setup.max_seq_length} if adapt else {"enabled": False},
        "finetuning": {"max_seq_length": setup.max_seq_length},
        "evaluation": {"min_score": 0.0},
    }
    if adapt:
        data["domain_corpus"] = write_corpus(folder / "corpus.txt", split.corpus)
    for key, value in setup.steward_overrides.items():
        with_override(config, key, value)
    return config

def steward_outcome(command: str, job: Job, setup: Setup, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """`steward COMMAND --config FILE --json` in a subprocess with a fresh SQLite registry (`config`: this instead of
    `steward_config`'s); what it printed."""
    path = job.folder / "steward.yaml"
    config = config or steward_config(job, setup, adapt=command == "run")
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    argv = [sys.executable, "-m", "steward.cli", command, "--config", str(path),
            "--registry", f"sqlite:///{job.folder / 'registry.db'}", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=job.folder, check=False)
    for line in done.stderr.splitlines():
        if line.startswith("✓"):
            progress(f"      {line}")
    outcome = json.loads(done.stdout) if done.stdout.startswith("{") else {}
    if "metrics" not in outcome:  # exit 1 is also a rejecting gate, which still has metrics and does not matter here
        sys.exit(f"quality: steward {command} failed (exit {done.returncode}): {outcome.get('error', '')}\n"
                 f"{done.stderr[-3000:]}")
    return outcome


def steward(command: str, job: Job, setup: Setup) -> Scores:
    """A Steward command's test metrics."""
    metrics = steward_outcome(command, job, setup)["metrics"]
    return Scores(metrics["macro_f1"], metrics["accuracy"], metrics["ece"])


METHODS = (
    Method("tfidf+lr", tfidf_lr),
    Method("frozen+lr", frozen_lr),
    Method("plain-loop", plain_loop),
    Method("setfit", setfit_defaults, requires="setfit"),
    Method("prompt", prompted),
    Method(FINETUNE_ONLY, partial(steward, "finetune")),
    Method(STEWARD, partial(steward, "run")),
)
