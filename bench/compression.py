"""Compressed forms side by side: PyTorch fp32, ONNX fp32, ONNX int8 (and the distilled student), in one run.

    .venv/bin/python bench/compression.py [--benchmarks demo,kotzias,fortunes] [--distill] [--repeats 3] [--json]

Per benchmark, `steward finetune --json` (pretraining off; Steward's defaults otherwise, so the compression
stage runs as a user gets it; `--distill` adds `compression.distill: {layers: 3}`) trains and registers a MiniLM
classifier, and the compression stage records its forms. Then, in this one process, each form is loaded as
Steward serves it and measured on the benchmark's test set:

- size: the bytes of its weight files (PyTorch: `model.safetensors` + `head.safetensors`; ONNX: `model.onnx`);
- latency p50 at batch 1 (50 single texts) and at batch 32 (20 batches), tokenising included;
- throughput: test texts per second in batches of 32, sorted by length and dynamically padded;
- the primary metric (macro-F1) and agreement: the share of test rows labelled as the PyTorch fp32 model does.

ONNX fp32 (the exported graph before quantization) is not a served form; it is measured to separate what the
runtime gives from what int8 gives. Timings on shared cores are noisy: each speed figure is the median of
`--repeats` rounds, the forms taking turns within each round, and ratios to PyTorch fp32 come from the same
round. Benchmarks: `demo` (the bundled support-ticket data), `kotzias` and `fortunes` (bench/benchmarks.py,
seed 0; skipped when their data is absent).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from benchmarks import FORTUNES_DIR, data_dir, fortunes_split, kotzias_split, progress  # bench/benchmarks.py
from quality import write_table  # bench/quality.py

from core.hashing import ModelFiles
from steward.loading import ModelRef, predictor_for, resolve_version
from tasks.compress import load_form
from tasks.data import TextTable, load_table

BATCH = 32
ONNX_FP32 = "onnx-fp32"


@dataclass(frozen=True)
class FormFigures:
    form: str
    size_mb: float
    latency_p50_batch1_ms: float
    latency_p50_batch32_ms: float
    throughput_per_s: float
    throughput_vs_fp32: float  # × PyTorch fp32, median of the per-round ratios
    batch1_speedup_vs_fp32: float
    size_vs_fp32: float
    macro_f1: float
    agreement: float  # with PyTorch fp32
    gate: str  # what the compression stage recorded (passed / refused / failed; fp32 and onnx-fp32: n/a)


def write_project(name: str, folder: Path, distill: bool) -> Path:
    """The benchmark's files and a config: pretraining off, compression (and optionally distillation) on."""
    folder.mkdir(parents=True)
    if name == "demo":
        from steward.demo import write_demo

        config_path = write_demo(folder)
        config = yaml.safe_load(config_path.read_text())
    else:
        split = kotzias_split("yelp", 0, 600) if name == "kotzias" else fortunes_split(0, 40, 10, 100)
        config = {"name": name, "base_model": "minilm", "seed": 0,
                  "data": {role: write_table(folder / f"{role}.csv", getattr(split, role))
                           for role in ("train", "validation", "test")}}
        config_path = folder / "steward.yaml"
    config["name"] = name
    config["pretraining"] = {"enabled": False}
    config.setdefault("evaluation", {})["min_score"] = 0.0
    config["compression"] = {"enabled": True, **({"distill": {"layers": 3}} if distill else {})}
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return config_path


