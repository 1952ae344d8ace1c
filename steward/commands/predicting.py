"""`steward predict`: score a file with a registered version (an alias is resolved when the command starts).

A classifier writes each text's label, score and class probabilities; a causal language model each text's
perplexity, or with `--generate` its greedy completion (`completion`, `finish_reason`); the same file formats
and `model`, `version`, `form` columns either way."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from steward.commands.common import console, emit, open_registry

if TYPE_CHECKING:
    from steward.language_model import RegisteredGenerator


def default_output(input_path: Path) -> Path:
    """`tickets.csv` -> `tickets.predictions.csv` beside it (Parquet input keeps Parquet)."""
    suffix = ".parquet" if input_path.suffix.lower() == ".parquet" else ".csv"
    return input_path.with_name(f"{input_path.stem}.predictions{suffix}")


def predict(args: argparse.Namespace) -> int:
    from core.errors import BadInputError
    from core.refs import ModelRef
    from governance.events import BatchScored
    from steward.language_model import RegisteredGenerator
    from steward.loading import load_version, resolve_version
    from tasks.data import load_table
    from tasks.predict import predict_all, texts_to_score, write_predictions

    started = time.perf_counter()
    ref = ModelRef.parse(args.model)
    input_path = Path(args.input)
    output_path = Path(args.output) if args.output else default_output(input_path)
    with open_registry(args) as registry:
        detail = resolve_version(registry, ref)
        table = load_table(input_path, args.text_column, None, "input")
        texts = texts_to_score(table)
        model = load_version(detail, ref.alias, args.form)
        if isinstance(model, RegisteredGenerator):
            label_counts = _language_model_rows(args, model, texts, output_path)
        elif args.generate:
            raise BadInputError(f"--generate needs a causal language model; {ref} is a text classifier")
        else:
            predictions = predict_all(model, texts, show_progress=not args.json)
            write_predictions(output_path, texts, predictions, model.identity, model.labels)
            label_counts = Counter(p.label for p in predictions)
        scored = BatchScored(
            model=model.identity.name,
            version=model.version,
            form=model.identity.form,
            alias=ref.alias,
            input=str(input_path.resolve()),
            input_fingerprint=table.fingerprint,
            rows=len(texts),
            output=str(output_path.resolve()),
            label_counts=dict(sorted(label_counts.items())),
        )
        registry.audit.append(f"{model.identity.name}:{model.version}", scored)
    summary = {**scored.body(), "seconds": round(time.perf_counter() - started, 3)}
    emit(args, summary, lambda: console().print(
        f"{'completed' if args.generate else 'scored'} {summary['rows']:,} rows of {input_path} with "
        f"{summary['model']} v{summary['version']} ({summary['form']}) "
        f"in {summary['seconds']:.1f}s → {summary['output']}"))
    return 0


def _language_model_rows(args: argparse.Namespace, model: RegisteredGenerator, texts: list[str],
                         output_path: Path) -> Counter[str]:
    """Write each text's perplexity, or with --generate its greedy completion and finish_reason; the counts of
    finish reasons (none for perplexity) are the audit event's label counts."""
    from tasks.predict import complete_all, perplexity_all, write_rows

    if not args.generate:
        perplexities = perplexity_all(model, texts, show_progress=not args.json)
        write_rows(output_path, texts, {"perplexity": perplexities}, model.identity)
        return Counter()
    completions = complete_all(model, texts, args.max_new_tokens, show_progress=not args.json)
    write_rows(output_path, texts, {"completion": [done.text for done in completions],
                                    "finish_reason": [done.finish_reason for done in completions]}, model.identity)
    return Counter(done.finish_reason for done in completions)
