"""The audit report of one model version: what a reviewer reads before letting it serve.

Built from the registry alone (no training code): the gate decision, a model card, metrics against
the champion, per-class results, calibration, defects and risks (`reports.risks`), training curves,
validation, drift, lineage, artifacts, environment and the audit trail. A causal language model's report
has its perplexity against the base and the champion and the fixed prompts answered side by side instead
(`reports.language_model`). Rendered as self-contained HTML (`reports.render`) or markdown.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import BadInputError
from core.vocabulary import CHAMPION, CLASSICAL_BASELINE_NAME, CLASSICAL_BASELINE_PREFIX
from governance.audit import AuditEventRecord
from governance.records import (
    AliasMove,
    DatasetRecord,
    GateDecisionRecord,
    ModelVersionDetail,
    RunRecord,
)
from governance.registry import Registry
from reports import language_model, risks
from reports.evidence import Evidence, gather
from reports.plots import compression_svg, confusion_matrix_svg, curves_svg, reliability_svg
from reports.render import (
    Badge,
    Bullets,
    Cell,
    Chain,
    Document,
    Facts,
    Figure,
    Link,
    Preformatted,
    Section,
    Styled,
    Table,
    render_html,
    render_markdown,
)

FORMATS = ("html", "md")
LOWER_IS_BETTER = frozenset({"ece", "ece_uncalibrated", "latency_p50_ms", "latency_p95_ms", "batch_latency_p50_ms"})
POORLY_CALIBRATED_ECE = 0.1
OBSERVED_WIDTH = 120
EVENT_DETAIL_WIDTH = 90
TRAINING_ROLES = ("train", "validation", "corpus")
DATASET_ORDER = ("train", "validation", "test", "corpus")


# -- small formatting helpers ------------------------------------------------------------------------


def _num(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _when(moment: datetime | str | None) -> str:
    if moment is None:
        return "—"
    if isinstance(moment, str):
        return moment[:19].replace("T", " ") + " UTC"
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _flow_run_cell(run: RunRecord, ui_url: str | None) -> Cell:
    if run.flow_run_id is None:
        return "—"
    if ui_url is None:
        return run.flow_run_id
    return Link(run.flow_run_id, f"{ui_url}/runs/flow-run/{run.flow_run_id}")


def _delta(metric: str, new: float, old: float | None) -> Cell:
    if old is None:
        return "—"
    change = new - old
    better = change < 0 if metric in LOWER_IS_BETTER else change > 0
    tone = "muted" if abs(change) < 1e-12 else "ok" if better else "bad"
    return Styled(f"{change:+.4f}", tone)


def _approval(evidence: Evidence) -> AliasMove | None:
    """The latest manual promotion of this version (`steward registry promote --approver`)."""
    promotions = [m for m in evidence.moves if m.action == "promote" and m.version == evidence.number]
    return promotions[-1] if promotions else None


# -- summary -----------------------------------------------------------------------------------------


def _badge(evidence: Evidence) -> Badge:
    gate, approval = evidence.gate, _approval(evidence)
    if CHAMPION in evidence.detail.aliases:
        how = f"approved by {approval.actor}" if approval else "passed the promotion gate"
        return Badge("PROMOTED", "ok", f"serving as {CHAMPION}; {how}")
    if any(m.alias == CHAMPION and m.version == evidence.number for m in evidence.moves):
        return Badge("FORMER CHAMPION", "muted", f"another version is {CHAMPION} now")
    if gate is None:
        return Badge("NOT GATED", "muted", "registered without a promotion gate")
    if gate.outcome == "rejected":
        return Badge("REJECTED", "bad", "failed the promotion gate; no alias")
    return Badge("CHALLENGER · AWAITING APPROVAL", "wait",
                 f"passed the gate; needs an approver other than {evidence.detail.run.author}")


def _gate_numbers(evidence: Evidence, gate: GateDecisionRecord) -> str:
    if gate.floor_source == "base model":  # a perplexity ceiling: lower is better
        return language_model.gate_numbers(evidence, gate)
    floor_is_classical_baseline = evidence.floor_is_classical_baseline
    champion = "no champion to beat" if gate.champion_score is None else (
        f"champion v{gate.champion_version} {gate.champion_score:.4f} "
        f"(Δ {gate.candidate_score - gate.champion_score:+.4f})"
    )
    floor = (f"{gate.min_score:.4f} = the classical baseline ({CLASSICAL_BASELINE_NAME})" if floor_is_classical_baseline
             else f"{gate.min_score}")
    return (f"{gate.primary_metric} {gate.candidate_score:.4f} vs {champion}; floor {floor}, "
            f"required improvement {gate.min_improvement}")


def _classical_summary(evidence: Evidence) -> Cell:
    classical, metrics = evidence.classical_baseline, evidence.run_metrics
    if not classical:
        return Styled("not recorded for this run", "muted")
    scores = ", ".join(f"{name} {value:.4f}" for name, value in classical.items())
    fitted = []
    if CLASSICAL_BASELINE_PREFIX + "c" in metrics:
        fitted.append(f"C={metrics[CLASSICAL_BASELINE_PREFIX + 'c']:g}")
    if CLASSICAL_BASELINE_PREFIX + "seconds" in metrics:
        fitted.append(f"fitted in {metrics[CLASSICAL_BASELINE_PREFIX + 'seconds']:.1f}s")
    how = f" ({', '.join(fitted)})" if fitted else ""
    return f"{CLASSICAL_BASELINE_NAME} on the same split: {scores}{how}"


def _approver(evidence: Evidence) -> Cell:
    approval, gate = _approval(evidence), evidence.gate
    if approval is not None:
        reason = f" — “{approval.reason}”" if approval.reason else ""
        return f"{approval.actor} (made it {approval.alias} on {_when(approval.created_at)}){reason}"
    if gate is not None and gate.outcome == "challenger":
        return Styled(f"awaiting approval by someone other than {evidence.detail.run.author}", "wait")
    if gate is not None and gate.outcome == "promoted":
        return "none needed: the gate promoted it (no approval required)"
    if gate is not None and gate.outcome == "rejected":
        return "none: the gate rejected it"
    return "—"


def _decision(gate: GateDecisionRecord | None) -> Cell:
    if gate is None:
        return Styled("no gate decision recorded", "muted")
    tone = {"promoted": "ok", "challenger": "wait", "rejected": "bad"}[gate.outcome]
    return Styled(f"{gate.outcome} ({'passed' if gate.passed else 'failed'}) on {_when(gate.created_at)}", tone)


def _summary(evidence: Evidence) -> Section:
    detail, gate, run = evidence.detail, evidence.gate, evidence.detail.run
    facts: list[tuple[str, Cell]] = [
        ("Gate decision", _decision(gate)),
        ("Gate numbers", _gate_numbers(evidence, gate) if gate else "—"),
        ("Compared with", language_model.comparison(evidence)) if evidence.is_language_model
        else ("Classical baseline", _classical_summary(evidence)),
        ("Aliases", ", ".join(detail.aliases) or "none"),
        ("Approver", _approver(evidence)),
        ("Registered", f"{_when(detail.version.created_at)} by {detail.version.created_by}"),
        ("Training run", f"{run.status}; started {_when(run.started_at)} by {run.author}, "
                         f"finished {_when(run.finished_at)}"),
    ]
    blocks: list = [Facts(facts)]
    if gate is not None:
        blocks.append(Bullets(list(gate.reasons), title="Why"))
        if gate.floor_source == "base model":
            blocks.append(language_model.CEILING_NOTE)
    if evidence.moves:
        blocks.append(_alias_table(evidence.moves))
    return Section("summary", "Summary", blocks)


def _alias_table(moves: list[AliasMove]) -> Table:
    rows = [
        (_when(m.created_at), m.alias, m.action,
         f"v{m.previous_version} → v{m.version}" if m.previous_version else f"→ v{m.version}", m.actor, m.reason)
        for m in moves
    ]
    return Table(("time", "alias", "action", "move", "by", "reason"), rows, "Alias moves involving this version")


# -- model card --------------------------------------------------------------------------------------


def _dataset_line(role: str, evidence: Evidence) -> str:
    dataset = evidence.detail.datasets[role]
    unit = "documents" if evidence.is_language_model else "rows"
    return f"{role}: {dataset.source} — {dataset.rows} {unit} (sha256 {dataset.fingerprint[:12]}…)"


def _derived_limitations(evidence: Evidence) -> list[str]:
    found = language_model.limitations(evidence) if evidence.is_language_model else _classifier_limitations(evidence)
    return found + _drift_limitations(evidence)


def _classifier_limitations(evidence: Evidence) -> list[str]:
    lines = risks.card_lines(evidence)
    evaluation, ece = evidence.evaluation, evidence.detail.metrics.get("ece")
    if evaluation is not None:
        weakest = min(evaluation.per_class, key=lambda score: score.f1)
        if weakest.f1 < 1.0:
            lines.append(f"Weakest class: {weakest.label} (F1 {weakest.f1:.3f}, {weakest.support} test examples).")
        lines.append(f"Measured on one test set of {evaluation.examples} examples; other domains or drifted "
                     "inputs may score lower.")
    if ece is not None and ece > POORLY_CALIBRATED_ECE:
        lines.append(f"Confidences are poorly calibrated (ECE {ece:.3f}): do not read them as probabilities.")
    return lines


def _drift_limitations(evidence: Evidence) -> list[str]:
    lines = []
    drifted = [d for d in evidence.drift if d.finding == "drift"]
    if drifted:
        lines.append(f"Drift detected {len(drifted)} time(s), last on {_when(drifted[-1].created_at)}.")
    shifted = [d for d in evidence.drift if d.finding == "prior_shift"]
    if shifted:
        lines.append(f"The class mix shifted {len(shifted)} time(s) (prior shift, inputs unchanged), last on "
                     f"{_when(shifted[-1].created_at)}: class-wise metrics hold, overall ones move with the mix.")
    return lines


def _card_facts(evidence: Evidence) -> Facts:
    card, version = evidence.card, evidence.detail.version
    task = evidence.detail.run.config.get("task", "text-classification")
    intended: Cell = card.get("intended_use") or Styled("not stated: add card.intended_use to the config", "muted")
    model: Cell = f"{version.model_name} v{version.version}: {task}, fine-tuned from {version.base_model}"
    trained_on: tuple[str, Cell] = ("Classes", ", ".join(evidence.evaluation.labels) if evidence.evaluation else "—")
    if evidence.is_language_model:
        model, trained_on = language_model.model_line(evidence), ("Corpus", language_model.corpus_line(evidence))
    return Facts([("Model", model), ("Intended use", intended), trained_on, ("Contact", card.get("contact") or "—")])


def _card_metrics(evidence: Evidence) -> list[Cell]:
    metrics, classical = evidence.detail.metrics, evidence.classical_baseline
    shown = [evidence.primary_metric, *sorted({"accuracy", "macro_f1", "ece"} - {evidence.primary_metric})]
    lines: list[Cell] = [f"{name}: {metrics[name]:.4f}" for name in shown if name in metrics]
    if classical:
        scores = ", ".join(f"{name} {value:.4f}" for name, value in classical.items())
        lines.append(f"classical baseline ({CLASSICAL_BASELINE_NAME}, same split): {scores}")
    return lines


def _model_card(evidence: Evidence) -> Section:
    datasets, card, causal = evidence.detail.datasets, evidence.card, evidence.is_language_model
    evaluated = [_dataset_line("test", evidence)] if "test" in datasets else []
    if causal:
        evaluated.append(language_model.reference_line(evidence))
    metrics = language_model.card_metrics(evidence) if causal else _card_metrics(evidence)
    blocks: list = [
        _card_facts(evidence),
        Bullets([_dataset_line(r, evidence) for r in TRAINING_ROLES if r in datasets] or ["not recorded"],
                "Training data"),
        Bullets(evaluated or ["not recorded"], "Evaluation data"),
        Bullets(metrics or ["none recorded"], "Metrics (test documents)" if causal else "Metrics (test set)"),
        Bullets([*card.get("limitations", []), *_derived_limitations(evidence)] or ["none stated"], "Limitations"),
    ]
    if causal:
        blocks.append(Bullets(language_model.not_evaluated(evidence), "Not evaluated"))
    if card.get("out_of_scope"):
        blocks.append(Bullets(list(card["out_of_scope"]), "Out of scope"))
    return Section("model-card", "Model card", blocks)


# -- quality -----------------------------------------------------------------------------------------


def _metrics(evidence: Evidence) -> Section:
    champion, gate, classical = evidence.champion_metrics, evidence.gate, evidence.classical_baseline
    label = f"champion v{gate.champion_version}" if gate and gate.champion_version else "champion"
    header: tuple[str, ...] = ("metric", "this version", label, "delta")
    if classical:
        header += (f"classical baseline ({CLASSICAL_BASELINE_NAME})", "vs baseline")
    rows = []
    for name, value in sorted(evidence.detail.metrics.items()):
        old = champion.get(name) if champion else None
        row: tuple[Cell, ...] = (name, _num(value), _num(old), _delta(name, value, old))
        if classical:
            row += (_num(classical.get(name)), _delta(name, value, classical.get(name)))
        rows.append(row)
    notes = ["Champion values are its metrics as recorded in the registry." if champion
             else "There was no champion to compare with when this version was gated."]
    if classical:
        floor = ("It was the gate's floor (evaluation.min_score: baseline)." if evidence.floor_is_classical_baseline
                 else "The gate's floor was the configured number, not the baseline.")
        notes.append(f"The classical baseline is TF-IDF (word 1–2 grams) + logistic regression fitted on this run's "
                     f"training split, C chosen on its validation split, scored on the same test set. {floor}")
    return Section("metrics", "Metrics against the champion", [*notes, Table(header, rows)])


def _missing_evaluation() -> str:
    return "No evaluation details were recorded for this version (it predates them, or was registered elsewhere)."


def _per_class(evidence: Evidence) -> Section:
    evaluation = evidence.evaluation
    if evaluation is None:
        return Section("per-class", "Per-class results", [_missing_evaluation()])
    scores = Table(("class", "precision", "recall", "F1", "support"), [
        (s.label, _num(s.precision), _num(s.recall), _num(s.f1), str(s.support)) for s in evaluation.per_class
    ])
    matrix = Table(("true \\ predicted", *evaluation.labels), [
        (label, *(str(count) for count in row))
        for label, row in zip(evaluation.labels, evaluation.confusion_matrix, strict=True)
    ], "Confusion matrix")
    figure = Figure(f"Confusion matrix on {evaluation.examples} test examples (rows: true class)",
                    lambda: confusion_matrix_svg(evaluation.labels, evaluation.confusion_matrix), matrix)
    return Section("per-class", "Per-class results", [scores, figure])


def _calibration(evidence: Evidence) -> Section:
    evaluation, metrics = evidence.evaluation, evidence.detail.metrics
    ece, uncalibrated = metrics.get("ece"), metrics.get("ece_uncalibrated")
    intro = (f"Expected calibration error {_num(ece)}: the gap between confidence and accuracy, weighted over "
             "equal-width confidence bins (0 is perfectly calibrated).")
    blocks: list = [intro]
    if uncalibrated is not None:
        blocks.append(Table(("probabilities", "ECE"), [
            ("before calibration (temperature 1)", _num(uncalibrated)),
            ("after temperature scaling", _num(ece)),
            ("change", "—" if ece is None else _delta("ece", ece, uncalibrated)),
        ], "ECE before and after calibration"))
    if evaluation is None:
        return Section("calibration", "Calibration", [*blocks, _missing_evaluation()])
    bins = Table(("confidence", "examples", "mean confidence", "accuracy", "gap"), [
        (f"{b.lower:.2f}–{b.upper:.2f}", str(b.count), _num(b.mean_confidence), _num(b.accuracy),
         f"{b.accuracy - b.mean_confidence:+.4f}")
        for b in evaluation.reliability
    ], "Reliability bins")
    figure = Figure("Reliability diagram: bars are the accuracy in each confidence bin, orange marks its mean "
                    "confidence (the gap is miscalibration), the dashed line is perfect calibration",
                    lambda: reliability_svg(evaluation.reliability, ece, uncalibrated))
    return Section("calibration", "Calibration", [*blocks, figure, bins])


def _times(value: float | None, reference: float | None) -> str:
    """`value / reference` as "2.41×"; a dash when either is missing."""
    return f"{value / reference:.2f}×" if value and reference else "—"


def _form_row(name: str, status: Cell, size: int | None, metrics: dict[str, float], fp32: dict[str, float],
              fp32_size: int, primary: str) -> tuple[Cell, ...]:
    single, batched, speed = (metrics.get(key) for key in ("latency_p50_ms", "batch_latency_p50_ms",
                                                            "throughput_per_s"))
    drop = metrics.get("metric_drop")
    return (
        name, status,
        "—" if size is None else f"{size / 1e6:.1f} MB ({_times(size, fp32_size)})",
        "—" if single is None else f"{single:.2f} ms ({_times(fp32.get('latency_p50_ms'), single)} as fast)",
        "—" if batched is None else f"{batched:.1f} ms",
        "—" if speed is None else f"{speed:.0f}/s ({_times(speed, fp32.get('throughput_per_s'))})",
        _num(metrics.get(primary)) + ("" if drop is None else f" ({0.0 - drop + 0.0:+.4f})"),
        _num(metrics.get("agreement")),
    )


def _compression(evidence: Evidence) -> Section:
    detail, primary = evidence.detail, evidence.primary_metric
    forms = detail.forms
    if not forms:
        return Section("compression", "Compression", ["No compressed form was made for this version "
                                                      "(compression.enabled was false, or it predates compression)."])
    fp32, fp32_size = detail.metrics, sum(f.size_bytes or 0 for f in detail.files)
    tones = {"passed": "ok", "refused": "wait", "failed": "bad"}
    rows = [_form_row("fp32 (PyTorch)", "reference", fp32_size, {**fp32, "agreement": 1.0}, fp32, fp32_size, primary)]
    rows += [_form_row(form.form, Styled(form.status, tones[form.status]), form.size_bytes, form.metrics, fp32,
                       fp32_size, primary) for form in forms]
    header = ("form", "gate", "size", "latency p50, 1 text", "latency p50, 32 texts", "throughput",
              f"{primary} (vs fp32)", "agreement with fp32")
    served = detail.fastest_passed_form()
    blocks: list = [
        "Each form was evaluated on the same test set as the fp32 model, by the same evaluation. A form is served "
        "only when it passed the compression gate; `load_model`, `steward predict` and `steward serve-model` use "
        f"the fastest that did: here {served.form if served else 'fp32'}. Sizes are the bytes of all its files.",
        Table(header, rows),
        Bullets([f"{form.form}: {'; '.join(form.reasons)}" for form in forms], "The gate's reasons"),
    ]
    measured = [f for f in forms if f.metrics.get("throughput_per_s") and f.size_bytes]
    if measured and fp32.get("throughput_per_s") and fp32.get("latency_p50_ms"):
        bars = [(f.form, f.metrics["throughput_per_s"] / fp32["throughput_per_s"],
                 fp32["latency_p50_ms"] / f.metrics["latency_p50_ms"], f.size_bytes / fp32_size) for f in measured]
        blocks.append(Figure("Speed and size of each form relative to the fp32 model (above 1: faster; size below 1: "
                             "smaller)", lambda: compression_svg(bars)))
    deltas = [f for f in forms if f.per_class_f1_delta]
    if deltas:
        labels = sorted({label for form in deltas for label in form.per_class_f1_delta})
        blocks.append(Table(("class", *(f"{form.form} F1 − fp32 F1" for form in deltas)), [
            (label, *(f"{form.per_class_f1_delta.get(label, 0.0):+.4f}" for form in deltas)) for label in labels
        ], "Per-class F1 change"))
    return Section("compression", "Compression", blocks)


# -- training, validation, drift ---------------------------------------------------------------------


def _curve_summary(curves: list[tuple[str, list[tuple[int, float]]]]) -> Table:
    rows = [
        (title, str(len(points)), _num(points[0][1]), _num(points[-1][1]),
         _num(min(v for _, v in points)), _num(max(v for _, v in points)))
        for title, points in curves
    ]
    return Table(("series", "points", "first", "last", "min", "max"), rows, "Training curves")


def _pretraining_facts(evidence: Evidence) -> Facts:
    """The adaptation's held-out loss before → after (its perplexity too for language modelling)."""
    metrics, evaluation = evidence.run_metrics, evidence.evaluation
    before, after = metrics.get("pretrain_heldout_loss_before"), metrics.get("pretrain_heldout_loss_after")
    change = f" ({(after - before) / before:+.1%})" if before and after is not None else ""
    cache = metrics.get("pretrain_cache_hit")
    adapted = _adaptation_event(evidence)
    key = evaluation.adapted_checkpoint_key if evaluation else adapted.get("cache_key") if adapted else None
    rows = [("Held-out loss before → after", f"{_num(before, 3)} → {_num(after, 3)}{change}")]
    if "pretrain_perplexity_before" in metrics:
        rows.append(("Perplexity before → after", f"{_num(metrics['pretrain_perplexity_before'], 2)} → "
                                                   f"{_num(metrics.get('pretrain_perplexity_after'), 2)}"))
    return Facts([
        ("Objective", _adaptation_objective(evidence)),
        *rows,
        ("Pretraining steps", _num(metrics.get("pretrain_steps"), 0)),
        ("Adapted checkpoint", "—" if cache is None else "reused from cache" if cache else "trained in this run"),
        ("Checkpoint cache key", key or "—"),
    ])


