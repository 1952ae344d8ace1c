"""The audit report as a small document (sections of facts, tables, figures) and its two renderings:
self-contained HTML (inline CSS and SVG, nothing fetched) and markdown (figures become tables)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Link:
    text: str
    href: str


@dataclass(frozen=True)
class Styled:
    """Text shown in a tone: ok (green), wait (amber), bad (red), muted (grey)."""

    text: str
    tone: str


Cell = str | Link | Styled


@dataclass(frozen=True)
class Facts:
    """Label → value pairs (a definition list)."""

    items: list[tuple[str, Cell]]


@dataclass(frozen=True)
class Bullets:
    items: list[Cell]
    title: str = ""


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: list[tuple[Cell, ...]]
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    """A plot drawn only for HTML (`render` returns inline SVG); markdown shows `fallback` instead."""

    caption: str
    render: Callable[[], str]
    fallback: Table | None = None


@dataclass(frozen=True)
class Chain:
    """Steps joined by arrows (lineage): each step is a title and a few lines."""

    steps: list[tuple[str, list[str]]]


@dataclass(frozen=True)
class Preformatted:
    text: str
    caption: str = ""


@dataclass(frozen=True)
class Completions:
    """Prompts continued by several models, side by side: in HTML each continuation follows its prompt (in bold),
    line breaks kept, so where the prompt ends and the model's own text begins stays visible."""

    models: tuple[str, ...]
    rows: list[tuple[str, tuple[str, ...]]]  # a prompt, and one continuation per model
    caption: str = ""


@dataclass(frozen=True)
class Highlighted:
    """Texts with a weight on character spans of each (token attributions). In HTML a span's background is green
    for a positive weight and red for a negative one, deeper the larger it is against the text's largest; markdown
    lists each text's heaviest spans instead."""

    rows: list[tuple[str, str, list[tuple[int, int, float]]]]  # a title line, the text, (start, end, weight)
    caption: str = ""

    def heaviest(self, text: str, spans: list[tuple[int, int, float]], count: int = 5) -> list[str]:
        ordered = sorted(spans, key=lambda span: -abs(span[2]))[:count]
        return [f"{text[start:end]} ({weight:+.2f})" for start, end, weight in ordered]


Block = str | Facts | Bullets | Table | Figure | Chain | Preformatted | Completions | Highlighted


@dataclass(frozen=True)
class Section:
    anchor: str
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass(frozen=True)
class Badge:
    label: str
    tone: str
    note: str = ""


@dataclass(frozen=True)
class Document:
    title: str
    subtitle: str
    badge: Badge
    sections: list[Section]


# -- markdown ----------------------------------------------------------------------------------------


def _md_cell(cell: Cell) -> str:
    if isinstance(cell, Link):
        return f"[{cell.text}]({cell.href})"
    text = cell.text if isinstance(cell, Styled) else cell
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    out = [f"*{table.caption}*", ""] if table.caption else []
    out.append("| " + " | ".join(table.header) + " |")
    out.append("|" + "---|" * len(table.header))
    out += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in table.rows]
    return [*out, ""]


def _md_block(block: Block) -> list[str]:
    if isinstance(block, str):
        return [block, ""]
    if isinstance(block, Facts):
        return [*(f"- **{label}:** {_md_cell(value)}" for label, value in block.items), ""]
    if isinstance(block, Bullets):
        head = [f"**{block.title}**", ""] if block.title else []
        return [*head, *(f"- {_md_cell(item)}" for item in block.items), ""]
    if isinstance(block, Table):
        return _md_table(block)
    if isinstance(block, Figure):
        return _md_table(block.fallback) if block.fallback else []
    if isinstance(block, Chain):
        return [" → ".join(f"**{title}** ({'; '.join(lines)})" for title, lines in block.steps), ""]
    if isinstance(block, Completions):
        return _md_completions(block)
    if isinstance(block, Highlighted):
        return [f"- {title}: {text} — heaviest: {', '.join(block.heaviest(text, spans))}"
                for title, text, spans in block.rows] + [""]
    caption = [f"*{block.caption}*", ""] if block.caption else []
    return [*caption, "```", block.text, "```", ""]


