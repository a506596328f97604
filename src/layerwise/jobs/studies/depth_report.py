"""The depth study's plots, table and report sections."""

from __future__ import annotations

from pathlib import Path

from layerwise.report import study_plots


def fmt_ms(x: dict | None, digits: int = 3) -> str:
    if not x:
        return "—"
    return f"{x['mean']:.{digits}f} ± {x['sd']:.{digits}f}" if x.get("n", 1) > 1 else f"{x['mean']:.{digits}f}"


def fmt_ratio(x: dict | None) -> str:
    if not x:
        return "—"
    return f"{x['mean']:.3g}" + (f" ± {x['sd']:.2g}" if x.get("n", 1) > 1 else "")


def _flops(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def table_rows(doc: dict) -> list[list[str]]:
    """One row per point: the columns of :data:`COLUMNS`."""
    rows = []
    lm = doc["spec"]["family"] == "gpt"
    for s in doc["points"]:
        ms = s["s_per_step"]
        rows.append([
            s["data"], s["label"], str(s["depth"]), str(s["width"]) + (f" (ffn {s['ffn']})" if s.get("ffn") else ""),
            f"{s['params']:,}", str(s["weight_depth"]), _flops(s["flops_per_step"]),
            f"{1000 * ms['mean']:.2f}" if ms else "—",
            fmt_ms(s.get("train_loss")), fmt_ms(s.get("test_loss")),
            fmt_ms(s.get("test_perplexity"), 2) if lm else fmt_ms(s.get("test_accuracy")),
            fmt_ratio(s.get("grad_ratio_init")), s["status"],
        ])
        if lm:  # equal steps above; here equal training time (the fastest point's total)
            rows[-1].insert(-2, fmt_ms(s.get("train_loss_at_equal_time")))
    return rows


def columns(doc: dict) -> list[str]:
    lm = doc["spec"]["family"] == "gpt"
    cols = ["data", "configuration", "depth", "width", "params", "weight_depth", "FLOPs/step", "ms/step", "train loss",
            "test loss" if not lm else "val loss", "val perplexity" if lm else "test accuracy",
            "‖g_last‖/‖g_first‖ at init", "status"]
    if lm:
        t = next((s.get("equal_time_seconds") for s in doc["points"] if s.get("equal_time_seconds")), None)
        cols.insert(-2, f"train loss at {t:.0f} s of training" if t else "train loss at equal time")
    return cols


def markdown_table(doc: dict) -> str:
    cols = columns(doc)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(doc)]
    return "\n".join(lines) + "\n"


def _series(points: list[dict], key: str, scale: float = 1.0) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for s in points:
        groups.setdefault((s["data"], s["label"]), []).append(s)
    multi = len({s["data"] for s in points}) > 1
    out = []
    for (data, lab), ps in groups.items():
        ps = sorted(ps, key=lambda s: s["depth"])
        ys = []
        for s in ps:
            v = s.get(key)
            if isinstance(v, (int, float)):
                v = {"mean": v, "sd": 0.0}
            ys.append({"mean": v["mean"] * scale, "sd": v["sd"] * scale} if v else None)
        out.append({"label": f"{lab} ({data})" if multi else lab, "x": [s["depth"] for s in ps], "y": ys,
                    "diverged": [s["status"] == "diverged" for s in ps]})
    return out


def _seed0(doc: dict, point: dict) -> dict | None:
    runs = {r["key"]: r for r in doc["runs"]}
    return next((runs[k] for k in point["runs"] if k in runs), None)


def _heatmap_panels(doc: dict) -> list[dict]:
    from layerwise.jobs.studies.depth import PLAIN_SIGMOID, RESIDUAL_NORM, _find

    spec = doc["spec"]
    data, deepest = spec["data"][0], spec["depths"][-1]
    if spec["family"] == "gpt":
        wanted = [("GPT", {}, deepest), ("GPT", {}, spec["depths"][0])]
    else:
        wanted = [("plain sigmoid", PLAIN_SIGMOID, deepest), ("ReLU + residual + norm", RESIDUAL_NORM[spec["family"]], deepest)]
    panels = []
    for name, config, depth in wanted:
        p = _find(doc["points"], data, config, depth)
        run = _seed0(doc, p) if p else None
        if run is None:
            continue
        g = run["grad"]
        panels.append({"title": f"{name}, depth {depth} (seed {run['seed']}, {p['status']})", "layers": g["layers"],
                       "steps": g["steps"], "norms": g["grad_norm"]})
    return panels


