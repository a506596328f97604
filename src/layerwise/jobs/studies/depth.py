"""``layerwise study depth``: what depth does to learning, measured.

Depth sweeps over a list of depths (hidden layers) at a fixed width -- or, with a
parameter budget, with the width chosen at each depth so that the parameter count stays
within 2% of the budget -- for three families:

- ``mlp``: Linear layers of one width on mnist-5k (or digits), flattened images in;
- ``cnn``: a 3×3 'same' conv stem, a 2×2 max pool, then depth − 1 more 3×3 convs of the
  same width, global average pooling and the head (plain or residual) on mnist-5k;
- ``gpt``: a character-level GPT on shakespeare-1m (pre-norm residual blocks with
  LayerNorm; n_layer = depth), by default at a fixed budget of 0.8 M parameters.

Axes, crossed (``--grid`` picks them and their values): activation (sigmoid, tanh, relu,
gelu), residual (off, on), normalisation (none, batchnorm, layernorm; the CNN has none and
batchnorm), initialisation (default, xavier, kaiming). An axis left out of the grid keeps
its baseline value (relu, off, none, default). Depth d means d hidden layers: the MLP has
d hidden Linears and the head (weight_depth d + 1), the CNN d convs and the head.

For every point and seed: parameters (per kind and per role), weight_depth, FLOPs per
training step, measured time per step, final train and test loss and accuracy, and the
gradient norm ‖∂J/∂W‖ and update/weight ratio ‖ΔW‖/‖W‖ of every weight layer at
initialisation and every k steps. Points are summarised as mean ± sd over the seeds.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from layerwise.errors import ConfigError
from layerwise.jobs.studies import point as P
from layerwise.jobs.studies import sweep
from layerwise.models.registry import build, get_config

FAMILIES = ("mlp", "cnn", "gpt")
AXES = {
    "activation": ("sigmoid", "tanh", "relu", "gelu"),
    "residual": ("off", "on"),
    "norm": ("none", "batchnorm", "layernorm"),
    "init": ("default", "xavier", "kaiming"),
}
BASELINE = {"activation": "relu", "residual": "off", "norm": "none", "init": "default"}
FAMILY_NORMS = {"mlp": ("none", "batchnorm", "layernorm"), "cnn": ("none", "batchnorm")}
# What the deep-net claims compare: a plain sigmoid net against a ReLU net with residual
# connections and normalisation (LayerNorm for the MLP, BatchNorm for the CNN).
PLAIN_SIGMOID = {"activation": "sigmoid", "residual": "off", "norm": "none", "init": "default"}
RESIDUAL_NORM = {"mlp": {"activation": "relu", "residual": "on", "norm": "layernorm", "init": "default"},
                 "cnn": {"activation": "relu", "residual": "on", "norm": "batchnorm", "init": "default"}}
BUDGET_TOLERANCE = 0.02


@dataclass(frozen=True)
class FamilyDefaults:
    data: tuple[str, ...]
    depths: tuple[int, ...]
    width: int
    grid: str
    steps: int
    batch_size: int
    lr: float
    budget: int | None = None
    quick_depths: tuple[int, ...] = (2, 8)
    quick_steps: int = 30
    quick_budget: int | None = None


DEFAULTS = {
    "mlp": FamilyDefaults(("mnist-5k",), (1, 2, 4, 8, 16, 32), 64, "activation=sigmoid/relu,residual,norm=none/layernorm",
                          steps=300, batch_size=64, lr=1e-3),
    "cnn": FamilyDefaults(("mnist-5k",), (1, 2, 4, 8, 16, 32), 16, "activation=sigmoid/relu,residual,norm=none/batchnorm",
                          steps=200, batch_size=64, lr=1e-3),
    "gpt": FamilyDefaults(("shakespeare-1m",), (1, 2, 4, 8, 16), 128, "", steps=300, batch_size=16, lr=1e-3,
                          budget=800_000, quick_depths=(1, 2), quick_steps=10, quick_budget=100_000),
}
GPT_HEADS = 4  # n_embd is a multiple of it; the MLP width (intermediate_size) takes up the rest of a budget
GPT_BLOCK = 64


@dataclass
class DepthSpec:
    """Everything that decides a depth study's results (what ``--resume`` must match)."""

    family: str
    data: tuple[str, ...]
    depths: tuple[int, ...]
    width: int
    grid: dict[str, tuple[str, ...]]
    budget: int | None
    seeds: int
    steps: int
    batch_size: int
    lr: float
    optimizer: str = "adam"
    grad_every: int = 20
    quick: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["grid"] = {k: list(v) for k, v in self.grid.items()}
        return json.loads(json.dumps(d))


