"""The main job end to end (``layerwise demo``, what ``make demo`` runs).

Step 1, depth and parameters compared: GPT-2 small, Llama-3-8B and BERT-base
built on the meta device; ResNet-50 against MobileNet-v1; VGG-16 built with
standard and with depthwise-separable convolutions. The four depths, parameters
per layer kind with shares, FLOPs, and the formula behind the biggest layers.

The demo writes everything into ``out_dir`` and reports progress through
``emit`` (the CLI passes a printer); it returns the paths it wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from layerwise.analysis import Analysis, analyze
from layerwise.models import build
from layerwise.io import atomic_write_text
from layerwise.report import plots, table

GROUPS = {
    "transformers": [("gpt2", dict(seq_len=1024)), ("llama-3-8b", dict(seq_len=1024)), ("bert-base", dict(seq_len=512))],
    "cnns": [("resnet50", {}), ("mobilenet-v1", {})],
    "conv-types": [("vgg16", {}), ("vgg16-dws", {})],
}


def biggest_formulas(a: Analysis, k: int = 3) -> list[str]:
    rows = sorted((r for r in a.rows if r.formula and r.params_raw), key=lambda r: -r.params_raw)
    return [f"{r.name}: {r.formula}" for r in rows[:k]]


def run_demo(out_dir: Path, quick: bool = False, emit: Callable[[str], None] = lambda s: None) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    summary = {}
    emit("[1] Depth and parameters, compared (models built on the meta device: no weights are allocated)")
    for group, members in GROUPS.items():
        analyses = []
        for name, kw in members:
            a = analyze(build(name, device="meta"), name=name, **kw)
            analyses.append(a)
            summary[name] = {
                "params": a.totals.params,
                "trainable": a.totals.trainable,
                "depth": {"weight_depth": a.depth.weight_depth, "block_depth": a.depth.block_depth,
                          "module_depth": a.depth.module_depth, "max_channel_depth": a.depth.max_channel_depth},
                "by_kind": {k.kind: {"params": k.params, "share": k.share} for k in a.by_kind},
                "flops_forward": a.totals.flops_forward,
                "input_shape": a.input_shape,
                "biggest_layers": biggest_formulas(a),
            }
            path = out_dir / f"summary-{name}.json"
            atomic_write_text(path, a.to_json())
            written.append(path)
        emit(table.render_comparison(analyses))
        for a in analyses:
            emit(f"  biggest layers of {a.model}:")
            for line in biggest_formulas(a):
                emit(f"    {line}")
        png = plots.plot_comparison(analyses, out_dir / f"params-by-kind-{group}.png")
        written.append(png)
        emit(f"  plot: {png}")
    path = out_dir / "depth-and-parameters.json"
    atomic_write_text(path, json.dumps(summary, indent=2))
    written.append(path)
    return written