def _adaptation_event(evidence: Evidence) -> dict | None:
    """The payload of the run's `domain_adapted` audit event (objective, steps, cache key), if it adapted."""
    return _run_event(evidence, "domain_adapted")


def _adaptation_objective(evidence: Evidence) -> str:
    """The objective that ran (what `auto` chose), from the run's `domain_adapted` audit event."""
    configured = (evidence.detail.run.config.get("pretraining") or {}).get("objective", "auto")
    adapted = _adaptation_event(evidence)
    ran = adapted.get("objective") if adapted else None
    return f"{ran} (configured: {configured})" if ran else configured


def _training(evidence: Evidence) -> Section:
    primary, causal = evidence.primary_metric, evidence.is_language_model
    pretrain_unit = "next-token loss (nats per token)" if causal else "objective's loss"
    titles = {"pretrain_loss": ("Continued pretraining loss", "optimizer step", pretrain_unit),
              "finetune_loss": ("Fine-tuning loss", "optimizer step", "loss"),
              f"validation_{primary}": (f"Validation {primary}", "epoch", primary)}
    curves = [(*titles[key], points) for key, points in evidence.curves.items() if points]
    blocks: list = ["Continued pretraining did not run for this version."]
    if "pretrain_steps" in evidence.run_metrics:
        blocks = [_pretraining_facts(evidence)]
    if curves:
        summary = _curve_summary([(title, points) for title, _, _, points in curves])
        blocks.append(Figure("Loss and validation curves of the training run", lambda: curves_svg(curves), summary))
    else:
        blocks.append("No training curves were recorded for this run.")
    return Section("training", "Continued pretraining" if causal else "Pretraining and fine-tuning", blocks)