def parse_grid(text: str, family: str) -> dict[str, tuple[str, ...]]:
    """``"activation=sigmoid/relu,residual,norm"`` → the axes and their values (an axis
    without ``=`` takes all its values). One-line errors name ``--grid``."""
    if family == "gpt":
        if text.strip():
            raise ConfigError("--grid: the gpt family has no axes (its blocks are pre-norm residual with LayerNorm "
                              "and GELU); leave --grid out")
        return {}
    if not text.strip():
        raise ConfigError(f"--grid: empty grid; expected axes such as 'activation=sigmoid/relu,residual' "
                          f"(axes: {', '.join(AXES)})")
    out: dict[str, tuple[str, ...]] = {}
    for part in text.split(","):
        part = part.strip()
        name, _, values = part.partition("=")
        name = name.strip()
        if name not in AXES:
            raise ConfigError(f"--grid: unknown axis {name!r}; expected some of {', '.join(AXES)}")
        if name in out:
            raise ConfigError(f"--grid: axis {name!r} given twice")
        allowed = FAMILY_NORMS[family] if name == "norm" else AXES[name]
        vals = tuple(v.strip() for v in values.replace("|", "/").split("/")) if "=" in part else allowed
        if not vals or any(not v for v in vals):
            raise ConfigError(f"--grid: axis {name!r} has an empty value list; expected e.g. "
                              f"{name}={'/'.join(allowed[:2])}")
        for v in vals:
            if v not in allowed:
                raise ConfigError(f"--grid: {name}={v} is not available for the {family} family; "
                                  f"expected one of {', '.join(allowed)}")
        out[name] = tuple(dict.fromkeys(vals))
    return out


def depth_spec(family: str = "mlp", data: list[str] | None = None, depths: list[int] | None = None,
               width: int | None = None, grid: str | None = None, budget: int | None = None, seeds: int | None = None,
               steps: int | None = None, batch_size: int | None = None, lr: float | None = None,
               optimizer: str = "adam", grad_every: int = 20, quick: bool = False) -> DepthSpec:
    """A validated :class:`DepthSpec` from the command's flags (None: the family's default;
    ``quick``: 2 depths, 1 seed, a few steps)."""
    from layerwise.train.config import OPTIMIZERS

    if family not in FAMILIES:
        raise ConfigError(f"--family: expected one of {', '.join(FAMILIES)}, got {family!r}")
    d = DEFAULTS[family]
    data = tuple(data) if data else d.data
    depths = tuple(depths) if depths else (d.quick_depths if quick else d.depths)
    if not depths:
        raise ConfigError("--depths: expected at least one depth")
    bad = [x for x in depths if not isinstance(x, int) or isinstance(x, bool) or x < 1]
    if bad:
        raise ConfigError(f"--depths: expected positive integers (hidden layers), got {bad[0]!r}")
    depths = tuple(sorted(set(depths)))
    for name, v in (("--width", width), ("--seeds", seeds), ("--steps", steps), ("--batch-size", batch_size),
                    ("--budget", budget), ("--grad-every", grad_every)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ConfigError(f"{name}: expected an integer >= 1, got {v!r}")
    if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"--lr: expected a number > 0, got {lr!r}")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"--optimizer: expected one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if family == "gpt" and any(x not in ("shakespeare-1m",) and not x.endswith(".txt") for x in data):
        raise ConfigError(f"--data: the gpt family trains on a text corpus (shakespeare-1m or a .txt file), got {', '.join(data)}")
    if family != "gpt" and any(x == "shakespeare-1m" or x.endswith(".txt") for x in data):
        raise ConfigError(f"--data: the {family} family trains on labelled images (mnist-5k, digits), got {', '.join(data)}")
    if budget is None and width is None:
        budget = d.quick_budget if (quick and d.budget) else d.budget
    return DepthSpec(
        family=family, data=data, depths=depths, width=width or d.width,
        grid=parse_grid(d.grid if grid is None else grid, family), budget=budget,
        seeds=1 if quick and seeds is None else (seeds or 3), steps=steps or (d.quick_steps if quick else d.steps),
        batch_size=batch_size or d.batch_size, lr=lr or d.lr, optimizer=optimizer, grad_every=grad_every, quick=quick,
    )


# ---------------------------------------------------------------- the points