def _md_completions(block: Completions) -> list[str]:
    """A table whose model-written cells are HTML-escaped too: a markdown viewer would render raw tags in them."""
    rows: list[tuple[Cell, ...]] = [
        (_esc(prompt), *(_esc(answer) for answer in answers)) for prompt, answers in block.rows
    ]
    return _md_table(Table(("prompt", *block.models), rows, block.caption))


def render_markdown(doc: Document) -> str:
    badge = f"**{doc.badge.label}**" + (f" — {doc.badge.note}" if doc.badge.note else "")
    out = [f"# {doc.title}", "", doc.subtitle, "", badge, ""]
    for section in doc.sections:
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            out += _md_block(block)
    return "\n".join(out).rstrip() + "\n"


# -- HTML --------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"[+−-]?\d[\d,]*(\.\d+)?%?")
_HASH = re.compile(r"[0-9a-f]{12,}")
_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
LONG_CELL = 40  # longer text may break anywhere, so one cell cannot push the table off the page


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _html_cell(cell: Cell) -> str:
    if isinstance(cell, Link):
        return f'<a href="{_esc(cell.href)}">{_esc(cell.text)}</a>'
    if isinstance(cell, Styled):
        return f'<span class="tone {cell.tone}">{_esc(cell.text)}</span>'
    return _esc(cell)


def _text(cell: Cell) -> str:
    return cell if isinstance(cell, str) else cell.text


def _numeric_columns(table: Table) -> set[int]:
    """Columns whose every value is a number (or a dash): right-aligned, header included."""
    columns = range(len(table.header))
    return {
        index for index in columns
        if table.rows and all(_NUMBER.fullmatch(_text(row[index])) or _text(row[index]) == "—" for row in table.rows)
    }


def _cell_class(text: str, numeric: bool) -> str:
    if numeric:
        return "num"
    if _HASH.fullmatch(text):
        return "mono long" if len(text) > LONG_CELL else "mono"
    if _TIME.fullmatch(text):
        return "time"
    return "long" if len(text) > LONG_CELL else ""


def _td(cell: Cell, numeric: bool) -> str:
    kind = _cell_class(_text(cell), numeric)
    return (f'<td class="{kind}">' if kind else "<td>") + f"{_html_cell(cell)}</td>"


def _html_table(table: Table) -> str:
    caption = f"<caption>{_esc(table.caption)}</caption>" if table.caption else ""
    numeric = _numeric_columns(table)
    head = "".join(
        ('<th class="num">' if i in numeric else "<th>") + f"{_esc(cell)}</th>" for i, cell in enumerate(table.header)
    )
    rows = "".join(
        "<tr>" + "".join(_td(cell, i in numeric) for i, cell in enumerate(row)) + "</tr>" for row in table.rows
    )
    return f'<div class="scroll"><table>{caption}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def _html_facts(facts: Facts) -> str:
    items = "".join(f"<dt>{_esc(label)}</dt><dd>{_html_cell(value)}</dd>" for label, value in facts.items)
    return f'<dl class="facts">{items}</dl>'


def _html_bullets(bullets: Bullets) -> str:
    title = f"<h3>{_esc(bullets.title)}</h3>" if bullets.title else ""
    return title + "<ul>" + "".join(f"<li>{_html_cell(item)}</li>" for item in bullets.items) + "</ul>"


def _html_chain(chain: Chain) -> str:
    steps = [
        f'<div class="step"><strong>{_esc(title)}</strong>'
        + "".join(f"<span>{_esc(line)}</span>" for line in lines) + "</div>"
        for title, lines in chain.steps
    ]
    return '<div class="chain">' + '<div class="arrow">→</div>'.join(steps) + "</div>"


