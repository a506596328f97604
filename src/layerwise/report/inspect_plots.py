"""The pictures of ``layerwise inspect``, from plain numbers (matplotlib, Agg): per-layer health,
histograms, attributions, Grad-CAM overlays, attention heat-maps, filters, an embedding map."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def plot_layer_health(rows: list[dict], path: Path, vanishing: float, exploding: float) -> Path:
    """Gradient norm and update/weight ratio per weight layer (log scale), in forward order."""
    idx = [r["index"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    g = [r["grad_norm"] if r["grad_norm"] else np.nan for r in rows]
    axes[0].semilogy(idx, g, "o-", color="#1f77b4")
    axes[0].axhline(vanishing, color="#d62728", ls="--", lw=1, label=f"vanishing < {vanishing:g}")
    axes[0].axhline(exploding, color="#ff7f0e", ls="--", lw=1, label=f"exploding > {exploding:g}")
    axes[0].set(title="gradient norm of each layer's weights", xlabel="weight layer (forward order)", ylabel="‖∂L/∂W‖")
    axes[0].legend(fontsize=8)
    u = [r["update_ratio"] if r["update_ratio"] else np.nan for r in rows]
    if any(not math.isnan(v) for v in u):
        axes[1].semilogy(idx, u, "o-", color="#2ca02c")
        axes[1].axhspan(1e-5, 1e-1, color="#2ca02c", alpha=0.08, label="usual range")
        axes[1].axhline(1e-3, color="#2ca02c", ls=":", lw=1)
        axes[1].legend(fontsize=8)
        axes[1].set(title="update/weight ratio of one step", xlabel="weight layer (forward order)", ylabel="‖ΔW‖ / ‖W‖")
    else:
        w = [r["weight_std"] for r in rows]
        axes[1].semilogy(idx, w, "o-", color="#9467bd")
        axes[1].set(title="weight std (pass --lr for update/weight ratios)", xlabel="weight layer (forward order)",
                    ylabel="std(W)")
    for ax in axes:
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_histograms(rows: list[dict], path: Path, which: str, max_layers: int = 48) -> Path:
    """Small multiples: each layer's histogram of ``which`` ("activation" or "weight")."""
    shown = rows[:max_layers]
    cols = min(6, max(1, len(shown)))
    nrows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.6 * cols, 1.9 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, shown):
        if which == "activation":
            a = r.get("activation") or {}
            counts, edges, label = a.get("hist_counts"), a.get("hist_edges"), a.get("activation", "")
        else:
            counts, edges, label = r.get("weight_hist_counts"), r.get("weight_hist_edges"), "weights"
        ax.axis("on")
        ax.set_title(f"{r['index']}. {_short(r['name'], 24)}\n{label}", fontsize=7)
        ax.tick_params(labelsize=6)
        if counts:
            e = np.asarray(edges)
            ax.bar(e[:-1], counts, width=np.diff(e), align="edge", color="#1f77b4" if which == "activation" else "#9467bd")
            ax.set_yticks([])
    title = "activations (output of each layer's nonlinearity)" if which == "activation" else "weights"
    fig.suptitle(f"Histograms of the {title}, one panel per weight layer in forward order"
                 + (f" (first {max_layers} of {len(rows)})" if len(rows) > max_layers else ""), fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_feature_bars(names: list[str], values: list[float], errors: list[float] | None, path: Path, title: str,
                      xlabel: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(names) + 1.4))
    y = np.arange(len(names))
    ax.barh(y, values, xerr=errors, color=["#d62728" if v > 0 else "#1f77b4" for v in values], alpha=0.85)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.6)
    ax.set(title=title, xlabel=xlabel)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_gradcam(images: np.ndarray, maps: dict[str, np.ndarray], labels: list[str], path: Path,
                 title: str = "Grad-CAM: where the predicted class's evidence lies (red: most)") -> Path:
    """One row per map (layer name → (N, H, W)), one column per image (N, H, W): the digit in grey with
    the Grad-CAM map over it; a first row shows the images alone."""
    n = images.shape[0]
    rows = 1 + len(maps)
    fig, axes = plt.subplots(rows, n, figsize=(1.3 * n, 1.45 * rows), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(images[j], cmap="gray")
        axes[0, j].set_title(labels[j], fontsize=7)
        for i, (name, m) in enumerate(maps.items(), start=1):
            axes[i, j].imshow(images[j], cmap="gray")
            axes[i, j].imshow(m[j], cmap="jet", alpha=0.45, vmin=0, vmax=float(m[j].max()) or 1.0)
            if j == 0:
                axes[i, j].set_ylabel(_short(name, 14), fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_attention(maps: np.ndarray, tokens: list[str], path: Path, title: str) -> Path:
    """One layer's attention probabilities (heads, T, S) as heat-maps, one per head (rows: queries)."""
    h = maps.shape[0]
    cols = min(4, h)
    nrows = math.ceil(h / cols)
    T = maps.shape[-1]
    size = 2.4 if T <= 24 else 3.2
    fig, axes = plt.subplots(nrows, cols, figsize=(size * cols, size * nrows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    labels = T <= 32
    for k in range(h):
        ax = axes.flat[k]
        ax.axis("on")
        ax.imshow(maps[k], cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(f"head {k}", fontsize=8)
        if labels:
            ax.set_xticks(range(T), tokens[:T], rotation=90, fontsize=5)
            ax.set_yticks(range(maps.shape[-2]), tokens[: maps.shape[-2]], fontsize=5)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_filters(filters: np.ndarray, path: Path, title: str) -> Path:
    """Conv kernels (C_out, kh, kw) as a grid of images, each scaled to its own range."""
    n = filters.shape[0]
    cols = min(8, n)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(1.1 * cols, 1.1 * nrows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k in range(n):
        axes.flat[k].imshow(filters[k], cmap="gray")
        axes.flat[k].set_title(str(k), fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_embedding(coords: np.ndarray, labelled: list[tuple[int, str]], ratio: list[float], path: Path, title: str) -> Path:
    """Every token's embedding on the first two principal components, the most frequent labelled."""
    fig, ax = plt.subplots(figsize=(8, 6.5))
    ax.scatter(coords[:, 0], coords[:, 1], s=4, color="#9aa5b1", alpha=0.5, linewidths=0)
    for i, text in labelled:
        ax.scatter(coords[i, 0], coords[i, 1], s=14, color="#d62728")
        ax.annotate(text, coords[i], fontsize=7, xytext=(3, 2), textcoords="offset points")
    ax.set(title=title, xlabel=f"PC 1 ({100 * ratio[0]:.1f}% of the variance)",
           ylabel=f"PC 2 ({100 * ratio[1]:.1f}% of the variance)")
    ax.grid(alpha=0.3)
    return _save(fig, path)
