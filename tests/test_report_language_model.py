"""The audit report of a causal-lm version, from two real runs on the tiny Llama decoder (v1 promoted against its
base, v2 the same adapter again, rejected against v1): the perplexity table equal to the registry's metrics, the
histogram and loss curve, the fixed prompts answered side by side and HTML-escaped, the card's corpus and what was
not evaluated; the registry row that holds it, and its migration."""

from __future__ import annotations

import html
import math
import re
import shutil
from dataclasses import fields, replace
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect

from core.errors import BadInputError
from governance.db import MIGRATIONS_DIR, create_registry_engine, lock_for_write, migrate
from governance.registry import DocumentScores, LanguageModelEvaluationIn, PromptAnswer, Registry
from reports.audit import write_report
from steward.cli import main
from tasks.causal_lm import PROMPTS
from tests.test_flow_language_model import registry_for, write_lm_project
from tests.test_registry import MODEL, register

CARD = {"intended_use": "Drafting support-desk notes.", "contact": "ml-team@example.org"}
SECTIONS = (
    "Summary", "Model card", "Perplexity against the base and the champion",
    "Fixed prompts, answered by the base and this version", "Continued pretraining", "Validation results",
    "Drift history", "Lineage", "Artifact files", "Environment", "Audit trail",
)
CLASSIFIER_SECTIONS = ("Metrics against the champion", "Per-class results", "Calibration", "Compression")
SCRIPT = "<script>alert('owned')</script> & more"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, prefect_harness: None) -> Path:
    """v1 promoted against the base; v2, the same adapter from the pretraining cache, rejected against v1."""
    config = write_lm_project(tmp_path_factory.mktemp("lm-report"), tiny_llama_dir, card=CARD)
    assert main(["run", "--config", str(config), "--json"]) == 0
    assert main(["run", "--config", str(config), "--json"]) == 1
    return config


def _report(project: Path, version: int, fmt: str = "html") -> str:
    """The report as `steward audit report` writes it."""
    out = project.parent / f"notes-v{version}.{fmt}"
    assert main(["audit", "report", f"notes:{version}", "--format", fmt, "--out", str(out),
                 "--config", str(project)]) == 0
    return out.read_text(encoding="utf-8")


def _row(markdown: str, model: str) -> list[str]:
    """The cells of the perplexity table's row for `model`."""
    (line,) = [line for line in markdown.splitlines() if line.startswith(f"| {model} |")]
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def _cells(perplexity: float, low: float, high: float, cross_entropy: float) -> list[str]:
    return [f"{perplexity:.3f}", f"{low:.3f} to {high:.3f}", f"{cross_entropy:.4f}"]


def test_perplexity_table_shows_the_registrys_numbers(project: Path) -> None:
    with registry_for(project) as registry:
        detail = registry.get_version("notes", 1)
        metrics, run = detail.metrics, registry.run_metrics(detail.run.id)
        evaluation = registry.language_model_evaluation(detail.version.id)
    gate = detail.gate_decision
    assert evaluation is not None and gate is not None and gate.floor_source == "base model"
    markdown = _report(project, 1, "md")

    base, candidate = _row(markdown, "base model"), _row(markdown, "this version (v1)")
    assert base[:3] == _cells(run["base_perplexity"], run["base_perplexity_ci_low"], run["base_perplexity_ci_high"],
                              run["base_cross_entropy"])
    assert candidate[:3] == _cells(metrics["perplexity"], metrics["perplexity_ci_low"], metrics["perplexity_ci_high"],
                                   metrics["cross_entropy"])
    for cells, reference, cross_entropy in ((base, evaluation.base_reference, run["base_reference_cross_entropy"]),
                                            (candidate, evaluation.candidate_reference,
                                             metrics["reference_cross_entropy"])):
        assert cells[3:] == _cells(reference.perplexity, reference.ci_low, reference.ci_high, cross_entropy)
    gain = (f"{metrics['perplexity_gain']:.2%} lower perplexity than the base (95% interval "
            f"{metrics['perplexity_gain_ci_low']:.2%} to {metrics['perplexity_gain_ci_high']:.2%})")
    assert f"- **Gain over the base:** {gain}" in markdown
    assert f"- **Forgetting:** {metrics['forgetting']:+.2%} cross-entropy on the reference texts" in markdown
    assert "- **Against the champion:** no champion when this version was gated" in markdown

    # The gate's base-model bar reads as the ceiling it is.
    (numbers,) = [line for line in markdown.splitlines() if line.startswith("- **Gate numbers:**")]
    assert "(lower is better)" in numbers and "floor" not in numbers
    assert f"ceiling {gate.min_score:.3f} = the base's {run['base_perplexity']:.3f} less min_perplexity_gain 5.0%" \
        in numbers
    assert "forgetting at most 1000.0%" in numbers
    assert "the base model sets a ceiling, not a floor" in markdown