def configurations(spec: DepthSpec) -> list[dict[str, str]]:
    """Every crossing of the grid's axes; axes outside the grid keep their baseline value."""
    if spec.family == "gpt":
        return [{}]
    names = list(spec.grid)
    return [{**BASELINE, **dict(zip(names, combo))} for combo in itertools.product(*(spec.grid[n] for n in names))]


def label(config: dict[str, str]) -> str:
    """'sigmoid', 'relu +res +layernorm', 'tanh xavier init' ..."""
    if not config:
        return "gpt"
    parts = [config["activation"]]
    if config["residual"] == "on":
        parts.append("+res")
    if config["norm"] != "none":
        parts.append("+" + config["norm"])
    if config["init"] != "default":
        parts.append(f"{config['init']} init")
    return " ".join(parts)


def _data_shape(spec: DepthSpec, data: str) -> dict:
    if spec.family == "gpt":
        _, tok = P.text_tokenizer(data)
        return {"vocab_size": tok.vocab_size}
    ds, _, _ = P.image_parts(data)
    c, h, w = ds.images.shape[1:]
    return {"channels": int(c), "size": int(h), "features": int(c * h * w), "classes": ds.num_classes}


def model_config(spec: DepthSpec, shape: dict, config: dict, depth: int, width: int, ffn: int | None = None) -> dict:
    """The model config dict of one point."""
    if spec.family == "mlp":
        return {"family": "mlp", "sizes": [shape["features"], *([width] * depth), shape["classes"]],
                "activation": config["activation"], "norm": None if config["norm"] == "none" else config["norm"],
                "residual": config["residual"] == "on" and depth >= 2, "init": config["init"]}
    if spec.family == "cnn":
        spec_w = f"conv:{width}:k3:same"
        return {"family": "cnn", "arch": "plain", "layers": [spec_w, "maxpool:2", *([spec_w] * (depth - 1)), "gap"],
                "activation": config["activation"], "batchnorm": config["norm"] == "batchnorm",
                "residual": config["residual"] == "on" and depth >= 2, "init": config["init"],
                "in_channels": shape["channels"], "image_size": shape["size"], "num_classes": shape["classes"]}
    return {"family": "gpt", "vocab_size": shape["vocab_size"], "block_size": GPT_BLOCK, "n_layer": depth,
            "n_head": GPT_HEADS, "n_embd": width, "intermediate_size": ffn, "mlp": "gelu", "dropout": 0.0}


def _params(cfg: dict) -> int:
    m = build(get_config(cfg), device="meta")
    return sum(p.numel() for p in {id(p): p for p in m.parameters()}.values())


def _search(count: Callable[[int], int], target: int, low: int, step: int = 1) -> int:
    """The width (a multiple of ``step``, >= low) whose count is closest to ``target``;
    ``count`` grows with the width."""
    lo, hi = low, low
    while count(hi) < target:
        lo, hi = hi, hi * 2
    while hi - lo > step:  # count(lo) < target <= count(hi), or lo == hi == low
        mid = (lo + hi) // 2 // step * step
        if mid <= lo:
            break
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    return min((lo, hi), key=lambda w: abs(count(w) - target))


def fit_budget(spec: DepthSpec, shape: dict, config: dict, depth: int) -> tuple[int, int | None, int]:
    """(width, MLP width of a GPT or None, parameters) closest to ``spec.budget`` at ``depth``.

    Raises a one-line error naming ``--budget`` when even the narrowest network is over it,
    or when no width lands within 2% of it."""
    budget = spec.budget
    low = GPT_HEADS if spec.family == "gpt" else 1
    narrowest = _params(model_config(spec, shape, config, depth, low, 1 if spec.family == "gpt" else None))
    if narrowest > budget * (1 + BUDGET_TOLERANCE):
        raise ConfigError(f"--budget {budget:,}: too small for depth {depth}: the narrowest {spec.family} (width {low}) "
                          f"already has {narrowest:,} parameters")
    if spec.family != "gpt":
        w = _search(lambda w: _params(model_config(spec, shape, config, depth, w)), budget, 1)
        ffn, n = None, _params(model_config(spec, shape, config, depth, w))
    else:
        w = _search(lambda w: _params(model_config(spec, shape, config, depth, w)), budget, GPT_HEADS, GPT_HEADS)
        # The MLP width is linear in the count: solve for it at this n_embd.
        p1 = _params(model_config(spec, shape, config, depth, w, 1))
        p2 = _params(model_config(spec, shape, config, depth, w, 2))
        ffn = max(1, round(1 + (budget - p1) / (p2 - p1)))
        n = _params(model_config(spec, shape, config, depth, w, ffn))
    if abs(n - budget) > BUDGET_TOLERANCE * budget:
        raise ConfigError(f"--budget {budget:,}: no width of a depth-{depth} {spec.family} lands within 2% "
                          f"(closest: width {w}, {n:,} parameters)")
    return w, ffn, n


