"""What the examples share: their TrainConfig (the example's defaults, a quick version,
then the flags the user gave), and the report sections of a training run."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def train_config(ctx, full: dict[str, Any], quick: dict[str, Any] | None = None, out_dir: Path | None = None):
    """The example's TrainConfig: ``full`` defaults, ``quick`` on top with --quick, then the
    user's flags; the seed and run directory come from the example."""
    from layerwise.train.config import TrainConfig

    layers = [full, (quick or {}) if ctx.quick else {}, ctx.train,
              {"seed": ctx.seed, "out_dir": str(out_dir if out_dir is not None else ctx.out_dir)}]
    return TrainConfig.layered(*layers, source=f"example {ctx.out_dir.name}")


def training_sections(run_dir: Path, title: str, markdown: str = "", data=None) -> list:
    """One report section with the run's loss curve and any other plot it wrote."""
    from layerwise.report.html import Section

    images = sorted(p for p in Path(run_dir).glob("*.png"))
    return [Section(title, markdown=markdown, images=images, data=data)]


def metric_line(metrics: dict, keys=("loss", "accuracy", "precision", "recall", "f1")) -> str:
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in keys if isinstance(metrics.get(k), (int, float)))