def depth_sections(out_dir: Path, spec, doc: dict) -> list:
    """Write the four plots into ``out_dir``; return the report's sections."""
    from layerwise.report.html import Section

    fam = spec.family
    points = doc["points"]
    lm = fam == "gpt"
    acc_key, acc_label = ("test_loss", "validation loss") if lm else ("test_accuracy", "test accuracy")
    what = f"{fam} on {', '.join(spec.data)}" + (f", budget {spec.budget:,} parameters" if spec.budget else f", width {spec.width}")
    png_acc = study_plots.plot_vs_depth(
        [(f"final {acc_label}", _series(points, acc_key)), ("final train loss", _series(points, "train_loss"))],
        out_dir / "depth-accuracy.png", f"{what}: accuracy and loss against depth (mean ± sd over {spec.seeds} seeds)")
    heat = _heatmap_panels(doc)
    images = [png_acc]
    if heat:
        images.append(study_plots.plot_grad_heatmaps(heat, out_dir / "grad-heatmap.png",
                                                     "log10 gradient norm per weight layer during training"))
    groups = []
    by_label: dict[str, list[dict]] = {}
    for s in points:
        if s["data"] == spec.data[0] and s.get("grad_at_init"):
            by_label.setdefault(s["label"], []).append(s)
    for lab, ps in by_label.items():
        groups.append({"label": lab, "lines": [{"depth": s["depth"], "norms": [g["mean"] if g else None for g in s["grad_at_init"]]}
                                               for s in sorted(ps, key=lambda s: s["depth"])]})
    images.append(study_plots.plot_grad_init(groups, out_dir / "grad-init.png",
                                             f"gradient norm per weight layer at initialisation ({spec.data[0]}, mean over seeds)"))
    images.append(study_plots.plot_vs_depth(
        [("time per training step (ms)", _series(points, "s_per_step", 1000.0)),
         ("training FLOPs per step", _series(points, "flops_per_step"))],
        out_dir / "depth-cost.png", f"{what}: cost against depth (batch {spec.batch_size})", log_y=(True, False)))
    m = doc["metrics"]
    md = [f"`layerwise study depth --family {fam}`: {len(points)} points × {spec.seeds} seeds, {spec.steps} steps "
          f"each (batch {spec.batch_size}, {spec.optimizer} lr {spec.lr:g}), gradients logged every {spec.grad_every} steps; "
          f"{doc['seconds']:.0f} s on {doc['machine']['cores']} cores ({doc['machine']['jobs']} process(es) × "
          f"{doc['machine']['threads_per_job']} thread(s)).", ""]
    md += _metrics_md(m)
    sections = [Section(f"Depth study: {what}", markdown="\n".join(md), data={"metrics": m, "spec": doc["spec"]}),
                Section("Every point (mean ± sd over seeds)", markdown=markdown_table(doc),
                        data=[{k: v for k, v in s.items() if k != "runs"} for s in points]),
                Section("Plots", images=images,
                        markdown="Accuracy and loss against depth (a red × marks a point that diverged in every seed); "
                                 "the gradient norm of every weight layer through training for the deepest nets; the "
                                 "gradient norm per layer at initialisation, a line per depth; time and FLOPs per step.")]
    sections.append(_roles_section(doc))
    return sections


def _metrics_md(m: dict) -> list[str]:
    lines = []
    if m.get("grad_ratio_plain_sigmoid") is not None or m.get("grad_ratio_residual_relu_norm") is not None:
        lines += [f"Gradient norm of the last weight layer ÷ the first's, at initialisation, depth {m['deepest_depth']} "
                  f"({m['data']}, mean over seeds):", "",
                  f"- plain sigmoid: **{_g(m.get('grad_ratio_plain_sigmoid'))}**",
                  f"- ReLU + residual + norm: **{_g(m.get('grad_ratio_residual_relu_norm'))}**", ""]
    if m.get("grad_ratio_gpt") is not None:
        lines += [f"GPT, depth {m['deepest_depth']}: last ÷ first weight layer's gradient norm at initialisation "
                  f"**{_g(m['grad_ratio_gpt'])}**", ""]
    for key in ("depth_effect_plain_sigmoid", "depth_effect_residual_relu_norm"):
        t = m.get(key)
        if not t:
            continue
        verdict = "trains measurably worse" if t["deep_trains_worse"] else "does not train measurably worse"
        gap = f"{t['gap']:+.3f} (margin {t['margin']:.3f})" if t.get("gap") is not None else "the deep net diverged"
        lines.append(f"- {t['config']}: depth {t['deep_depth']} {verdict} than depth {t['shallow_depth']}: final train loss "
                     f"{fmt_ms(t['deep_train_loss'])} against {fmt_ms(t['shallow_train_loss'])}, gap {gap}; test accuracy "
                     f"{fmt_ms(t['deep_test_accuracy'])} against {fmt_ms(t['shallow_test_accuracy'])}")
    if m.get("diverged_points"):
        lines += ["", "Diverged (NaN/inf or an exploding loss; the sweep went on): " + "; ".join(m["diverged_points"])]
    return lines


def _g(x) -> str:
    return "—" if x is None else f"{x:.4g}"


def _roles_section(doc: dict):
    from layerwise.report.html import Section

    spec = doc["spec"]
    deepest = [s for s in doc["points"] if s["depth"] == spec["depths"][-1] and s["data"] == spec["data"][0]]
    shallow = [s for s in doc["points"] if s["depth"] == spec["depths"][0] and s["data"] == spec["data"][0]]
    lines = ["Where the parameters live as the network deepens: the input layer (the first weight layer on the data "
             "path, embeddings included), the hidden layers, and the output layer (the head).", "",
             "| configuration | depth | params | input | hidden | output |", "|---|---:|---:|---:|---:|---:|"]
    for s in shallow[:1] + deepest[:1]:
        r, n = s["by_role"], s["params"]
        lines.append(f"| {s['label']} | {s['depth']} | {n:,} | " + " | ".join(
            f"{r[k]:,} ({100 * r[k] / n:.1f}%)" for k in ("input", "hidden", "output")) + " |")
    return Section("Input, hidden and output layers", markdown="\n".join(lines) + "\n",
                   data=[{"label": s["label"], "depth": s["depth"], "by_role": s["by_role"], "by_kind": s["by_kind"]}
                         for s in shallow[:1] + deepest[:1]])