def point_id(data: str, config: dict, depth: int) -> str:
    axes = ",".join(f"{k}={v}" for k, v in config.items()) or "gpt"
    return f"{data}/{axes}/depth={depth}"


def plan_points(spec: DepthSpec) -> list[dict]:
    """Every point of the study with its model config (widths fitted to the budget)."""
    points = []
    for data in spec.data:
        shape = _data_shape(spec, data)
        for config in configurations(spec):
            for depth in spec.depths:
                ffn = None
                if spec.budget is not None:
                    width, ffn, _ = fit_budget(spec, shape, config, depth)
                else:
                    width = spec.width
                points.append({"id": point_id(data, config, depth), "data": data, "config": config, "label": label(config),
                               "depth": depth, "width": width, "ffn": ffn,
                               "model": model_config(spec, shape, config, depth, width, ffn)})
    return points


def units(spec: DepthSpec, points: list[dict]) -> list[dict]:
    out = []
    for p in points:
        for seed in range(spec.seeds):
            train = {"steps": spec.steps, "batch_size": spec.batch_size, "lr": spec.lr, "optimizer": spec.optimizer,
                     "seed": seed, "device": "cpu", "log_every": spec.grad_every, "out_dir": None}
            unit = {"key": f"{p['id']}/seed={seed}", "point": p["id"], "task": "lm" if spec.family == "gpt" else "image",
                    "data": p["data"], "model": p["model"], "train": train, "grad_every": spec.grad_every}
            if spec.family == "mlp":
                unit["input_shape"] = [p["model"]["sizes"][0]]
            out.append(unit)
    return out


# ---------------------------------------------------------------- summaries


