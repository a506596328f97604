"""Plots of a study's points (matplotlib, Agg): metrics against depth with error bars,
gradient-norm heat maps, per-layer gradient norms at initialisation, cost against depth.

Inputs are plain data: a *series* is ``{"label": str, "x": [depth, ...], "y": [{"mean", "sd"}
or None, ...], "diverged": [bool, ...]}``; a point with ``y`` None that diverged is drawn
as a red × on the axis' floor.
"""

from __future__ import annotations

import math
from pathlib import Path

from layerwise.report.plots import _plt


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _series_panel(ax, series: list[dict], ylabel: str, log_y: bool = False, xlabel: str = "depth (hidden layers)") -> None:
    cmap = _plt().get_cmap("tab10")
    for i, s in enumerate(series):
        xs = [x for x, y in zip(s["x"], s["y"]) if y is not None]
        ms = [y["mean"] for y in s["y"] if y is not None]
        sds = [y["sd"] for y in s["y"] if y is not None]
        color = cmap(i % 10)
        if xs:
            ax.errorbar(xs, ms, yerr=sds, marker="o", ms=4, capsize=3, label=s["label"], color=color)
        bad = [x for x, y, d in zip(s["x"], s["y"], s.get("diverged", [False] * len(s["x"]))) if d]
        if bad:
            ax.scatter(bad, [0.02] * len(bad), marker="x", s=60, color="red", transform=ax.get_xaxis_transform(),
                       label=f"{s['label']}: diverged", zorder=5)
    ax.set_xscale("log", base=2)
    xs_all = [x for s in series for x in s["x"]]
    if xs_all:  # diverged points alone do not set the limits
        ax.set_xlim(min(xs_all) / 1.3, max(xs_all) * 1.3)
    if log_y and any(y is not None and y["mean"] > 0 for s in series for y in s["y"]):
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def plot_vs_depth(panels: list[tuple[str, list[dict]]], path: str | Path, title: str, log_y: tuple[bool, ...] = (),
                  xlabel: str = "depth (hidden layers)") -> Path:
    """One panel per ``(ylabel, series)``, side by side, a shared legend (x on a log2 axis)."""
    plt = _plt()
    width = 6 if len(panels) < 4 else 4.5
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 4.6), squeeze=False)
    for j, (ax, (ylabel, series)) in enumerate(zip(axes[0], panels)):
        _series_panel(ax, series, ylabel, log_y[j] if j < len(log_y) else False, xlabel)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        axes[0][-1].legend(handles, labels, fontsize=7, loc="best")
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_grad_heatmaps(panels: list[dict], path: str | Path, title: str) -> Path:
    """Heat maps of log10 ‖∂J/∂W‖, weight layer (rows, the input layer at the bottom) ×
    training step (columns), side by side on one colour scale. A panel: ``{"title",
    "layers": [names], "steps": [..], "norms": [[per layer] per step]}``."""
    import numpy as np

    plt = _plt()
    mats = []
    for p in panels:
        m = np.array([[math.log10(v) if (v is not None and v > 0) else np.nan for v in row] for row in p["norms"]], dtype=float)
        mats.append(m.T if m.size else np.full((1, 1), np.nan))
    finite = np.concatenate([m[np.isfinite(m)] for m in mats]) if mats else np.array([])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.8), squeeze=False)
    im = None
    for ax, p, m in zip(axes[0], panels, mats):
        steps = p["steps"] or [0]
        im = ax.imshow(m, aspect="auto", origin="lower", cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest",
                       extent=(-0.5, len(steps) - 0.5, 0.5, m.shape[0] + 0.5))
        ticks = list(range(0, len(steps), max(1, len(steps) // 6)))
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(steps[i]) for i in ticks], fontsize=8)
        ax.set_xlabel("training step")
        ax.set_ylabel("weight layer (1 = input layer)")
        ax.set_title(p["title"], fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), label="log10 ‖∂J/∂W‖", shrink=0.9)
    fig.suptitle(title, fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_grad_init(groups: list[dict], path: str | Path, title: str) -> Path:
    """Per-layer ‖∂J/∂W‖ at initialisation, a line per depth, one panel per configuration.
    A group: ``{"label", "lines": [{"depth", "norms": [per layer, mean over seeds]}]}``."""
    plt = _plt()
    cols = min(4, len(groups)) or 1
    rows = math.ceil(len(groups) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, sharey=True)
    cmap = plt.get_cmap("viridis")
    for ax, g in zip(axes.flat, groups):
        n = len(g["lines"])
        for i, line in enumerate(g["lines"]):
            ys = [v if (v is not None and v > 0) else float("nan") for v in line["norms"]]
            ax.plot(range(1, len(ys) + 1), ys, marker=".", ms=3, color=cmap(i / max(1, n - 1)), label=f"depth {line['depth']}")
        ax.set_yscale("log")
        ax.set_title(g["label"], fontsize=9)
        ax.set_xlabel("weight layer (1 = input layer)")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(groups):]:
        ax.axis("off")
    axes[0][0].set_ylabel("‖∂J/∂W‖ at initialisation")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_stacked_bars(labels: list[str], stacks: dict[str, list[int]], path: str | Path, title: str,
                      ylabel: str = "parameters") -> Path:
    """One bar per label, stacked by ``stacks`` (name → a value per label): parameters per kind."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 3), 4.8))
    bottoms = [0] * len(labels)
    cmap = plt.get_cmap("tab10")
    for i, (name, vals) in enumerate(stacks.items()):
        ax.bar(range(len(labels)), vals, bottom=bottoms, label=name, color=cmap(i % 10))
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    for x, total in enumerate(bottoms):
        ax.text(x, total, f"{total:,}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_grouped_bars(panels: list[tuple[str, list[str], list[tuple[str, list]]]], path: str | Path, title: str) -> Path:
    """Panels of grouped bars: ``(ylabel, categories, [(series label, [{"mean", "sd"} or number or None
    per category])])``."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.6), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (ylabel, cats, series) in zip(axes[0], panels):
        n = max(1, len(series))
        width = 0.8 / n
        for i, (lab, vals) in enumerate(series):
            ms = [(v["mean"] if isinstance(v, dict) else v) if v is not None else 0.0 for v in vals]
            sds = [(v["sd"] if isinstance(v, dict) else 0.0) if v is not None else 0.0 for v in vals]
            xs = [c - 0.4 + width * (i + 0.5) for c in range(len(cats))]
            ax.bar(xs, ms, width, yerr=sds, capsize=2, label=lab, color=cmap(i % 10))
        ax.set_xticks(range(len(cats)))
        ax.set_xticklabels(cats, fontsize=8, rotation=20, ha="right")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)