def _observed(value: object) -> str:
    return _clip(value if isinstance(value, str) else json.dumps(value, default=str), OBSERVED_WIDTH)


def _validation(evidence: Evidence) -> Section:
    roles = {dataset.id: role for role, dataset in evidence.detail.datasets.items()}
    results = evidence.validation
    if not results:
        return Section("validation", "Validation results", ["No validation results were recorded for its run."])
    failed = [r for r in results if not r.success]
    summary = (f"{len(results)} expectations checked before training: "
               + (f"{len(failed)} failed." if failed else "all passed."))
    rows = [
        (roles.get(r.dataset_id, "—") if r.dataset_id else "—", r.expectation, r.column or "",
         Styled("passed", "ok") if r.success else Styled("FAILED", "bad"), _observed(r.observed))
        for r in results
    ]
    return Section("validation", "Validation results",
                   [summary, Table(("dataset", "expectation", "column", "result", "observed"), rows)])


def _run_event(evidence: Evidence, event_type: str) -> dict | None:
    """The payload of the version's run's last `event_type` audit event, if any."""
    payloads = [event.payload for event in evidence.events
                if event.event_type == event_type and event.payload.get("run_id") == evidence.detail.run.id]
    return payloads[-1] if payloads else None


def _data_risks(evidence: Evidence) -> Section:
    """Personal data and label errors found in the run's files before training (counts and lines, never texts)."""
    blocks: list = []
    personal = _run_event(evidence, "personal_data_found")
    if personal is None:
        blocks.append("No personal data was found in the run's files (or they were not scanned: a run before the "
                      "scan existed).")
    else:
        action = {"redact": "replaced with its type before training", "report": "left in the data (report)",
                  "fail": "stopped the run"}.get(personal["policy"], personal["policy"])
        rows = [(file, kind, f"{count:,}") for file, kinds in personal["findings"].items()
                for kind, count in kinds.items()]
        blocks += [f"Personal data found, {action}.", Table(("file", "type", "findings"), rows)]
    issues = _run_event(evidence, "label_issues_found")
    if issues is None:
        blocks.append("No label issues were found (or the labels were not checked: a language model, or a run "
                      "before the check existed).")
        return Section("data-risks", "Data risks", blocks)
    dropped = f"; {issues['dropped']} dropped before training" if issues.get("dropped") else ""
    blocks.append(f"Rows whose label looks wrong (cleanlab, out-of-fold probabilities of the frozen base), "
                  f"policy {issues['policy']}{dropped}.")
    share_rows = [(role, label, f"{count}", _num(count / issues["checked"][role], 3) if issues["checked"].get(role)
                   else "—") for role, labels in issues["per_class"].items() for label, count in labels.items()]
    blocks.append(Table(("file", "given label", "issues", "share of the file's rows"), share_rows))
    worst = [(Path(i["file"]).name, str(i["line"]), i["given"], i["suggested"], _num(i["confidence"], 3))
             for i in issues["worst"]]
    blocks.append(Table(("file", "line", "given", "suggested", "confidence"), worst,
                        "The worst rows, by the probability of their given label (the lowest first)."))
    return Section("data-risks", "Data risks", blocks)