def mean_sd(values: list[float]) -> dict | None:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return None
    return {"mean": statistics.fmean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def _loss_at(curve: list[dict], seconds: float) -> float | None:
    """The logged train loss at the last step whose cumulative training time is within ``seconds``."""
    inside = [c["loss"] for c in curve if c["train_seconds"] <= seconds * (1 + 1e-9)]
    return inside[-1] if inside else None


def summarise(points: list[dict], records: dict[str, dict]) -> list[dict]:
    """Each point with its facts and the mean ± sd over its seeds."""
    by_point: dict[str, list[dict]] = {}
    for r in records.values():
        by_point.setdefault(r["key"].rsplit("/seed=", 1)[0], []).append(r)
    runs_all = [r for r in records.values() if r["status"] == "ok" and r.get("curve")]
    equal_time = min((r["curve"][-1]["train_seconds"] for r in runs_all), default=None)
    out = []
    for p in points:
        runs = sorted(by_point.get(p["id"], []), key=lambda r: r["seed"])
        ok = [r for r in runs if r["status"] == "ok"]
        first = runs[0]
        s = {k: v for k, v in p.items() if k != "model"}
        s.update({k: first[k] for k in ("params", "by_kind", "by_role", "weight_depth", "block_depth", "flops_forward",
                                       "flops_per_step")})
        s["seeds"] = len(runs)
        s["diverged"] = len(runs) - len(ok)
        s["diverged_at"] = [r.get("steps") for r in runs if r["status"] != "ok"]
        s["status"] = "ok" if not s["diverged"] else ("diverged" if not ok else f"diverged in {s['diverged']} of {len(runs)} seeds")
        for split in ("train", "test"):
            for metric in ("loss", "accuracy", "perplexity"):
                if any(metric in (r.get(split) or {}) for r in ok):
                    s[f"{split}_{metric}"] = mean_sd([r[split].get(metric) for r in ok])
        s["s_per_step"] = mean_sd([r.get("s_per_step") for r in ok])
        s["grad_ratio_init"] = mean_sd([r.get("grad_ratio_init") for r in runs])
        inits = [r["grad_at_init"] for r in runs if r.get("grad_at_init")]
        s["grad_at_init"] = [mean_sd([g[i] for g in inits]) for i in range(len(inits[0]))] if inits else None
        s["layers"] = first["grad"]["layers"]
        if equal_time is not None:
            s["train_loss_at_equal_time"] = mean_sd([_loss_at(r["curve"], equal_time) for r in ok])
            s["equal_time_seconds"] = equal_time
        s["runs"] = [r["key"] for r in runs]
        out.append(s)
    return out


def _find(summary: list[dict], data: str, config: dict, depth: int) -> dict | None:
    for s in summary:
        if s["data"] == data and s["depth"] == depth and all(s["config"].get(k) == v for k, v in config.items()):
            return s
    return None


def _trend(summary: list[dict], spec: DepthSpec, config: dict) -> dict | None:
    """Deepest against shallowest for one configuration: train loss, test accuracy, and
    whether the deep net trains measurably worse (its train loss above the shallow one's
    by more than max(0.05, 2·√(sd_deep² + sd_shallow²)))."""
    data = spec.data[0]
    deep, shallow = _find(summary, data, config, spec.depths[-1]), _find(summary, data, config, spec.depths[0])
    if deep is None or shallow is None or len(spec.depths) < 2:
        return None
    d, sh = deep.get("train_loss"), shallow.get("train_loss")
    out = {"config": label(config), "deep_depth": deep["depth"], "shallow_depth": shallow["depth"],
           "deep_train_loss": d, "shallow_train_loss": sh,
           "deep_test_accuracy": deep.get("test_accuracy"), "shallow_test_accuracy": shallow.get("test_accuracy"),
           "deep_status": deep["status"]}
    if d is None or sh is None:  # the deep net diverged: it certainly trains worse
        out.update(gap=None, margin=None, deep_trains_worse=d is None and sh is not None)
        return out
    margin = max(0.05, 2 * math.hypot(d["sd"], sh["sd"]))
    out.update(gap=d["mean"] - sh["mean"], margin=margin, deep_trains_worse=d["mean"] - sh["mean"] > margin)
    return out


def study_metrics(spec: DepthSpec, summary: list[dict]) -> dict:
    """The headline numbers: the gradient ratios at initialisation of the deepest nets and
    whether depth hurts each configuration."""
    data, deepest = spec.data[0], spec.depths[-1]
    m: dict = {"deepest_depth": deepest, "data": data}
    if spec.family == "gpt":
        s = _find(summary, data, {}, deepest)
        m["grad_ratio_gpt"] = (s["grad_ratio_init"] or {}).get("mean") if s else None
        m["grad_ratio_plain_sigmoid"] = m["grad_ratio_residual_relu_norm"] = None
        return m
    for name, config in (("plain_sigmoid", PLAIN_SIGMOID), ("residual_relu_norm", RESIDUAL_NORM[spec.family])):
        s = _find(summary, data, config, deepest)
        m[f"grad_ratio_{name}"] = (s["grad_ratio_init"] or {}).get("mean") if s else None
        m[f"depth_effect_{name}"] = _trend(summary, spec, config)
    m["diverged_points"] = [f"{s['label']} depth {s['depth']} ({s['data']}): {s['status']}" for s in summary if s["diverged"]]
    return m


# ---------------------------------------------------------------- the job


def run_depth_study(out_dir: str | Path, spec: DepthSpec, resume: bool = False, overwrite: bool = False,
                    jobs: int = 1, threads: int | None = None, argv: list[str] | None = None,
                    on_done: Callable | None = None, emit: Callable[[str], None] = lambda line: None) -> dict:
    """Run the study into run directory ``out_dir``; returns the results document (also
    ``results.json``) and writes the plots, ``report-sections.json`` and ``report.html``."""
    from layerwise.rundir import check_run

    command = "study-depth"
    check_run(out_dir, command, resume=resume, overwrite=overwrite)
    t0 = time.perf_counter()
    points = plan_points(spec)  # budget errors before anything is written
    todo = units(spec, points)

    def finish(records: dict, n_threads: int):
        from layerwise.jobs.studies.depth_report import depth_sections

        summary = summarise(points, records)
        doc = {
            "study": "depth", "spec": spec.to_dict(), "seconds": time.perf_counter() - t0,
            "run_seconds_total": sum(r.get("seconds") or 0.0 for r in records.values()),
            "machine": {"cores": sweep.cores(), "jobs": jobs, "threads_per_job": n_threads},
            "metrics": study_metrics(spec, summary), "points": summary,
            "runs": [records[u["key"]] for u in todo],
        }
        return doc, f"study depth: {spec.family}", depth_sections(Path(out_dir), spec, doc)

    return sweep.run_study(out_dir, command, spec.to_dict(), todo, P.run_unit, finish,
                           what=f"{len(points)} points × {spec.seeds} seeds", quick=spec.quick, resume=resume,
                           overwrite=overwrite, jobs=jobs, threads=threads, argv=argv, on_done=on_done, emit=emit)

