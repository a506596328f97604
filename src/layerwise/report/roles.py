"""Renderings of the input / hidden / output view (:mod:`layerwise.analysis.roles_view`):
a text table, markdown and CSV. Each returns a string."""

from __future__ import annotations

import csv
import io

from rich import box
from rich.table import Table

from layerwise.analysis.roles_view import RoleView
from layerwise.report.table import _render, n, pct


def _formula(lay) -> str:
    if lay.formula:
        return lay.formula
    return f"(no formula: counted) {n(lay.params)}" if lay.params else ""


def role_tables(v: RoleView, explain: bool = True) -> list[Table]:
    t = Table(title=f"{v.model} — input / hidden / output layers", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for c, j in [("Role", "left"), ("Params", "right"), ("Share", "right"), ("Trainable", "right"),
                 ("Weight layers", "right"), ("Layers", "left")]:
        t.add_column(c, justify=j, overflow="fold" if c == "Layers" else "ellipsis")
    for r in v.rows:
        names = r.layers if len(r.layers) <= 4 else [*r.layers[:2], f"… {len(r.layers) - 3} more …", r.layers[-1]]
        t.add_row(r.role, n(r.params), pct(r.share), n(r.trainable), str(r.weight_layers), ", ".join(names))
    t.add_row("total", n(v.total), pct(1.0 if v.total else 0.0), n(sum(r.trainable for r in v.rows)),
              str(sum(r.weight_layers for r in v.rows)), "")
    if not explain:
        return [t]
    d = Table(title="Each parameter-owning layer, in forward order", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for c, j in [("Layer", "left"), ("Type", "left"), ("Kind", "left"), ("Role", "left"), ("Params", "right"),
                 ("Formula", "left"), ("Notes", "left")]:
        d.add_column(c, justify=j, overflow="fold" if c in ("Formula", "Notes") else "ellipsis")
    for lay in v.layers:
        d.add_row(lay.name or v.model, lay.cls, lay.kind, lay.role, n(lay.params), _formula(lay), lay.note)
    return [t, d]


def render_roles(v: RoleView, explain: bool = True, width: int = 200) -> str:
    """The split as a text table (and, with ``explain``, every layer with its formula)."""
    return _render(role_tables(v, explain), width)


def roles_markdown(v: RoleView, explain: bool = False) -> str:
    lines = [f"**{v.model}: input / hidden / output layers** ({v.total:,} parameters)", "",
             "| role | params | share | weight layers | layers |", "|---|---:|---:|---:|---|"]
    for r in v.rows:
        names = r.layers if len(r.layers) <= 4 else [*r.layers[:2], f"… {len(r.layers) - 3} more …", r.layers[-1]]
        lines.append(f"| {r.role} | {r.params:,} | {pct(r.share)} | {r.weight_layers} | {', '.join(f'`{x}`' for x in names)} |")
    if explain:
        lines += ["", "| layer | role | params | formula |", "|---|---|---:|---|"]
        lines += [f"| `{lay.name or v.model}` | {lay.role} | {lay.params:,} | {_formula(lay)} {lay.note} |" for lay in v.layers]
    return "\n".join(lines) + "\n"


def roles_csv(v: RoleView) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["layer", "type", "kind", "role", "params", "trainable", "formula", "note"])
    for lay in v.layers:
        w.writerow([lay.name, lay.cls, lay.kind, lay.role, lay.params, lay.trainable, lay.formula or "", lay.note])
    return buf.getvalue()