_FINDING_STYLES = {"drift": Styled("drift", "bad"), "prior_shift": Styled("prior shift", "wait"),
                   "none": Styled("no drift", "ok")}
_RETRAIN_WORDS = {"requested": "requested", "cooldown": "no (cooldown)", "same_episode": "no (same episode)",
                  "not_needed": "—"}


def _drift(evidence: Evidence) -> Section:
    if not evidence.drift:
        return Section("drift", "Drift history", [
            f"No drift reports for {evidence.name} yet (`steward monitor` records them against the champion)."])
    rows = []
    for report in evidence.drift:
        number = evidence.version_numbers.get(report.version_id) if report.version_id else None
        version = "—" if number is None else f"v{number}" + (" (this version)" if number == evidence.number else "")
        drifted = [signal["name"] for signal in report.details.get("signals", []) if signal.get("drifted")]
        rows.append((_when(report.created_at), version, _FINDING_STYLES[report.finding], f"{report.drift_share:.0%}",
                     ", ".join(drifted) or "none", _RETRAIN_WORDS[report.retrain],
                     report.details.get("reference", "train"), report.details.get("current", ""), report.report_path))
    return Section("drift", "Drift history", [
        "Each check compares a batch with the champion's reference data. A signal drifts when its effect size "
        "reaches its threshold and its test is significant; drift when the share of drifted input signals "
        "reaches the configured threshold; prior shift when only the class mix (predicted or true labels) "
        "changed. At most one retrain per drift episode and champion, none within the cooldown.",
        Table(("time", "champion", "result", "input drift share", "drifted signals", "retrain", "reference",
               "batch", "Evidently report"), rows),
    ])