def _html_completions(block: Completions) -> str:
    caption = f"<caption>{_esc(block.caption)}</caption>" if block.caption else ""
    head = "".join(f"<th>{_esc(model)}</th>" for model in block.models)
    rows = "".join(
        "<tr>" + "".join(f'<td class="completion"><strong>{_esc(prompt)}</strong>{_esc(answer)}</td>'
                         for answer in answers) + "</tr>"
        for prompt, answers in block.rows
    )
    return (f'<div class="scroll"><table class="completions">{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table></div>")


def _html_highlighted(block: Highlighted) -> str:
    caption = f"<h3>{_esc(block.caption)}</h3>" if block.caption else ""
    rows = [f'<div class="attr"><div class="why">{_esc(title)}</div><p>{_marked(text, spans)}</p></div>'
            for title, text, spans in block.rows]
    return caption + "".join(rows)


def _marked(text: str, spans: list[tuple[int, int, float]]) -> str:
    """The text with each span in a <mark> whose colour says the sign and the strength of its weight."""
    peak = max((abs(weight) for _, _, weight in spans), default=0.0) or 1.0
    pieces, at = [], 0
    for start, end, weight in sorted(spans):
        if start < at or end <= start:
            continue
        colour = "30,123,69" if weight > 0 else "180,35,24"
        pieces += [_esc(text[at:start]), f'<mark style="background:rgba({colour},{abs(weight) / peak * 0.6:.2f})" '
                                         f'title="{weight:+.3f}">{_esc(text[start:end])}</mark>']
        at = end
    return "".join([*pieces, _esc(text[at:])])


def _html_block(block: Block) -> str:
    if isinstance(block, str):
        return f"<p>{_esc(block)}</p>"
    if isinstance(block, Figure):
        return f"<figure>{block.render()}<figcaption>{_esc(block.caption)}</figcaption></figure>"
    if isinstance(block, Preformatted):
        caption = f"<h3>{_esc(block.caption)}</h3>" if block.caption else ""
        return f"{caption}<pre>{_esc(block.text)}</pre>"
    renderers: dict[type, Callable] = {
        Facts: _html_facts, Bullets: _html_bullets, Table: _html_table, Chain: _html_chain,
        Completions: _html_completions, Highlighted: _html_highlighted,
    }
    return renderers[type(block)](block)


STYLE = """
:root{--ink:#1f2933;--soft:#52606d;--line:#d9e2ec;--head:#f0f4f8;--accent:#2f5d8a;
--ok:#1e7b45;--ok-bg:#e3f6ea;--wait:#8a5a00;--wait-bg:#fff4d6;--bad:#b42318;--bad-bg:#fde8e6;
--muted:#52606d;--muted-bg:#eef1f4}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--ink);
margin:0;background:#f7f9fb}
main{max-width:1120px;margin:0 auto;padding:1.5rem 2rem 4rem}
header.top{background:#fff;border:1px solid var(--line);border-radius:10px;padding:1.2rem 1.5rem;margin-bottom:1rem;
display:flex;flex-wrap:wrap;align-items:center;gap:1rem;justify-content:space-between}
header.top>div:first-child{flex:1 1 560px}header.top h1{margin:0;font-size:1.6rem}
header.top .sub{color:var(--soft);margin:.2rem 0 0}
.badge{display:inline-block;padding:.45rem .9rem;border-radius:999px;font-weight:700;letter-spacing:.04em;
font-size:.95rem;border:2px solid currentColor}
.badge small{display:block;font-weight:500;letter-spacing:0;font-size:.8rem}
.ok{color:var(--ok);background:var(--ok-bg)}.wait{color:var(--wait);background:var(--wait-bg)}
.bad{color:var(--bad);background:var(--bad-bg)}.muted{color:var(--muted);background:var(--muted-bg)}
.tone{padding:0 .35rem;border-radius:4px;font-weight:600}
nav.toc{background:#fff;border:1px solid var(--line);border-radius:10px;padding:.8rem 1.5rem;margin-bottom:1rem}
nav.toc ol{columns:3;margin:.3rem 0;padding-left:1.2rem}nav.toc a{color:var(--accent);text-decoration:none}
nav.toc h2{font-size:1rem;margin:0;color:var(--soft);border:0;padding:0}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:.6rem 1.5rem 1.2rem;margin-bottom:1rem}
h2{font-size:1.25rem;color:var(--accent);border-bottom:1px solid var(--line);padding-bottom:.3rem}
h3{font-size:1rem;margin:1rem 0 .3rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1.2rem;margin:.5rem 0}
dl.facts dt{font-weight:600;color:var(--soft)}dl.facts dd{margin:0;overflow-wrap:anywhere}
.scroll{overflow-x:auto}a{color:var(--accent)}
table{border-collapse:collapse;width:100%;font-size:.88rem;margin:.5rem 0}
caption{text-align:left;font-weight:600;padding:.3rem 0;color:var(--soft)}
th,td{border-bottom:1px solid var(--line);padding:.35rem .6rem;text-align:left;vertical-align:top}
th{background:var(--head);font-weight:600}tbody tr:nth-child(even){background:#fafbfc}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.mono,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.8rem}
td.time,td.mono{white-space:nowrap}td.long{overflow-wrap:anywhere;white-space:normal}
table.completions{table-layout:fixed}
td.completion{white-space:pre-wrap;overflow-wrap:anywhere;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,
monospace;font-size:.8rem}
pre{background:var(--head);padding:.8rem;border-radius:6px;white-space:pre-wrap;overflow-wrap:anywhere;max-height:28rem;
overflow:auto}
figure{margin:.8rem 0;text-align:center}figure svg{max-width:100%;height:auto}
figcaption{color:var(--soft);font-size:.85rem}
.chain{display:flex;flex-wrap:wrap;align-items:stretch;gap:.4rem;margin:.6rem 0}
.step{border:1px solid var(--line);border-left:4px solid var(--accent);border-radius:6px;padding:.4rem .7rem;
background:var(--head);max-width:260px;font-size:.85rem;display:flex;flex-direction:column;overflow-wrap:anywhere}
.arrow{align-self:center;font-size:1.4rem;color:var(--soft)}
.attr{border-left:3px solid var(--line);padding:.1rem .8rem;margin:.5rem 0}.attr p{margin:.2rem 0}
.attr .why{color:var(--soft);font-size:.82rem}mark{color:inherit;border-radius:3px;padding:0}
footer{color:var(--soft);font-size:.8rem;text-align:center}
@media print{
body{background:#fff;font-size:11pt}main{max-width:none;padding:0}
header.top,section,nav.toc{border:0;border-radius:0;padding:0;margin:0 0 1rem}
nav.toc ol{columns:2}
.badge,.tone,th,.step{-webkit-print-color-adjust:exact;print-color-adjust:exact}
h2{break-after:avoid}figure,tr,.step,dl.facts{break-inside:avoid}
.scroll,pre{overflow:visible;max-height:none}a{color:inherit;text-decoration:none}
}
"""


def render_html(doc: Document) -> str:
    badge = doc.badge
    note = f"<small>{_esc(badge.note)}</small>" if badge.note else ""
    toc = "".join(f'<li><a href="#{s.anchor}">{_esc(s.title)}</a></li>' for s in doc.sections)
    sections = "".join(
        f'<section id="{s.anchor}"><h2>{_esc(s.title)}</h2>' + "".join(_html_block(b) for b in s.blocks) + "</section>"
        for s in doc.sections
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_esc(doc.title)}</title>'
        f"<style>{STYLE}</style></head><body><main>"
        f'<header class="top"><div><h1>{_esc(doc.title)}</h1><p class="sub">{_esc(doc.subtitle)}</p></div>'
        f'<div class="badge {badge.tone}">{_esc(badge.label)}{note}</div></header>'
        f'<nav class="toc"><h2>Contents</h2><ol>{toc}</ol></nav>{sections}'
        f"<footer>Generated by Steward from the model registry.</footer></main></body></html>\n"
    )
