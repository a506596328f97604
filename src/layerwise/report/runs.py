"""Run directories for analyses: the files behind ``layerwise summary --out-dir`` and
the sections of their HTML report."""

from __future__ import annotations

import json
from pathlib import Path

from layerwise.analysis.core import Analysis
from layerwise.io import atomic_write_text
from layerwise.report import plots, table
from layerwise.report.html import Section, write_manifest


def analysis_sections(analyses: list[Analysis], out_dir: Path) -> list[Section]:
    """Write tables, JSON and plots for ``analyses`` into ``out_dir``; return report sections."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections: list[Section] = []
    if len(analyses) > 1:
        png = plots.plot_comparison(analyses, out_dir / "params-by-kind-comparison.png")
        sections.append(Section("Comparison", preformatted=table.render_comparison(analyses), images=[png],
                                data=[{"model": a.model, "totals": a.totals.__dict__, "depth": a.depth.__dict__} for a in analyses]))
    for a in analyses:
        slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in a.model)
        atomic_write_text(out_dir / f"summary-{slug}.json", a.to_json())
        md = table.render_markdown(a, by="kind")
        atomic_write_text(out_dir / f"summary-{slug}.md", md)
        png = plots.plot_params(a, out_dir / f"params-{slug}.png", by="kind")
        biggest = sorted((r for r in a.rows if r.formula and r.params_raw), key=lambda r: -r.params_raw)[:5]
        formulas = "\n".join(f"- `{r.name}` — {r.formula}" for r in biggest)
        sections.append(Section(
            f"{a.model}: depth and parameters",
            markdown=md + ("\n\n**Formulas behind the biggest layers**\n\n" + formulas if formulas else ""),
            images=[png],
            data={"totals": a.totals.__dict__, "depth": a.depth.__dict__, "by_kind": [k.__dict__ for k in a.by_kind]},
        ))
    return sections


def write_summary_dir(analyses: list[Analysis], out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    sections = analysis_sections(analyses, out_dir)
    write_manifest(out_dir, "summary: " + ", ".join(a.model for a in analyses), sections)
    atomic_write_text(out_dir / "summary-index.json", json.dumps([a.model for a in analyses]))
    return out_dir