# -- lineage, artifacts, environment, audit ----------------------------------------------------------


def _datasets(detail: ModelVersionDetail) -> list[tuple[str, DatasetRecord]]:
    """The version's datasets, training data first."""
    def rank(role: str) -> int:
        return DATASET_ORDER.index(role) if role in DATASET_ORDER else len(DATASET_ORDER)

    return sorted(detail.datasets.items(), key=lambda item: (rank(item[0]), item[0]))


def _lineage_chain(evidence: Evidence) -> Chain:
    detail, evaluation = evidence.detail, evidence.evaluation
    unit = "documents" if evidence.is_language_model else "rows"
    data = [f"{role}: {d.rows} {unit} · {d.fingerprint[:12]}…" for role, d in _datasets(detail)]
    adapted = (["cache key " + evaluation.adapted_checkpoint_key[:12] + "…"]
               if evaluation and evaluation.adapted_checkpoint_key else ["none recorded"])
    parent = detail.version.parent_version
    version = [f"{evidence.name} v{evidence.number}", f"parent v{parent}" if parent else "no parent version"]
    if evidence.is_language_model:  # the version is the adapted checkpoint itself
        return Chain([("Datasets", data or ["none recorded"]), ("Base model", [detail.version.base_model]),
                      ("Adapted version", version)])
    return Chain([
        ("Datasets", data or ["none recorded"]),
        ("Base model", [detail.version.base_model]),
        ("Adapted checkpoint", adapted),
        ("Fine-tuned version", version),
    ])


