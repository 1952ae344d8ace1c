"""Audit reports of real flow runs on the tiny model: promoted, rejected and awaiting approval.

The HTML is rendered in headless Chromium (Debian's `chromium`; these tests need it) and the
screenshots land in `test-output/` for a person to look at.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reports.audit import write_report
from steward.cli import main
from tests.conftest import require
from tests.test_flow_retrain import registry_for, write_project

SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output"
SECTIONS = (
    "Summary", "Model card", "Metrics against the champion", "Per-class results", "Calibration", "Defects and risks",
    "Compression",
    "Pretraining and fine-tuning", "Validation results", "Drift history", "Lineage", "Artifact files",
    "Environment", "Audit trail",
)
CARD = {
    "intended_use": "Routing customer messages to the praise, complaint or billing queue.",
    "limitations": ["Trained on synthetic English sentences only."],
    "out_of_scope": ["Legal or medical advice."],
    "contact": "ml-team@example.org",
}
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


def _run(config: Path) -> int:
    return main(["run", "--config", str(config), "--json"])


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, prefect_harness: None) -> Path:
    """One registry, three runs as 'alice': v1 promoted, v2 rejected (no improvement), v3 a challenger.
    The last two train one epoch only: the gate settings alone decide them."""
    root = tmp_path_factory.mktemp("report-project")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("STEWARD_ACTOR", "alice")
    short = {"epochs": 1}
    try:
        assert _run(write_project(root, tiny_model_dir, card=CARD)) == 0
        rejected = {"min_improvement": 0.5}
        assert _run(write_project(root, tiny_model_dir, card=CARD, finetuning=short, evaluation=rejected)) == 1
        approval = {"require_approval": True, "min_improvement": -1.0}
        assert _run(write_project(root, tiny_model_dir, card=CARD, finetuning=short, evaluation=approval)) == 0
    finally:
        monkeypatch.undo()
    return root / "steward.yaml"


def _report(project: Path, version: int) -> Path:
    return project.parent / ".steward" / "reports" / "tickets" / f"v{version}.html"


def _markdown(project: Path, version: int, tmp_path: Path) -> str:
    with registry_for(project) as registry:
        path = write_report(registry, "tickets", version, tmp_path / f"v{version}.md", fmt="md")
    return path.read_text(encoding="utf-8")


@pytest.fixture
def chromium(tmp_path: Path) -> list[str]:
    """The headless Chromium command line, with a throwaway profile."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        require(False, "headless Chromium (Debian's chromium package)")
    return [binary, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]


def _chromium(command: list[str], *args: str) -> str:
    result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, check=True)
    return result.stdout


