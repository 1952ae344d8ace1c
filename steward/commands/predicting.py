"""`steward predict`: score a file with a registered version (an alias is resolved when the command starts)."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from steward.commands.common import console, emit, open_registry


def default_output(input_path: Path) -> Path:
    """`tickets.csv` -> `tickets.predictions.csv` beside it (Parquet input keeps Parquet)."""
    suffix = ".parquet" if input_path.suffix.lower() == ".parquet" else ".csv"
    return input_path.with_name(f"{input_path.stem}.predictions{suffix}")


def predict(args: argparse.Namespace) -> int:
    from core.refs import ModelRef
    from governance.events import BatchScored
    from steward.loading import predictor_for, resolve_version
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
        predictor = predictor_for(detail, ref.alias, args.form)
        predictions = predict_all(predictor, texts, show_progress=not args.json)
        write_predictions(output_path, texts, predictions, predictor.identity, predictor.labels)
        scored = BatchScored(
            model=predictor.identity.name,
            version=predictor.version,
            form=predictor.identity.form,
            alias=ref.alias,
            input=str(input_path.resolve()),
            input_fingerprint=table.fingerprint,
            rows=len(predictions),
            output=str(output_path.resolve()),
            label_counts=dict(sorted(Counter(p.label for p in predictions).items())),
        )
        registry.audit.append(f"{predictor.identity.name}:{predictor.version}", scored)
    summary = {**scored.body(), "seconds": round(time.perf_counter() - started, 3)}
    emit(args, summary, lambda: console().print(
        f"scored {summary['rows']:,} rows of {input_path} with {summary['model']} v{summary['version']} "
        f"({summary['form']}) "
        f"in {summary['seconds']:.1f}s → {summary['output']}"))
    return 0