def _runs_table(evidence: Evidence) -> Table:
    runs = [("training run of this version", evidence.detail.run)]
    if evidence.parent_run is not None:
        runs.append((f"training run of parent v{evidence.detail.version.parent_version}", evidence.parent_run))
    rows = [
        (role, run.id, run.kind, run.status, _when(run.started_at), _when(run.finished_at), run.author,
         _flow_run_cell(run, evidence.ui_url))
        for role, run in runs
    ]
    return Table(("role", "run", "kind", "status", "started", "finished", "author", "Prefect flow run"), rows, "Runs")


def _lineage(evidence: Evidence) -> Section:
    detail, evaluation = evidence.detail, evidence.evaluation
    adapted_path = evaluation.adapted_checkpoint_path if evaluation else None
    datasets = Table(("role", "source", "rows", "sha256 fingerprint"), [
        (role, d.source, str(d.rows), d.fingerprint) for role, d in _datasets(detail)
    ], "Datasets")
    weights: list[tuple[str, Cell]] = [("Adapted weights", detail.version.artifact_path)]  # a causal-lm version
    if not evidence.is_language_model:
        weights = [("Adapted checkpoint", adapted_path or "—"), ("Fine-tuned weights", detail.version.artifact_path)]
    facts = Facts([("Base model", detail.version.base_model), *weights])
    return Section("lineage", "Lineage", [_lineage_chain(evidence), facts, datasets, _runs_table(evidence)])