def train(config_path: Path) -> dict[str, Any]:
    registry = f"sqlite:///{config_path.parent / 'registry.db'}"
    argv = [sys.executable, "-m", "steward.cli", "finetune", "--config", str(config_path), "--registry", registry,
            "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=config_path.parent, check=False)
    if not done.stdout.startswith("{"):
        sys.exit(f"compression: steward finetune failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout), "registry": registry}


def test_table(config_path: Path) -> TextTable:
    config = yaml.safe_load(config_path.read_text())
    return load_table(config_path.parent / config["data"]["test"], "text", "label", "test")


def weight_bytes(folder: Path, form: str) -> int:
    names = ("model.safetensors", "head.safetensors") if form == "fp32" else ("model.onnx",)
    return sum((Path(folder) / name).stat().st_size for name in names)


def onnx_fp32_scorer(fp32_predictor: Any, folder: Path) -> tuple[Any, int]:
    """The exported graph before quantization, in the same runtime as the served forms."""
    from tasks.compress import OnnxScorer, export_onnx, onnx_session

    classifier = fp32_predictor.scorer.classifier
    export_onnx(classifier, "bench", folder / "fp32.onnx")
    scorer = OnnxScorer(onnx_session(folder / "fp32.onnx"), classifier.tokenizer, classifier.labels,
                        classifier.temperature, classifier.max_length, ONNX_FP32)
    return scorer, (folder / "fp32.onnx").stat().st_size


def measure_round(scorer: Any, texts: list[str]) -> tuple[float, float, float]:
    """(latency p50 batch 1 ms, latency p50 batch 32 ms, throughput texts/s) of one round."""
    from tasks.evaluate import LATENCY_BATCHES, LATENCY_SAMPLE, latency_ms

    single, _ = latency_ms(scorer, texts[:LATENCY_SAMPLE], 1)
    batched, _ = latency_ms(scorer, texts[: LATENCY_BATCHES * BATCH], BATCH)
    started = time.perf_counter()
    scorer.logits(texts, BATCH)
    return single, batched, len(texts) / (time.perf_counter() - started)


def bench(name: str, workdir: Path, distill: bool, repeats: int) -> dict[str, Any]:
    from sklearn.metrics import f1_score

    from governance.registry import Registry

    config_path = write_project(name, workdir / name, distill)
    progress(f"{name}: steward finetune (compression on{', distillation on' if distill else ''}) ...")
    outcome = train(config_path)
    test = test_table(config_path)
    texts, truth = test.complete_rows()
    with Registry.open(outcome["registry"]) as registry:
        detail = resolve_version(registry, ModelRef(name, None, outcome["version"]))
    scorers, sizes, gates = {}, {}, {}
    fp32 = predictor_for(detail, None, "fp32")
    scorers["fp32"], sizes["fp32"] = fp32.scorer, weight_bytes(fp32.identity.artifact_path, "fp32")
    gates["fp32"] = "n/a"
    scorers[ONNX_FP32], sizes[ONNX_FP32] = onnx_fp32_scorer(fp32, workdir / name)
    gates[ONNX_FP32] = "n/a"
    for form in detail.forms:  # a refused form is measured too (it is on disk); a failed one has nothing to run
        gates[form.form] = form.status
        if form.artifact_path:
            scorers[form.form] = load_form(ModelFiles(Path(form.artifact_path), form.files).verified())
            sizes[form.form] = weight_bytes(form.artifact_path, form.form)
    predictions = {form: [scorer.labels[i] for i in scorer.logits(texts, BATCH).argmax(-1).tolist()]
                   for form, scorer in scorers.items()}
    rounds: dict[str, list[tuple[float, float, float]]] = {form: [] for form in scorers}
    for index in range(repeats):
        progress(f"{name}: timing round {index + 1}/{repeats}")
        for form, scorer in scorers.items():
            rounds[form].append(measure_round(scorer, texts))
    figures = []
    for form in scorers:
        ratios = [mine[2] / base[2] for mine, base in zip(rounds[form], rounds["fp32"], strict=True)]
        speedups = [base[0] / mine[0] for mine, base in zip(rounds[form], rounds["fp32"], strict=True)]
        agreement = sum(a == b for a, b in zip(predictions[form], predictions["fp32"], strict=True)) / len(texts)
        figures.append(FormFigures(
            form=form, size_mb=sizes[form] / 1e6,
            latency_p50_batch1_ms=statistics.median(r[0] for r in rounds[form]),
            latency_p50_batch32_ms=statistics.median(r[1] for r in rounds[form]),
            throughput_per_s=statistics.median(r[2] for r in rounds[form]),
            throughput_vs_fp32=statistics.median(ratios), batch1_speedup_vs_fp32=statistics.median(speedups),
            size_vs_fp32=sizes[form] / sizes["fp32"],
            macro_f1=float(f1_score(truth, predictions[form], average="macro")), agreement=agreement,
            gate=gates[form],
        ))
    not_served = {form: gate for form, gate in gates.items() if form not in scorers}
    return {"benchmark": name, "test_rows": len(texts), "version": outcome["version"],
            "forms": [asdict(f) for f in figures], "not_served": not_served,
            "gate_reasons": {form.form: list(form.reasons) for form in detail.forms}}


def print_result(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['benchmark']}: {result['test_rows']:,} test rows")
    columns = ("form", "size MB", "× size", "p50 b1 ms", "× b1", "p50 b32 ms", "texts/s b32", "× throughput",
               "macro-F1", "agreement", "gate")
    for column in columns:
        table.add_column(column, justify="left" if column in ("form", "gate") else "right")
    for f in result["forms"]:
        table.add_row(f["form"], f"{f['size_mb']:.1f}", f"{f['size_vs_fp32']:.2f}", f"{f['latency_p50_batch1_ms']:.1f}",
                      f"{f['batch1_speedup_vs_fp32']:.2f}", f"{f['latency_p50_batch32_ms']:.0f}",
                      f"{f['throughput_per_s']:.0f}", f"{f['throughput_vs_fp32']:.2f}", f"{f['macro_f1']:.3f}",
                      f"{f['agreement']:.3f}", f["gate"])
    console = Console(width=140)
    console.print(table)
    for form, gate in result["not_served"].items():
        console.print(f"  {form}: {gate} ({'; '.join(result['gate_reasons'].get(form, []))})")


def available(name: str) -> str | None:
    if name == "kotzias" and not data_dir().is_dir():
        return f"no data at {data_dir()}"
    if name == "fortunes" and not FORTUNES_DIR.is_dir():
        return f"{FORTUNES_DIR} is absent (apt-get install fortunes)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", default="demo,kotzias,fortunes")
    parser.add_argument("--distill", action="store_true", help="also distil a 3-layer student")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import torch

    started, results, skipped = time.perf_counter(), [], {}
    with tempfile.TemporaryDirectory(prefix="steward-compression-") as workdir:
        for name in args.benchmarks.split(","):
            if (reason := available(name)) is not None:
                skipped[name] = reason
                progress(f"{name}: skipped, {reason}")
                continue
            results.append(bench(name, Path(workdir), args.distill, args.repeats))
            if not args.json:
                print_result(results[-1])
    report = {"results": results, "skipped": skipped, "threads": torch.get_num_threads(),
              "total_seconds": time.perf_counter() - started}
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
