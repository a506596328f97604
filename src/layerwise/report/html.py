"""Self-contained HTML reports: one file, plots embedded as data URIs, no external
assets, opens offline. The JSON behind each section is embedded too.

A report is a list of :class:`Section`. ``report_for_run_dir`` builds one for any
run directory: from its ``report-sections.json`` manifest when the command wrote
one, otherwise from the files it finds (markdown, PNG plots, metrics, JSON).

What a person reads: one heading per section (the section's title; headings inside its
markdown become sub-headings), every table inside a box that scrolls sideways when it is
wider than its card, measured values with 4 significant digits (exact counts keep every
digit), and frozen layers greyed in per-layer tables (:func:`layer_rows_html`).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from markdown_it import MarkdownIt

from layerwise.errors import LoadError
from layerwise.io import atomic_write_text

MANIFEST = "report-sections.json"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2733;background:#f6f8fa}
header{background:#18324a;color:#fff;padding:22px 36px}
header h1{margin:0 0 4px 0;font-size:26px} header p{margin:0;opacity:.85}
main{max-width:1180px;margin:0 auto;padding:18px 36px 60px}
nav{margin:10px 0 18px} nav a{margin-right:14px;color:#18324a}
section{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:16px 22px;margin:18px 0}
section h2{margin-top:4px;font-size:20px;border-bottom:1px solid #e6ebf0;padding-bottom:6px}
section h3{font-size:15px;margin:14px 0 6px}
.table-wrap{max-width:100%;overflow-x:auto;margin:10px 0}
table{border-collapse:collapse;margin:0;font-size:13px}
tr.frozen td{color:#8a96a3;background:#f4f6f8} tr.partial td{color:#4d5a66}
th,td{border:1px solid #d8dee4;padding:4px 9px;text-align:right;font-variant-numeric:tabular-nums}
th{background:#eef2f6} td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto;border:1px solid #e6ebf0;margin:8px 0;display:block}
pre{background:#f3f5f7;padding:10px;overflow:auto;font-size:12px;max-height:420px}
figure{margin:10px 0} figcaption{font-size:12px;color:#58636e}
details summary{cursor:pointer;color:#18324a}
.note{color:#58636e;font-size:13px}
.tokens{line-height:1.9;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;margin:6px 0 12px}
.tokens span{padding:1px 0;border-radius:2px;white-space:pre-wrap}
.tokens b{font-family:system-ui,sans-serif;font-weight:600;margin-right:8px}
"""


@dataclass
class Section:
    title: str
    markdown: str = ""
    images: list[Path] = field(default_factory=list)
    data: dict | list | None = None
    preformatted: str = ""  # e.g. a terminal table or generated text
    # Highlighted texts: [{"label": "spam (p 0.98)", "tokens": [[text, score], ...]}]; a token's
    # background is red for a positive score, blue for a negative one, its strength |score| / max |score|.
    highlights: list[dict] = field(default_factory=list)
    html: str = ""  # markup layerwise generated itself (escaped there), e.g. :func:`layer_rows_html`

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.title.lower()).strip("-")


_md = MarkdownIt("commonmark", {"html": False}).enable("table")


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    cap = html.escape(Path(path).stem.replace("-", " "))
    return f'<figure><img alt="{cap}" src="data:image/png;base64,{data}"><figcaption>{cap}</figcaption></figure>'


def _highlights(items: list[dict]) -> str:
    out = []
    for item in items:
        tokens = item.get("tokens") or []
        top = max((abs(float(v)) for _, v in tokens), default=0.0) or 1.0
        spans = []
        for text, v in tokens:
            a = min(1.0, abs(float(v)) / top)
            rgb = "214,39,40" if float(v) > 0 else "31,119,180"
            spans.append(f"<span style='background:rgba({rgb},{a:.2f})' title='{float(v):.4g}'>{html.escape(str(text))}</span>")
        out.append(f"<p class='tokens'><b>{html.escape(str(item.get('label', '')))}</b>{''.join(spans)}</p>")
    return "\n".join(out)