def _artifacts(evidence: Evidence) -> Section:
    files = evidence.detail.files
    total = sum(f.size_bytes or 0 for f in files)
    rows = [(f.relative_path, f.sha256, "—" if f.size_bytes is None else f"{f.size_bytes:,}") for f in files]
    return Section("artifacts", "Artifact files", [
        f"{len(files)} files, {total:,} bytes; loading checks every sha256 below first.",
        Table(("file", "sha256", "bytes"), rows),
    ])


def _environment(evidence: Evidence) -> Section:
    run = evidence.detail.run
    facts = Facts([
        ("Seed", str(run.seed)),
        ("Code version", run.code_version),
        ("Python", run.package_versions.get("python", "—")),
        ("Prefect flow run", _flow_run_cell(run, evidence.ui_url)),
    ])
    packages = Table(("package", "version"), sorted((k, v) for k, v in run.package_versions.items() if k != "python"))
    config = Preformatted(json.dumps(run.config, indent=2, sort_keys=True), "Run configuration (as stored)")
    return Section("environment", "Environment", [facts, packages, config])


def _audit_trail(evidence: Evidence) -> Section:
    chain = evidence.chain
    status = (Styled(f"Chain verified: all {chain.events_checked} events intact", "ok") if chain.ok
              else Styled(f"CHAIN BROKEN at event {chain.first_broken_seq}: {chain.reason}", "bad"))
    rows = [
        (str(e.seq), _when(e.created_at), e.actor, e.event_type, e.subject, _event_detail(e), e.hash[:16])
        for e in evidence.events
    ]
    return Section("audit-trail", "Audit trail", [
        Facts([("Hash chain", status), ("Events about this version", str(len(rows)))]),
        Table(("seq", "time", "actor", "event", "subject", "details", "hash"), rows),
    ])


