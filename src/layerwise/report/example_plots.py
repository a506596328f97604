"""PNG plots of the examples' results: a maze with the learned policy, RL learning curves,
image grids, a GAN's two losses, accuracy against labels per class (matplotlib, Agg)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    """Write the figure atomically (a reader never sees half a PNG) and close it."""
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


_ARROWS = ((0, -0.32), (0.32, 0), (0, 0.32), (-0.32, 0))  # up, right, down, left as (dx, dy) in image axes


def plot_maze(layout: Sequence[str], policy: dict[tuple[int, int], int], paths: dict[str, list[tuple[int, int]]],
              path: str | Path, title: str = "") -> Path:
    """The maze (walls dark), the greedy action in every free cell (arrows) and the paths
    (cell lists, one colour each) from some starts."""
    plt = _plt()
    h, w = len(layout), len(layout[0])
    walls = np.array([[c == "#" for c in r] for r in layout], dtype=float)
    fig, ax = plt.subplots(figsize=(0.55 * w + 1.6, 0.55 * h + 0.9))
    ax.imshow(walls, cmap="Greys", vmin=0, vmax=1.25)
    for (r, c), a in policy.items():
        dx, dy = _ARROWS[a]
        ax.arrow(c - dx / 2, r - dy / 2, dx, dy, head_width=0.16, head_length=0.12, color="#9aa5b1",
                 length_includes_head=True, lw=0.6)
    colours = ("#d9534f", "#2b7bba", "#5cb85c", "#f0ad4e", "#8e44ad")
    for (label, cells), colour in zip(paths.items(), colours):
        ys, xs = [p[0] for p in cells], [p[1] for p in cells]
        ax.plot(xs, ys, "-o", color=colour, lw=2.2, ms=3.5, label=label, alpha=0.9)
    for r, row in enumerate(layout):
        for c, ch in enumerate(row):
            if ch in "SG":
                ax.text(c, r, ch, ha="center", va="center", fontsize=11, fontweight="bold", color="#18324a")
    ax.set_xticks([])
    ax.set_yticks([])
    if paths:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_rl_curve(train: list[dict], evals: list[dict], path: str | Path, title: str = "") -> Path:
    """Training episodes (return and success rate per log window) and the greedy policy's
    evaluations (success rate) against the step."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    pts = [(r["step"], r["episode_return"]) for r in train if isinstance(r.get("episode_return"), (int, float))]
    if pts:
        a1.plot(*zip(*pts), color="#2b7bba", lw=1.2, label="training episodes (ε-greedy)")
    ev = [(r["step"], r["mean_return"]) for r in evals if isinstance(r.get("mean_return"), (int, float))]
    if ev:
        a1.plot(*zip(*ev), "o-", color="#d9534f", lw=1.4, ms=4, label="greedy policy, 100 starts")
    a1.set_xlabel("step")
    a1.set_ylabel("mean episode return")
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8)
    pts = [(r["step"], r["episode_success"]) for r in train if isinstance(r.get("episode_success"), (int, float))]
    if pts:
        a2.plot(*zip(*pts), color="#2b7bba", lw=1.2, label="training episodes reaching G")
    ev = [(r["step"], r["success_rate"]) for r in evals if isinstance(r.get("success_rate"), (int, float))]
    if ev:
        a2.plot(*zip(*ev), "o-", color="#d9534f", lw=1.4, ms=4, label="greedy success rate")
    a2.set_ylim(-0.03, 1.03)
    a2.set_xlabel("step")
    a2.set_ylabel("success rate")
    a2.grid(alpha=0.3)
    a2.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_image_grid(images, path: str | Path, title: str = "", columns: int = 10) -> Path:
    """Images (N, 1, H, W) or (N, H, W) in [0, 1] as a grid, ``columns`` per row."""
    plt = _plt()
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 4:
        x = x[:, 0]
    n, h, w = x.shape
    rows = math.ceil(n / columns)
    grid = np.ones((rows * (h + 1) + 1, columns * (w + 1) + 1), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, columns)
        grid[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + c * (w + 1): 1 + c * (w + 1) + w] = x[i]
    fig, ax = plt.subplots(figsize=(columns * 0.55 + 0.4, rows * 0.55 + 0.6))
    ax.imshow(np.clip(grid, 0, 1), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_gan_losses(train: list[dict], evals: list[dict], score_key: str, reference: float | None,
                    path: str | Path, title: str = "") -> Path:
    """Both networks' training losses per logged step, and the score of each evaluation
    (with the real images' score as a line)."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, colour, label in (("d_loss", "#d9534f", "discriminator"), ("g_loss", "#2b7bba", "generator")):
        pts = [(r["step"], r[key]) for r in train if isinstance(r.get(key), (int, float))]
        if pts:
            a1.plot(*zip(*pts), color=colour, lw=1.2, label=f"{label} loss")
    a1.set_xlabel("step")
    a1.set_ylabel("binary cross-entropy")
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8)
    ev = [(r["step"], r[score_key]) for r in evals if isinstance(r.get(score_key), (int, float))]
    if ev:
        a2.plot(*zip(*ev), "o-", color="#5cb85c", lw=1.4, ms=3, label=f"{score_key} of 1,000 samples")
    if reference is not None:
        a2.axhline(reference, color="#18324a", ls="--", lw=1, label=f"real test images: {reference:.2f}")
    a2.set_xlabel("step")
    a2.set_ylabel("Inception Score (CNN on real digits)")
    a2.grid(alpha=0.3)
    a2.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_transfer(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Test accuracy (mean ± sd over seeds) against labels per class, one line per method.

    rows: {"method", "labels_per_class", "mean", "sd"}."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method, colour in (("transfer", "#d9534f"), ("scratch", "#2b7bba")):
        pts = sorted((r["labels_per_class"], r["mean"], r["sd"]) for r in rows if r["method"] == method)
        if pts:
            n, m, s = zip(*pts)
            ax.errorbar(n, m, yerr=s, fmt="o-", color=colour, capsize=4, lw=1.5,
                        label="pretrained on MNIST, fine-tuned" if method == "transfer" else "from scratch")
    ax.set_xscale("log")
    ns = sorted({r["labels_per_class"] for r in rows})
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.xaxis.set_minor_locator(_plt().NullLocator())  # no 6×10⁰ labels between the sizes
    ax.set_xlabel("labelled digits per class")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
