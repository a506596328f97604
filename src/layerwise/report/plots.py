"""PNG plots of an analysis (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

from layerwise.analysis.core import Analysis


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_params(a: Analysis, path: str | Path, by: str = "kind", max_bars: int = 40) -> Path:
    """Stacked trainable/frozen parameter bars per layer kind (``by="kind"``) or per weight layer."""
    plt = _plt()
    if by == "kind":
        items = [(k.kind, k.trainable, k.frozen) for k in a.by_kind if k.params]
    elif by == "block":
        items = [(b.name, b.trainable, b.params - b.trainable) for b in a.by_block if b.params]
    else:
        items = [(r.name, r.trainable, r.params - r.trainable) for r in a.rows if r.params]
        if len(items) > max_bars:  # the largest layers; the rest would be unreadable slivers
            items = sorted(items, key=lambda x: -(x[1] + x[2]))[:max_bars]
    labels = [i[0] for i in items]
    tr = [i[1] for i in items]
    fr = [i[2] for i in items]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(items) + 3), 4.5))
    x = range(len(items))
    ax.bar(x, tr, label="trainable", color="#2b7bba")
    ax.bar(x, fr, bottom=tr, label="frozen", color="#b8c4cf")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, rotation=60 if by != "kind" else 0, ha="right" if by != "kind" else "center", fontsize=8)
    ax.set_ylabel("parameters")
    ax.set_title(f"{a.model}: parameters per {'layer kind' if by == 'kind' else by}\n"
                 f"total {a.totals.params:,}, trainable {a.totals.trainable:,}", fontsize=10)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 3))
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_comparison(analyses: list[Analysis], path: str | Path) -> Path:
    """Parameters per layer kind for several models, as shares (stacked to 100%)."""
    plt = _plt()
    kinds: list[str] = []
    for a in analyses:
        for k in a.by_kind:
            if k.params and k.kind not in kinds:
                kinds.append(k.kind)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(analyses) + 3), 4.5))
    bottoms = [0.0] * len(analyses)
    cmap = plt.get_cmap("tab20")
    for i, kind in enumerate(kinds):
        vals = [100 * a.kind(kind).share for a in analyses]
        ax.bar(range(len(analyses)), vals, bottom=bottoms, label=kind, color=cmap(i % 20))
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    ax.set_xticks(range(len(analyses)))
    ax.set_xticklabels([f"{a.model}\n{a.totals.params:,}\nweight depth {a.depth.weight_depth}" for a in analyses], fontsize=8)
    ax.set_ylabel("% of parameters")
    ax.set_title("Where the parameters live, per layer kind")
    ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
