"""`layerwise models`: list model presets."""

from __future__ import annotations


def run(args) -> int:
    from rich.table import Table

    from layerwise.commands import stdout_console
    from layerwise.models import list_presets

    t = Table(title="Model presets")
    for c in ("preset", "family", "reference params", "description"):
        t.add_column(c, justify="right" if c == "reference params" else "left")
    for p in list_presets(args.family):
        t.add_row(p.name, p.family, f"{p.reference_params:,}" if p.reference_params else "", p.description)
    stdout_console().print(t)
    return 0


def register(sub) -> None:
    m = sub.add_parser("models", help="list model presets")
    m.add_argument("--family", default=None, help="only the presets of this model family (an unknown name lists the families)")
    m.set_defaults(func=run)