def _event_detail(event: AuditEventRecord) -> str:
    """The payload in one short line (the run id is the same for every row, so it is left out)."""
    payload = event.payload if isinstance(event.payload, dict) else {"payload": event.payload}
    text = ", ".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)}"
        for key, value in sorted(payload.items()) if key != "run_id"
    )
    return _clip(text, EVENT_DETAIL_WIDTH)


# -- assembling and writing --------------------------------------------------------------------------


def document(evidence: Evidence) -> Document:
    detail = evidence.detail
    subtitle = (f"{detail.run.config.get('task', 'text-classification')} · base model {detail.version.base_model}"
                f" · registered {_when(detail.version.created_at)} · report generated {_when(datetime.now(UTC))}")
    if evidence.is_language_model:  # no classes, confidences or compressed forms: perplexity and answers instead
        quality = [language_model.perplexity_section(evidence), language_model.samples_section(evidence)]
    else:
        quality = [_metrics(evidence), _per_class(evidence), _calibration(evidence), risks.section(evidence),
                   _compression(evidence)]
    sections = [
        _summary(evidence), _model_card(evidence), *quality, _training(evidence), _validation(evidence),
        _data_risks(evidence), _drift(evidence), _lineage(evidence), _artifacts(evidence), _environment(evidence),
        _audit_trail(evidence),
    ]
    return Document(f"Audit report: {evidence.name} v{evidence.number}", subtitle, _badge(evidence), sections)


def build_report(registry: Registry, model_name: str, version: int, ui_url: str | None = None) -> Document:
    """The report of NAME:VERSION as a document, ready to render in either format (`ui_url`: the Prefect UI the
    run links point to)."""
    return document(gather(registry, model_name, version, ui_url))


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise BadInputError(f"report format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def save_report(doc: Document, out: Path, fmt: str = "html") -> Path:
    """Render `doc` to `out` (written whole, via a temporary file)."""
    _check_format(fmt)
    text = render_html(doc) if fmt == "html" else render_markdown(doc)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(out)
    return out.resolve()


def save_label_issues(issues: list[dict[str, Any]], out: Path) -> Path:
    """The label issues of a run as CSV beside its report (file, line, given, suggested, confidence; no texts),
    written whole, via a temporary file."""
    import csv

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "line", "given", "suggested", "confidence"])
        writer.writeheader()
        writer.writerows(issues)
    partial.replace(out)
    return out.resolve()


def write_report(registry: Registry, model_name: str, version: int, out: Path, fmt: str = "html",
                 ui_url: str | None = None) -> Path:
    """Render the audit report of NAME:VERSION to `out`."""
    _check_format(fmt)  # before the registry is read
    return save_report(build_report(registry, model_name, version, ui_url), out, fmt)