def test_rejected_version_shows_the_champion_on_the_same_documents(project: Path) -> None:
    with registry_for(project) as registry:
        champion = registry.get_version("notes", 1).metrics["perplexity"]
        gate = registry.get_version("notes", 2).gate_decision
    markdown = _report(project, 2, "md")
    assert "**REJECTED** — failed the promotion gate" in markdown
    assert _row(markdown, "champion v1")[0] == f"{champion:.3f}"
    assert _row(markdown, "champion v1")[3:] == ["—", "—", "—"]  # the champion is not scored on the reference
    assert gate is not None and gate.champion_score == pytest.approx(champion)
    assert re.search(r"- \*\*Against the champion:\*\* perplexity [\d.]+ vs champion v1 [\d.]+ \(Δ [+-][\d.]+\): "
                     r"not lower", markdown)


def test_html_report_has_its_sections_plots_and_no_classifier_sections(project: Path) -> None:
    page = _report(project, 1)
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page, title
    for title in CLASSIFIER_SECTIONS:
        assert f"<h2>{title}</h2>" not in page, title
    assert page.count("<svg") == 2  # the pretraining loss curve and the per-document loss histograms
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert captions[0].startswith("Loss per document (nats per token) before adaptation (the base) and after")
    assert captions[1] == "Loss and validation curves of the training run"
    assert not re.search(r"<script|<img|<link|<iframe", page, re.IGNORECASE)


def test_fixed_prompts_are_answered_side_by_side_and_escaped(project: Path) -> None:
    with registry_for(project) as registry:
        evaluation = registry.language_model_evaluation(registry.get_version("notes", 1).version.id)
    assert evaluation is not None
    assert [sample.prompt for sample in evaluation.samples] == list(PROMPTS) and len(PROMPTS) == 5
    assert any(sample.base != sample.candidate for sample in evaluation.samples)
    page, markdown = _report(project, 1), _report(project, 1, "md")
    for sample in evaluation.samples:
        prompt = html.escape(sample.prompt)
        cells = "".join(f'<td class="completion"><strong>{prompt}</strong>{html.escape(answer)}</td>'
                        for answer in (sample.base, sample.candidate))
        assert f"<tr>{cells}</tr>" in page, sample
        assert f"| {prompt} |" in markdown


def test_model_card_names_the_corpus_and_what_was_not_evaluated(project: Path) -> None:
    with registry_for(project) as registry:
        detail = registry.get_version("notes", 1)
        corpus = detail.datasets["corpus"]
        (tokens,) = [r.observed for r in registry.validation_results(detail.run.id) if r.column == "tokens"]
    markdown = _report(project, 1, "md")
    assert (f"- **Corpus:** {corpus.source} — 120 documents, {int(tokens):,} tokens under the base's tokenizer "
            f"(sha256 {corpus.fingerprint[:12]}…)") in markdown
    assert "LoRA continued pretraining (rank 8, alpha 16; the version stores the adapter alone)" in markdown
    assert "- reference texts: 6 texts sampled from the base itself (seed 3, at most 32 tokens each)" in markdown
    assert CARD["intended_use"] in markdown
    not_evaluated = markdown.split("**Not evaluated**", 1)[1].split("## ", 1)[0]
    for words in ("No task benchmark", "No safety evaluation", "No instruction following",
                  "estimates how far the model drifted from its base"):
        assert words in not_evaluated, words


