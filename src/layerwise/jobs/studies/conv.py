"""``layerwise study conv``: a standard convolution against a depthwise-separable one
(and grouped ones), parameter by parameter, FLOP by FLOP, millisecond by millisecond.

- **Per layer**: every K×K convolution that the separable form replaces, with both
  formulas substituted -- standard K²·C_in·C_out + C_out, separable K²·C_in + C_in
  (depthwise, with its bias) + C_in·C_out + C_out (pointwise) -- checked against the
  tensors' numel, the forward FLOPs of each (from the analysis' trace), and the ratios;
  plus the same at canonical shapes (3×3, C_in = C_out = 32 … 512), where the ratio
  tends to K² (the separable count is 1/C_out + 1/K² of the standard one, biases aside).
- **Whole networks** -- the seed article's MNIST CNN, a VGG-style stack and a
  MobileNet-style stack -- in three forms, trained on mnist-5k and digits:
  ``standard``; ``separable`` at the same depth and widths; ``separable-budget`` widened
  (every conv width times one multiplier) to the standard form's parameter count (within
  2% when a width exists for it). Accuracy, parameters per kind (conv, depthwise,
  pointwise, norm, mlp, head), training FLOPs per step and the measured time per step,
  so the FLOPs a depthwise conv saves can be set against the time it takes on this CPU.
- **Grouped convolutions**: the VGG-style stack at a constant width of 32 with
  groups = 1, 2, 4, …, 32 (= C_in: depthwise) in every conv after the stem.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from layerwise.analysis import analyze
from layerwise.analysis.formulas import formula
from layerwise.analysis.kinds import conv_kind
from layerwise.errors import ConfigError
from layerwise.jobs.studies import point as P
from layerwise.jobs.studies import sweep
from layerwise.jobs.studies.depth import mean_sd
from layerwise.models.registry import build, get_config

NETWORKS = ("seed", "vgg", "mobilenet")
FORMS = ("standard", "separable", "separable-budget")
GROUPED_WIDTH = 32
CANONICAL = (32, 64, 128, 256, 512)
# K² is the kernel's area (K_h·K_w); the substituted forms come from layerwise.analysis.formulas.
STANDARD_SYMBOLIC = "K²·C_in·C_out + C_out"
SEPARABLE_SYMBOLIC = "K²·C_in + C_in (depthwise) + C_in·C_out + C_out (pointwise)"


@dataclass
class ConvSpec:
    data: tuple[str, ...]
    networks: tuple[str, ...]
    seeds: int
    steps: int
    batch_size: int
    lr: float
    optimizer: str = "adam"
    quick: bool = False

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def conv_spec(data: list[str] | None = None, networks: list[str] | None = None, seeds: int | None = None,
              steps: int | None = None, batch_size: int | None = None, lr: float | None = None,
              quick: bool = False) -> ConvSpec:
    networks = tuple(networks) if networks else NETWORKS
    for n in networks:
        if n not in NETWORKS:
            raise ConfigError(f"--networks: unknown network {n!r}; expected some of {', '.join(NETWORKS)}")
    data = tuple(data) if data else (("digits",) if quick else ("mnist-5k", "digits"))
    for d in data:
        if d == "shakespeare-1m" or d.endswith(".txt"):
            raise ConfigError(f"--data: the conv study trains image classifiers (mnist-5k, digits), got {d}")
    for name, v in (("--seeds", seeds), ("--steps", steps), ("--batch-size", batch_size)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ConfigError(f"{name}: expected an integer >= 1, got {v!r}")
    return ConvSpec(data=data, networks=tuple(dict.fromkeys(networks)), seeds=seeds or (1 if quick else 3),
                    steps=steps or (10 if quick else 300), batch_size=batch_size or 64, lr=lr or 1e-3, quick=quick)


# ---------------------------------------------------------------- the networks


def _w(c: int, m: float) -> int:
    return max(1, round(c * m))


def layers(network: str, size: int, m: float = 1.0) -> list[str]:
    """The plain-CNN layer specs of ``network`` for ``size``×``size`` images, conv widths × ``m``."""
    if network == "seed":  # the seed article's Keras MNIST CNN ('same' padding on 8×8 digits)
        pad = "" if size >= 28 else ":same"
        return [f"conv:{_w(32, m)}:k3{pad}", "maxpool:2", f"conv:{_w(64, m)}:k3{pad}", "maxpool:2", "flatten", "dense:64"]
    if network == "vgg":  # three VGG stages of two 3×3 convs
        out = []
        for i, c in enumerate((16, 32, 64)):
            out += [f"conv:{_w(c, m)}:k3:same"] * 2 + (["maxpool:2"] if i < 2 else [])
        return [*out, "gap"]
    if network == "grouped":  # the VGG layout at one width, so that every group count divides it
        w = _w(GROUPED_WIDTH, m)
        return [f"conv:{w}:k3:same"] * 2 + ["maxpool:2"] + [f"conv:{w}:k3:same"] * 2 + ["maxpool:2"] + \
            [f"conv:{w}:k3:same"] * 2 + ["gap"]
    if network == "mobilenet":  # MobileNet-v1's pattern: stride-2 convs widen, stride-1 ones keep
        return [f"conv:{_w(16, m)}:k3:s2:p1", f"conv:{_w(32, m)}:k3:p1", f"conv:{_w(64, m)}:k3:s2:p1",
                f"conv:{_w(64, m)}:k3:p1", f"conv:{_w(128, m)}:k3:s2:p1", f"conv:{_w(128, m)}:k3:p1", "gap"]
    raise ConfigError(f"unknown network {network!r}")


def model_config(network: str, shape: dict, conv_type: str, m: float = 1.0, groups: int = 1) -> dict:
    return {"family": "cnn", "arch": "plain", "layers": layers(network, shape["size"], m), "conv_type": conv_type,
            "groups": groups, "batchnorm": network == "mobilenet", "in_channels": shape["channels"],
            "image_size": shape["size"], "num_classes": shape["classes"]}


def _params(cfg: dict) -> int:
    return sum(p.numel() for p in build(get_config(cfg), device="meta").parameters())


def widen_to(network: str, shape: dict, target: int) -> tuple[float, int]:
    """The width multiplier (>= 1) of the separable form whose parameters are closest to
    ``target``, and that count."""
    def count(m: float) -> int:
        return _params(model_config(network, shape, "depthwise_separable", m))

    lo, hi = 1.0, 2.0
    while count(hi) < target and hi < 64:
        lo, hi = hi, hi * 2
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    best = min((lo, hi), key=lambda m: abs(count(m) - target))
    return best, count(best)


def _shape(data: str) -> dict:
    ds, _, _ = P.image_parts(data)
    c, h, _ = ds.images.shape[1:]
    return {"channels": int(c), "size": int(h), "classes": ds.num_classes}


def plan_points(spec: ConvSpec) -> list[dict]:
    points = []
    for data in spec.data:
        shape = _shape(data)
        for net in spec.networks:
            std = model_config(net, shape, "standard")
            target = _params(std)
            m, n = widen_to(net, shape, target)
            for form, cfg, extra in (("standard", std, {}),
                                     ("separable", model_config(net, shape, "depthwise_separable"), {}),
                                     ("separable-budget", model_config(net, shape, "depthwise_separable", m),
                                      {"width_multiplier": m, "budget": target,
                                       "within_2pct": abs(n - target) <= 0.02 * target})):
                points.append({"id": f"{data}/{net}/{form}", "part": "forms", "data": data, "network": net, "form": form,
                               "model": cfg, **extra})
        c_in = GROUPED_WIDTH
        groups = [g for g in (2 ** i for i in range(int(math.log2(c_in)) + 1))]
        for g in groups:
            cfg = model_config("grouped", shape, "standard" if g == 1 else "grouped", groups=g)
            conv = build(get_config(cfg), device="meta").body[2]  # the first conv after the stem (and its activation)
            f = formula(conv)
            points.append({"id": f"{data}/grouped/groups={g}", "part": "grouped", "data": data, "network": "grouped",
                           "form": f"groups={g}", "groups": g, "model": cfg,
                           "conv_formula": {"symbolic": f.symbolic, "substituted": f.substituted, "value": f.value,
                                            "numel": sum(p.numel() for p in conv.parameters()), "kind": conv_kind(conv)}})
    return points


def units(spec: ConvSpec, points: list[dict]) -> list[dict]:
    out = []
    for p in points:
        for seed in range(spec.seeds):
            train = {"steps": spec.steps, "batch_size": spec.batch_size, "lr": spec.lr, "optimizer": spec.optimizer,
                     "seed": seed, "device": "cpu", "log_every": max(1, spec.steps // 10), "out_dir": None}
            out.append({"key": f"{p['id']}/seed={seed}", "point": p["id"], "task": "image", "data": p["data"],
                        "model": p["model"], "train": train, "grad_every": spec.steps})
    return out


# ---------------------------------------------------------------- per layer


def _sep_formula(dw: nn.Conv2d, pw: nn.Conv2d) -> dict:
    fd, fp = formula(dw), formula(pw)
    return {"symbolic": SEPARABLE_SYMBOLIC, "substituted": f"{fd.substituted} + {fp.substituted}",
            "value": fd.value + fp.value, "numel": sum(p.numel() for p in (*dw.parameters(), *pw.parameters()))}


def layer_comparison(network: str, shape: dict) -> list[dict]:
    """Each conv the separable form replaces: both formulas, numel, forward FLOPs, ratios."""
    std = build(get_config(model_config(network, shape, "standard")), device="meta")
    sep = build(get_config(model_config(network, shape, "depthwise_separable")), device="meta")
    a_std, a_sep = analyze(std), analyze(sep)
    out = []
    for (name, m), (_, s) in zip(std.body.named_children(), sep.body.named_children()):
        if not (isinstance(m, nn.Conv2d) and hasattr(s, "depthwise")):
            continue
        f = formula(m)
        fs = _sep_formula(s.depthwise, s.pointwise)
        flops_std = a_std.row(f"body.{name}").flops_total
        flops_sep = a_sep.row(f"body.{name}").flops_total
        k2 = m.kernel_size[0] * m.kernel_size[1]
        out.append({
            "layer": f"body.{name}", "kernel": list(m.kernel_size), "stride": list(m.stride), "c_in": m.in_channels,
            "c_out": m.out_channels, "input_shape": a_std.row(f"body.{name}").input_shape[0][0],
            "output_shape": a_std.row(f"body.{name}").output_shape,
            "standard": {"symbolic": STANDARD_SYMBOLIC, "substituted": f.substituted, "value": f.value,
                         "numel": sum(p.numel() for p in m.parameters())},
            "separable": fs, "flops_standard": flops_std, "flops_separable": flops_sep,
            "param_ratio": f.value / fs["value"], "flops_ratio": flops_std / flops_sep if flops_sep else None,
            "ratio_formula": f"1/C_out + 1/K² = 1/{m.out_channels} + 1/{k2} = {1 / m.out_channels + 1 / k2:.4f}",
        })
    return out


def canonical_layers() -> list[dict]:
    """3×3 convs C→C at canonical widths, standard against separable, from real modules."""
    out = []
    for c in CANONICAL:
        std = nn.Conv2d(c, c, 3, padding=1, device="meta")
        dw, pw = nn.Conv2d(c, c, 3, padding=1, groups=c, device="meta"), nn.Conv2d(c, c, 1, device="meta")
        f, fs = formula(std), _sep_formula(dw, pw)
        out.append({"c": c, "standard": {"symbolic": STANDARD_SYMBOLIC, "substituted": f.substituted, "value": f.value,
                                         "numel": sum(p.numel() for p in std.parameters())},
                    "separable": fs, "param_ratio": f.value / fs["value"]})
    return out


# ---------------------------------------------------------------- summaries


def summarise(points: list[dict], records: dict[str, dict]) -> list[dict]:
    by_point: dict[str, list[dict]] = {}
    for r in records.values():
        by_point.setdefault(r["key"].rsplit("/seed=", 1)[0], []).append(r)
    out = []
    for p in points:
        runs = sorted(by_point[p["id"]], key=lambda r: r["seed"])
        ok = [r for r in runs if r["status"] == "ok"]
        first = runs[0]
        s = {k: v for k, v in p.items() if k != "model"}
        s["layers"] = p["model"]["layers"]
        s.update({k: first[k] for k in ("params", "by_kind", "by_role", "weight_depth", "flops_forward", "flops_per_step")})
        s["status"] = "ok" if len(ok) == len(runs) else f"diverged in {len(runs) - len(ok)} of {len(runs)} seeds"
        for split in ("train", "test"):
            for metric in ("loss", "accuracy"):
                s[f"{split}_{metric}"] = mean_sd([(r.get(split) or {}).get(metric) for r in ok])
        s["s_per_step"] = mean_sd([r.get("s_per_step") for r in ok])
        sp = s["s_per_step"]
        s["gflops_per_s"] = s["flops_per_step"] / sp["mean"] / 1e9 if sp and sp["mean"] else None
        s["runs"] = [r["key"] for r in runs]
        out.append(s)
    return out


def _get(summary, data, network, form):
    return next((s for s in summary if s["data"] == data and s["network"] == network and s["form"] == form), None)


def conv_metrics(spec: ConvSpec, summary: list[dict], per_layer: dict) -> dict:
    """param_ratio: standard ÷ separable parameters of the convolutions the separable form
    replaces, at the same shape, in the first network; accuracy_gap_equal_budget:
    separable − standard test accuracy at an equal parameter budget (first network, first
    data set, mean over seeds); the same for every network and data set; per-FLOP speed."""
    net, data = spec.networks[0], spec.data[0]
    rows = per_layer[data][net]
    m: dict = {"network": net, "data": data,
               "param_ratio": sum(r["standard"]["value"] for r in rows) / sum(r["separable"]["value"] for r in rows)}
    gaps, whole, speed = {}, {}, {}
    for d in spec.data:
        for n in spec.networks:
            std, sep, bud = (_get(summary, d, n, f) for f in FORMS)
            key = f"{d}/{n}"
            whole[key] = std["params"] / sep["params"]
            if std.get("test_accuracy") and bud.get("test_accuracy"):
                gaps[key] = bud["test_accuracy"]["mean"] - std["test_accuracy"]["mean"]
            if std.get("gflops_per_s") and sep.get("gflops_per_s"):
                speed[key] = {"standard_gflops_per_s": std["gflops_per_s"], "separable_gflops_per_s": sep["gflops_per_s"],
                              "standard_ms_per_step": 1000 * std["s_per_step"]["mean"],
                              "separable_ms_per_step": 1000 * sep["s_per_step"]["mean"],
                              "flops_ratio": std["flops_per_step"] / sep["flops_per_step"],
                              "time_ratio": std["s_per_step"]["mean"] / sep["s_per_step"]["mean"],
                              "slower_per_flop": std["gflops_per_s"] / sep["gflops_per_s"]}
    m["accuracy_gap_equal_budget"] = gaps.get(f"{data}/{net}")
    m["accuracy_gap_equal_budget_by"] = gaps
    m["param_ratio_whole_network"] = whole
    m["param_ratio_by_network"] = {n: sum(r["standard"]["value"] for r in per_layer[data][n]) /
                                   sum(r["separable"]["value"] for r in per_layer[data][n]) for n in spec.networks}
    m["speed"] = speed
    return m


def summary_lines(doc: dict) -> list[str]:
    m = doc["metrics"]
    lines = [f"metrics.param_ratio = {m['param_ratio']:.3f} (standard ÷ separable, the replaced convs of the "
             f"{m['network']} network)"]
    if m.get("accuracy_gap_equal_budget") is not None:
        lines.append(f"metrics.accuracy_gap_equal_budget = {m['accuracy_gap_equal_budget']:+.4f} (separable − standard "
                     f"test accuracy at equal parameters, {m['network']} on {m['data']})")
    for key, s in m["speed"].items():
        lines.append(f"{key}: standard {s['standard_ms_per_step']:.1f} ms/step ({s['standard_gflops_per_s']:.2f} GFLOP/s), "
                     f"separable {s['separable_ms_per_step']:.1f} ms/step ({s['separable_gflops_per_s']:.2f} GFLOP/s): "
                     f"{s['flops_ratio']:.1f}× fewer FLOPs, {s['time_ratio']:.2f}× the speed, "
                     f"{s['slower_per_flop']:.1f}× slower per FLOP")
    return lines


# ---------------------------------------------------------------- the job


def run_conv_study(out_dir: str | Path, spec: ConvSpec, resume: bool = False, overwrite: bool = False, jobs: int = 1,
                   threads: int | None = None, argv: list[str] | None = None, on_done: Callable | None = None,
                   emit: Callable[[str], None] = lambda line: None) -> dict:
    """Run the study into ``out_dir``; returns the results document (also ``results.json``)
    and writes the plots, the report sections and ``report.html``."""
    from layerwise.jobs.studies.conv_report import conv_sections
    from layerwise.rundir import check_run

    command = "study-conv"
    check_run(out_dir, command, resume=resume, overwrite=overwrite)
    t0 = time.perf_counter()
    points = plan_points(spec)
    per_layer = {d: {n: layer_comparison(n, _shape(d)) for n in spec.networks} for d in spec.data}
    todo = units(spec, points)

    def finish(records: dict, n_threads: int):
        summary = summarise(points, records)
        doc = {"study": "conv", "spec": spec.to_dict(), "seconds": time.perf_counter() - t0,
               "machine": {"cores": sweep.cores(), "jobs": jobs, "threads_per_job": n_threads},
               "metrics": conv_metrics(spec, summary, per_layer), "per_layer": per_layer,
               "canonical_layers": canonical_layers(), "points": summary, "runs": [records[u["key"]] for u in todo]}
        return doc, "study conv", conv_sections(Path(out_dir), spec, doc)

    return sweep.run_study(out_dir, command, spec.to_dict(), todo, P.run_unit, finish,
                           what=f"{len(points)} networks × {spec.seeds} seeds", quick=spec.quick, resume=resume,
                           overwrite=overwrite, jobs=jobs, threads=threads, argv=argv, on_done=on_done, emit=emit)
