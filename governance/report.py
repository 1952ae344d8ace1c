"""The audit report of one model version: what a reviewer reads before letting it serve.

Built from the registry alone (no training code), rendered as self-contained HTML or markdown.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from governance.records import ModelVersionDetail
from governance.registry import Registry
from steward.errors import BadInputError

FORMATS = ("html", "md")


@dataclass(frozen=True)
class Section:
    title: str
    lines: list[str] = field(default_factory=list)
    header: tuple[str, ...] = ()
    rows: list[tuple[str, ...]] = field(default_factory=list)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _summary(detail: ModelVersionDetail) -> Section:
    version, run, gate = detail.version, detail.run, detail.gate_decision
    lines = [
        f"Aliases: {', '.join(detail.aliases) or 'none'}; status: {version.status}",
        f"Registered {version.created_at:%Y-%m-%d %H:%M} UTC by {version.created_by}",
        f"Run {run.id} ({run.kind}) {run.status}, started {run.started_at:%Y-%m-%d %H:%M} UTC by {run.author}",
    ]
    if gate is not None:
        lines.append(
            f"Gate: {gate.outcome} — {gate.primary_metric} {_fmt(gate.candidate_score)} "
            f"vs champion {_fmt(gate.champion_score)} (floor {gate.min_score}, "
            f"required improvement {gate.min_improvement}). {gate.reasons}"
        )
    return Section("Summary", lines)


def _metrics(detail: ModelVersionDetail, champion: dict[str, float] | None) -> Section:
    rows = []
    for name, value in sorted(detail.metrics.items()):
        old = champion.get(name) if champion else None
        delta = "—" if old is None else f"{value - old:+.4f}"
        rows.append((name, _fmt(value), _fmt(old), delta))
    return Section("Test metrics against the champion", header=("metric", "this version", "champion", "delta"),
                   rows=rows)


def _lineage(detail: ModelVersionDetail) -> Section:
    rows = [(role, d.source, str(d.rows), d.fingerprint) for role, d in sorted(detail.datasets.items())]
    version = detail.version
    parent = f"v{version.parent_version}" if version.parent_version else "none"
    return Section(
        "Lineage",
        [f"Base model: {version.base_model}; parent version: {parent}; artifact: {version.artifact_path}"],
        ("dataset", "source", "rows", "sha256 fingerprint"), rows,
    )


def _artifacts(detail: ModelVersionDetail) -> Section:
    rows = [(f.relative_path, f.sha256, str(f.size_bytes or "")) for f in detail.files]
    return Section("Artifact files", header=("file", "sha256", "bytes"), rows=rows)


def _environment(detail: ModelVersionDetail) -> Section:
    run = detail.run
    rows = [(name, version) for name, version in sorted(run.package_versions.items())]
    lines = [f"Seed {run.seed}; code version {run.code_version}; Prefect flow run {run.flow_run_id or 'none'}"]
    return Section("Environment", lines, ("package", "version"), rows)


def _audit_trail(registry: Registry, detail: ModelVersionDetail) -> Section:
    chain = registry.audit.verify()
    status = (f"Chain verified: {chain.events_checked} events intact" if chain.ok
              else f"CHAIN BROKEN at event {chain.first_broken_seq}: {chain.reason}")
    run_id = detail.run.id
    events = [
        event for event in registry.audit.events(detail.version.model_name)
        if event.payload.get("run_id") == run_id
        or event.subject == f"{detail.version.model_name}:{detail.version.version}"
    ]
    rows = [(str(e.seq), e.created_at[:19], e.actor, e.event_type, e.hash[:16]) for e in events]
    return Section("Audit trail", [status], ("seq", "time (UTC)", "actor", "event", "hash"), rows)


def build_sections(registry: Registry, model_name: str, version: int) -> list[Section]:
    detail = registry.get_version(model_name, version)
    gate = detail.gate_decision
    champion_metrics = None
    if gate is not None and gate.champion_version_id is not None:
        champion_metrics = registry.metrics_for_version(gate.champion_version_id)
    return [
        _summary(detail),
        _metrics(detail, champion_metrics),
        _lineage(detail),
        _artifacts(detail),
        _environment(detail),
        _audit_trail(registry, detail),
    ]


def render_markdown(title: str, sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for section in sections:
        out += [f"## {section.title}", "", *[f"{line}  " for line in section.lines], ""]
        if section.header:
            out.append("| " + " | ".join(section.header) + " |")
            out.append("|" + "---|" * len(section.header))
            out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in section.rows]
            out.append("")
    return "\n".join(out)


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2rem auto;color:#1f2933}
h1{border-bottom:2px solid #3e4c59;padding-bottom:.3rem}h2{margin-top:2rem;color:#323f4b}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{border:1px solid #cbd2d9;padding:.3rem .5rem;
text-align:left;word-break:break-all}th{background:#f0f4f8}p{margin:.3rem 0}
"""


def render_html(title: str, sections: list[Section]) -> str:
    esc = html.escape
    body = [f"<h1>{esc(title)}</h1>"]
    for section in sections:
        body.append(f"<h2>{esc(section.title)}</h2>")
        body += [f"<p>{esc(line)}</p>" for line in section.lines]
        if section.header:
            head = "".join(f"<th>{esc(cell)}</th>" for cell in section.header)
            rows = "".join(
                "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in section.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(registry: Registry, model_name: str, version: int, out: Path, fmt: str = "html") -> Path:
    """Render the audit report of NAME:VERSION to `out` (written whole, via a temporary file)."""
    if fmt not in FORMATS:
        raise BadInputError(f"report format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    sections = build_sections(registry, model_name, version)
    title = f"Audit report: {model_name} v{version}"
    text = render_html(title, sections) if fmt == "html" else render_markdown(title, sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(out)
    return out.resolve()