def _visible_text(dom: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


@pytest.mark.parametrize(
    ("version", "badge"), [(1, "PROMOTED"), (2, "REJECTED"), (3, "CHALLENGER · AWAITING APPROVAL")],
)
def test_html_report_renders_every_section_in_chromium(
    project: Path, chromium: list[str], version: int, badge: str,
) -> None:
    html_file = _report(project, version)
    dom = _chromium(chromium, "--dump-dom", html_file.as_uri())
    text = _visible_text(dom)
    for title in SECTIONS:
        assert f'<h2>{title}</h2>' in dom, title
    assert f'<div class="badge {"ok" if version == 1 else "bad" if version == 2 else "wait"}">{badge}<small>' in dom
    assert CARD["intended_use"] in text and CARD["limitations"][0] in text and CARD["contact"] in text
    # confusion matrix, reliability diagram, slices, flip rates, compression, training curves
    assert dom.count("<svg") == 6
    assert "The gate's reasons" in text and "int8: " in text and "agreement with fp32" in text
    assert "Chain verified" in text

    SCREENSHOTS.mkdir(exist_ok=True)
    screenshot, pdf = SCREENSHOTS / f"audit-report-v{version}.png", SCREENSHOTS / f"audit-report-v{version}.pdf"
    _chromium(chromium, f"--screenshot={screenshot}", "--window-size=1280,9600", html_file.as_uri())
    _chromium(chromium, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", html_file.as_uri())
    assert screenshot.stat().st_size > 200_000 and pdf.read_bytes().startswith(b"%PDF")
    print(f"\naudit report screenshot: {screenshot}\nprinted: {pdf}")


def test_reports_load_nothing_from_outside(project: Path, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    for version in (1, 2, 3):
        page = _report(project, version).read_text(encoding="utf-8")
        assert not re.search(r"<script|<link|<iframe|<img|<object|<embed|@import|srcset", page, re.IGNORECASE)
        assert not re.search(r"url\((?!#)", page), "only same-document url(#id) references"
        assert not re.search(r"\s(src|href|xlink:href)=\"(?!#|data:|https?://)", page)
        for url in re.findall(r"https?://[^\s\"'<>)]+", page):
            assert ui and re.fullmatch(re.escape(ui.rstrip("/")) + r"/runs/flow-run/[0-9a-f-]{36}", url), url
        assert "<svg" not in _markdown(project, version, tmp_path)
    assert "/runs/flow-run/" in _report(project, 1).read_text(encoding="utf-8")


def test_rejected_version_reads_as_rejected(project: Path, tmp_path: Path) -> None:
    page = _visible_text(_report(project, 2).read_text(encoding="utf-8"))
    assert "REJECTED" in page and "failed the promotion gate" in page
    assert "rejected (failed)" in page
    assert re.search(r"macro_f1 [\d.]+ vs champion v1 [\d.]+ \(Δ [+-][\d.]+\); floor 0\.0, required improvement 0\.5",
                     page)
    assert "improvement" in page and "Aliases none" in page
    markdown = _markdown(project, 2, tmp_path)
    assert "**REJECTED** — failed the promotion gate" in markdown
    assert "- **Approver:** none: the gate rejected it" in markdown


def test_challenger_awaits_approval_then_names_its_approver(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = _visible_text(_report(project, 3).read_text(encoding="utf-8"))
    assert "CHALLENGER · AWAITING APPROVAL" in page
    assert "awaiting approval by someone other than alice" in page
    assert "approval required: registered as challenger" in page

    registry_url = f"sqlite:///{project.parent / '.steward' / 'registry.db'}"
    monkeypatch.setenv("STEWARD_ACTOR", "bob")
    assert main(["registry", "promote", "tickets:3", "--approver", "bob", "--reason", "looks fine",
                 "--registry", registry_url]) == 0
    markdown = _markdown(project, 3, tmp_path)
    assert "**PROMOTED** — serving as champion; approved by bob" in markdown
    assert re.search(r"- \*\*Approver:\*\* bob \(made it champion on [\d-]+ [\d:]+ UTC\) — “looks fine”", markdown)
    assert "| champion | promote | v1 → v3 | bob | looks fine |" in markdown
    assert "**FORMER CHAMPION**" in _markdown(project, 1, tmp_path)


def test_reports_show_the_classical_baseline_of_their_run(project: Path, tmp_path: Path) -> None:
    markdown = _markdown(project, 1, tmp_path)
    assert re.search(r"- \*\*Classical baseline:\*\* TF-IDF \+ LR on the same split: macro_f1 [\d.]+, "
                     r"accuracy [\d.]+ \(C=[\d.]+, fitted in [\d.]+s\)", markdown)
    assert "| classical baseline (TF-IDF + LR) | vs baseline |" in markdown
    assert re.search(r"\| macro_f1 \| [\d.]+ \| — \| — \| [\d.]+ \| [+-][\d.]+ \|", markdown)
    assert "The gate's floor was the configured number, not the baseline." in markdown  # write_project: 0.0


def test_markdown_report_is_a_prefect_artifact(project: Path) -> None:
    from prefect.artifacts import Artifact

    artifact = Artifact.get("tickets-audit-report")
    assert artifact is not None
    assert artifact.data.startswith("# Audit report: tickets v3")
    for title in SECTIONS:
        assert f"\n## {title}\n" in artifact.data
    assert "| true \\ predicted | billing | complaint | praise |" in artifact.data
