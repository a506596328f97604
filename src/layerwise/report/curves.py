"""PNG plots of a training run: loss and metric curves, and attention heat-maps
(matplotlib, Agg backend; written atomically, so a reader never sees half a PNG)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from layerwise.io import atomic_write_bytes


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    plt.close(fig)
    return atomic_write_bytes(Path(path), buf.getvalue())


def _series(records: Sequence[dict], split: str, key: str, x: str) -> tuple[list[float], list[float]]:
    pts = [(r[x], r[key]) for r in records
           if r.get("split") == split and isinstance(r.get(key), (int, float)) and isinstance(r.get(x), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_training_curves(records: Sequence[dict], path: str | Path, metrics: Sequence[str] = ("accuracy",),
                         x: str = "step", title: str = "") -> Path:
    """Two panels from metrics records (``split`` "train"/"val", ``x``, ``loss``, metrics):
    the loss of both splits, and each of ``metrics`` for both splits where present."""
    plt = _plt()
    fig, (ax_l, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"train": "#2b7bba", "val": "#d9534f"}
    for split in ("train", "val"):
        xs, ys = _series(records, split, "loss", x)
        if xs:
            ax_l.plot(xs, ys, "-" if split == "train" else "o-", color=colors[split], lw=1.3, ms=3,
                      label=f"{'validation' if split == 'val' else split} loss")
    finite = [v for split in ("train", "val") for v in _series(records, split, "loss", x)[1] if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 20:
        ax_l.set_yscale("log")
    ax_l.set_xlabel("optimizer step" if x == "step" else x)
    ax_l.set_ylabel("loss")
    ax_l.grid(alpha=0.3)
    ax_l.legend()
    styles = ["-", "--", ":", "-."]
    for i, key in enumerate(metrics):
        for split in ("train", "val"):
            xs, ys = _series(records, split, key, x)
            if xs:
                ax_m.plot(xs, ys, styles[i % 4], marker="o" if split == "val" else None, ms=3, color=colors[split], lw=1.3,
                          label=f"{'validation' if split == 'val' else split} {key}")
    ax_m.set_xlabel("optimizer step" if x == "step" else x)
    ax_m.set_ylabel(", ".join(metrics))
    ax_m.set_ylim(-0.02, 1.02)
    ax_m.grid(alpha=0.3)
    if ax_m.get_legend_handles_labels()[0]:
        ax_m.legend(loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


@dataclass
class AttentionMap:
    """One sentence: ``weights[i][j]`` is output token i's attention on source token j."""

    source: list[str]  # the source tokens (characters), in order
    output: list[str]  # the decoded tokens, end marker included
    weights: list[list[float]]  # (len(output), len(source))
    title: str = ""


def plot_attention(maps: Sequence[AttentionMap], path: str | Path, title: str = "") -> Path:
    """Heat-maps of attention weights, one panel per sentence: source tokens along x,
    output tokens along y, darker = more weight (each row sums to 1)."""
    plt = _plt()
    n = len(maps)
    if n == 0:
        raise ValueError("plot_attention: no sentences to plot")
    widths = [max(len(m.source), 4) for m in maps]
    fig, axes = plt.subplots(n, 1, figsize=(min(0.19 * max(widths) + 2.5, 18), sum(0.3 * max(len(m.output), 3) + 1.3 for m in maps)),
                             squeeze=False)
    for ax, m in zip(axes[:, 0], maps):
        im = ax.imshow(m.weights, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(len(m.source)))
        ax.set_xticklabels(["␣" if c == " " else c for c in m.source], fontsize=7, family="monospace")
        ax.set_yticks(range(len(m.output)))
        ax.set_yticklabels(m.output, fontsize=8, family="monospace")
        ax.set_xlabel("source characters", fontsize=8)
        ax.set_ylabel("output", fontsize=8)
        if m.title:
            ax.set_title(m.title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
