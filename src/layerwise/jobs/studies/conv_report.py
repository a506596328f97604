"""The conv study's tables, plots and report sections."""

from __future__ import annotations

from pathlib import Path

from layerwise.jobs.studies.depth_report import fmt_ms
from layerwise.report import study_plots

KINDS = ("conv", "depthwise", "pointwise", "grouped", "norm", "mlp", "head")


def _check(f: dict) -> str:
    return "✓" if f["value"] == f["numel"] else f"✗ numel {f['numel']:,}"


def per_layer_md(doc: dict) -> str:
    lines = [f"Standard **{doc['per_layer_symbolic']['standard']}** against depthwise-separable "
             f"**{doc['per_layer_symbolic']['separable']}**, substituted by the analysis (`layerwise.analysis.formulas`) "
             "and checked against the tensors' numel (✓); forward FLOPs per example from the analysis' trace.", ""]
    for data, nets in doc["per_layer"].items():
        for net, rows in nets.items():
            lines += [f"**{net}** on {data}", "",
                      "| layer | C_in→C_out | standard | separable | params ratio | FLOPs standard | FLOPs separable | "
                      "FLOPs ratio | 1/C_out + 1/K² |", "|---|---|---|---|---:|---:|---:|---:|---|"]
            for r in rows:
                s, p = r["standard"], r["separable"]
                lines.append(f"| `{r['layer']}` | {r['c_in']}→{r['c_out']} | {s['substituted']} = {s['value']:,} {_check(s)} | "
                             f"{p['substituted']} = {p['value']:,} {_check(p)} | {r['param_ratio']:.2f} | "
                             f"{r['flops_standard']:,} | {r['flops_separable']:,} | "
                             f"{r['flops_ratio']:.2f} | {r['ratio_formula'].split(' = ', 1)[1]} |")
            lines.append("")
        break  # the layers are the same on every data set but for the feature-map sizes: show the first
    lines += ["At canonical shapes (3×3, C_in = C_out = C, padding 1):", "",
              "| C | standard | separable | ratio |", "|---:|---|---|---:|"]
    for r in doc["canonical_layers"]:
        s, p = r["standard"], r["separable"]
        lines.append(f"| {r['c']} | {s['substituted']} = {s['value']:,} {_check(s)} | {p['substituted']} = {p['value']:,} "
                     f"{_check(p)} | {r['param_ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def networks_md(doc: dict) -> str:
    cols = ["data", "network", "form", "params", *KINDS, "FLOPs/step", "ms/step", "GFLOP/s", "test accuracy", "train loss"]
    lines = ["| " + " | ".join(cols) + " |", "|---|---|---|" + "---:|" * (len(cols) - 3)]
    for s in doc["points"]:
        if s["part"] != "forms":
            continue
        sp = s["s_per_step"]
        form = s["form"] + (f" (×{s['width_multiplier']:.3f} widths)" if s.get("width_multiplier") else "")
        lines.append("| " + " | ".join([
            s["data"], s["network"], form, f"{s['params']:,}", *(f"{s['by_kind'].get(k, 0):,}" for k in KINDS),
            f"{s['flops_per_step'] / 1e6:,.1f} M", f"{1000 * sp['mean']:.2f}" if sp else "—",
            f"{s['gflops_per_s']:.2f}" if s.get("gflops_per_s") else "—", fmt_ms(s["test_accuracy"]),
            fmt_ms(s["train_loss"])]) + " |")
    return "\n".join(lines) + "\n"


def grouped_md(doc: dict) -> str:
    lines = ["| data | groups | kind | conv after the stem | params | FLOPs/step | ms/step | GFLOP/s | test accuracy |",
             "|---|---:|---|---|---:|---:|---:|---:|---|"]
    for s in doc["points"]:
        if s["part"] != "grouped":
            continue
        f, sp = s["conv_formula"], s["s_per_step"]
        lines.append(f"| {s['data']} | {s['groups']} | {f['kind']} | {f['substituted']} = {f['value']:,} {_check(f)} | "
                     f"{s['params']:,} | {s['flops_per_step'] / 1e6:,.1f} M | "
                     f"{1000 * sp['mean']:.2f} | {s['gflops_per_s']:.2f} | {fmt_ms(s['test_accuracy'])} |"
                     if sp else f"| {s['data']} | {s['groups']} | {f['kind']} | {f['substituted']} | {s['params']:,} | | | | |")
    return "\n".join(lines) + "\n"


def conv_sections(out_dir: Path, spec, doc: dict) -> list:
    from layerwise.jobs.studies.conv import (
        SEPARABLE_SYMBOLIC,
        STANDARD_SYMBOLIC,
        summary_lines,
    )
    from layerwise.report.html import Section

    doc["per_layer_symbolic"] = {"standard": STANDARD_SYMBOLIC, "separable": SEPARABLE_SYMBOLIC}
    forms = [s for s in doc["points"] if s["part"] == "forms"]
    first = [s for s in forms if s["data"] == spec.data[0]]
    labels = [f"{s['network']}\n{s['form']}" for s in first]
    kinds = [k for k in KINDS if any(s["by_kind"].get(k) for s in first)]
    png_kind = study_plots.plot_stacked_bars(labels, {k: [s["by_kind"].get(k, 0) for s in first] for k in kinds},
                                             out_dir / "conv-params-by-kind.png",
                                             f"parameters per kind, every network in every form ({spec.data[0]})")
    cats = [f"{d}/{n}" for d in spec.data for n in spec.networks]

    def by_form(key, scale=1.0):
        out = []
        for form in ("standard", "separable", "separable-budget"):
            vals = []
            for d in spec.data:
                for n in spec.networks:
                    s = next(x for x in forms if x["data"] == d and x["network"] == n and x["form"] == form)
                    v = s.get(key)
                    vals.append({"mean": v["mean"] * scale, "sd": v["sd"] * scale} if isinstance(v, dict)
                                else (v * scale if isinstance(v, (int, float)) else None))
            out.append((form, vals))
        return out

    png_acc = study_plots.plot_grouped_bars(
        [("test accuracy", cats, by_form("test_accuracy")), ("time per training step (ms)", cats, by_form("s_per_step", 1000.0)),
         ("achieved GFLOP/s", cats, by_form("gflops_per_s"))],
        out_dir / "conv-accuracy-time.png", f"standard vs depthwise-separable (mean ± sd over {spec.seeds} seeds)")
    grouped = [s for s in doc["points"] if s["part"] == "grouped"]
    series = {}
    for s in grouped:
        series.setdefault(s["data"], []).append(s)

    def g_series(key, scale=1.0):
        out = []
        for d, ps in series.items():
            ys = []
            for s in ps:
                v = s.get(key)
                ys.append({"mean": v["mean"] * scale, "sd": v["sd"] * scale} if isinstance(v, dict)
                          else ({"mean": v * scale, "sd": 0.0} if isinstance(v, (int, float)) else None))
            out.append({"label": d, "x": [s["groups"] for s in ps], "y": ys, "diverged": [False] * len(ps)})
        return out

    png_g = study_plots.plot_vs_depth(
        [("parameters", g_series("params")), ("training FLOPs per step", g_series("flops_per_step")),
         ("time per training step (ms)", g_series("s_per_step", 1000.0)), ("test accuracy", g_series("test_accuracy"))],
        out_dir / "conv-grouped.png", f"grouped 3×3 convolutions, width {32} (groups = C_in is depthwise)",
        log_y=(True, True, False, False), xlabel="groups")
    m = doc["metrics"]
    head = [f"`layerwise study conv`: {len(doc['points'])} networks × {spec.seeds} seeds, {spec.steps} steps each "
            f"(batch {spec.batch_size}, {spec.optimizer} lr {spec.lr:g}); {doc['seconds']:.0f} s on "
            f"{doc['machine']['cores']} cores ({doc['machine']['jobs']} process(es) × {doc['machine']['threads_per_job']} "
            "thread(s)).", ""]
    head += [f"- {line}" for line in summary_lines(doc)]
    return [
        Section("Convolutions: standard against depthwise-separable", markdown="\n".join(head) + "\n",
                data={k: v for k, v in m.items()}),
        Section("Per layer: the two formulas, substituted and checked", markdown=per_layer_md(doc),
                data={"per_layer": doc["per_layer"], "canonical": doc["canonical_layers"]}),
        Section("Whole networks, trained", markdown=networks_md(doc), images=[png_kind, png_acc],
                data=[{k: v for k, v in s.items() if k != "runs"} for s in forms]),
        Section("Grouped convolutions: groups = 1 … C_in", markdown=grouped_md(doc), images=[png_g],
                data=[{k: v for k, v in s.items() if k != "runs"} for s in grouped]),
    ]