def sig4(v) -> str:
    """A measured value with 4 significant digits ("0.9871", "1.234e-05"); integers exactly."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.4g}"


def _cell(text: str) -> str:
    """A CSV cell as a person reads it: floats to 4 significant digits, the rest as written."""
    t = text.strip()
    if t and any(c in t for c in ".eE") and not t.isalpha():
        try:
            return sig4(float(t))
        except ValueError:
            return text
    return text


_HEADING = re.compile(r"<(/?)h([1-6])>")


def _one_heading(body: str) -> str:
    """A section's markdown under its own title: a leading heading (the same title again) is
    dropped, other headings become <h3> sub-headings, so each section has one heading."""
    lines = body.lstrip("\n").splitlines()
    if lines and lines[0].startswith("#"):
        lines = lines[1:]
    return _HEADING.sub(lambda m: f"<{m.group(1)}h3>", _md.render("\n".join(lines)))


def _wrap_tables(markup: str) -> str:
    return markup.replace("<table>", "<div class='table-wrap'><table>").replace("</table>", "</table></div>")


def layer_rows_html(a, columns=("layer", "type", "kind", "params", "trainable", "status")) -> str:
    """The per-layer table of an analysis as HTML (forward order), each row classed by its
    status so that frozen layers are greyed."""
    from layerwise.report.table import ordered_rows

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    out = [f"<div class='table-wrap'><table class='layers'><thead><tr>{head}</tr></thead><tbody>"]
    for r in ordered_rows(a):
        name = ("&nbsp;&nbsp;" * r.level) + html.escape(r.name.rsplit(".", 1)[-1] if r.name else a.model)
        cells = {"layer": name, "type": html.escape(public_name(r.cls)), "kind": html.escape(r.kind),
                 "params": f"{r.params_total:,}", "trainable": f"{r.trainable_total:,}", "status": html.escape(r.status or "-")}
        out.append(f"<tr class='{r.status or 'none'}'>" + "".join(f"<td>{cells[c]}</td>" for c in columns) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def public_name(cls: str) -> str:
    """A class name as a person reads it: a private wrapper (``_SuffixClassifier``) loses its underscore."""
    return cls.lstrip("_") or cls


def render_html(title: str, sections: list[Section], subtitle: str = "") -> str:
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header><main>",
        "<nav>" + "".join(f"<a href='#{s.anchor}'>{html.escape(s.title)}</a>" for s in sections) + "</nav>",
    ]
    for i, s in enumerate(sections):
        parts.append(f"<section id='{s.anchor}'><h2>{html.escape(s.title)}</h2>")
        if s.markdown:
            parts.append(_wrap_tables(_one_heading(s.markdown)))
        if s.html:
            parts.append(s.html)
        if s.preformatted:
            parts.append(f"<pre>{html.escape(s.preformatted)}</pre>")
        if s.highlights:
            parts.append(_highlights(s.highlights))
        parts += [_img(p) for p in s.images]
        if s.data is not None:
            text = json.dumps(s.data, indent=2, default=str)
            parts.append(f"<details><summary>JSON behind this section</summary><pre>{html.escape(text)}</pre></details>")
            safe = text.replace("</", "<\\/")
            parts.append(f"<script type='application/json' id='data-{i}'>{safe}</script>")
        parts.append("</section>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, title: str, sections: list[Section], subtitle: str = "") -> Path:
    return atomic_write_text(Path(path), render_html(title, sections, subtitle))


def write_manifest(run_dir: str | Path, title: str, sections: list[Section]) -> Path:
    """Record how a run directory's report is laid out (paths relative to the directory)."""
    run_dir = Path(run_dir)
    doc = {
        "title": title,
        "sections": [
            {
                "title": s.title,
                "markdown": s.markdown,
                "preformatted": s.preformatted,
                "images": [str(Path(p).resolve().relative_to(run_dir.resolve())) for p in s.images],
                "data": s.data,
                "html": s.html,
                **({"highlights": s.highlights} if s.highlights else {}),
            }
            for s in sections
        ],
    }
    return atomic_write_text(run_dir / MANIFEST, json.dumps(doc, indent=2, default=str))


def _csv_markdown(path: Path, max_rows: int = 12) -> str:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return ""
    header, body = rows[0], rows[1:]
    if len(body) > max_rows:  # the first and the last rows: where it started, where it ended
        body = body[: max_rows // 2] + [["…"] * len(header)] + body[-max_rows // 2:]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in body]
    return "\n".join(lines)


def sections_for_run_dir(run_dir: str | Path) -> tuple[str, list[Section]]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LoadError(f"{run_dir}: no such run directory")
    manifest = run_dir / MANIFEST
    if manifest.is_file():
        try:
            doc = json.loads(manifest.read_text())
            return doc["title"], [
                Section(s["title"], s.get("markdown", ""), [run_dir / p for p in s.get("images", [])], s.get("data"),
                        s.get("preformatted", ""), s.get("highlights") or [], s.get("html", ""))
                for s in doc["sections"]
            ]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise LoadError(f"{manifest}: malformed report manifest ({e})") from None
    sections: list[Section] = []
    for md in sorted(run_dir.glob("*.md")):
        sections.append(Section(md.stem.replace("-", " ").capitalize(), md.read_text()))
    for metrics in sorted(run_dir.glob("*.csv")):
        sections.append(Section(f"{metrics.stem.capitalize()} (first and last rows)", _csv_markdown(metrics)))
    pngs = sorted(run_dir.glob("*.png"))
    if pngs:
        sections.append(Section("Plots", images=pngs))
    for js in sorted(run_dir.glob("*.json")):
        try:
            data = json.loads(js.read_text())
        except json.JSONDecodeError:
            continue
        sections.append(Section(js.stem.replace("-", " ").capitalize(), data=data))
    if not sections:
        raise LoadError(f"{run_dir}: nothing to report (no markdown, CSV, PNG or JSON files)")
    return run_dir.name, sections


def report_for_run_dir(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Build ``report.html`` for any run directory (summary, pretrain, train, finetune, compare, plan)."""
    title, sections = sections_for_run_dir(run_dir)
    return write_report(Path(out) if out else Path(run_dir) / "report.html", f"layerwise — {title}", sections,
                        subtitle=str(Path(run_dir)))