def _scores(*losses: tuple[float, int], perplexity: float = 3.0) -> DocumentScores:
    return DocumentScores(tuple(losses), perplexity, perplexity - 0.5, perplexity + 0.5, 1.0986)


def test_the_row_converts_to_and_from_its_record(registry: Registry) -> None:
    """On SQLite and PostgreSQL: every loss (to the last digit), the champion's, and every answer come back."""
    version = register(registry)
    assert registry.language_model_evaluation(version.id) is None
    evaluation = LanguageModelEvaluationIn(
        run_id=version.run_id, version_id=version.id, dataset_id=None,
        base_test=_scores((1 / 3, 7), (12.5, 4), perplexity=4.0), champion_test=_scores((0.25, 7), (9.0, 4)),
        candidate_test=_scores((0.2, 7), (8.125, 4), perplexity=2.5), base_reference=_scores((2.0, 3)),
        candidate_reference=_scores((2.1, 3)), reference_source="/data/wiki.txt", corpus_tokens=123_456,
        samples=(PromptAnswer("Raises", "ValueError — «é»\nwhen", SCRIPT), PromptAnswer("Example:", "", " x")),
    )
    stored = registry.record_language_model_evaluation(evaluation)
    assert registry.language_model_evaluation(version.id) == stored
    assert {f.name: getattr(stored, f.name) for f in fields(LanguageModelEvaluationIn)} == {
        f.name: getattr(evaluation, f.name) for f in fields(LanguageModelEvaluationIn)}
    assert stored.base_test.losses[0] == (1 / 3, 7) and stored.candidate_test.tokens == 11
    assert stored.id > 0 and stored.created_at is not None and stored.created_at.tzinfo is not None
    (event,) = [e for e in registry.audit.events(f"{MODEL}:1") if e.event_type == "language_model_evaluation_recorded"]
    assert (event.payload["test_documents"], event.payload["reference_texts"], event.payload["prompts"]) == (2, 1, 2)
    assert event.payload["champion_scored"] is True and registry.audit.verify().ok

    for broken, message in (
        (replace(evaluation, candidate_test=_scores((0.2, 7))), "same non-empty test documents"),
        (replace(evaluation, base_reference=_scores((math.nan, 3))), "must be finite"),
        (replace(evaluation, champion_test=_scores((0.2, -1), (1.0, 2))), "must not be negative"),
        (replace(evaluation, samples=(PromptAnswer("", "a", "b"),)), "non-empty text"),
    ):
        with pytest.raises(BadInputError, match=message):
            registry.record_language_model_evaluation(broken)


def test_answers_are_html_escaped_in_the_report(project: Path, tmp_path: Path) -> None:
    """On a copy of the registry: a second row for v1, with a script for an answer, becomes the report's."""
    copy = tmp_path / "registry.db"
    shutil.copy(project.parent / ".steward" / "registry.db", copy)
    with Registry.open(f"sqlite:///{copy}") as registry:
        version_id = registry.get_version("notes", 1).version.id
        first = registry.language_model_evaluation(version_id)
        assert first is not None and first.champion_test is None and first.corpus_tokens is not None
        registry.record_language_model_evaluation(replace(first, samples=(PromptAnswer("Raises", "fine", SCRIPT),)))
        page = write_report(registry, "notes", 1, tmp_path / "v1.html").read_text(encoding="utf-8")
        markdown = write_report(registry, "notes", 1, tmp_path / "v1.md", fmt="md").read_text(encoding="utf-8")
    assert html.escape(SCRIPT) in page and "<script" not in page
    assert f"| Raises | fine | {html.escape(SCRIPT)} |" in markdown


def test_migration_0010_upgrades_and_downgrades(registry_url: str) -> None:
    engine = create_registry_engine(registry_url)
    try:
        migrate(engine)
        assert "language_model_evaluations" in inspect(engine).get_table_names()
        with engine.begin() as conn:
            lock_for_write(conn)
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.attributes["connection"] = conn
            command.downgrade(config, "0009")
        assert "language_model_evaluations" not in inspect(engine).get_table_names()
        migrate(engine)
        assert "language_model_evaluations" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
