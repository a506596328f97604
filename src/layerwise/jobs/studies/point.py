"""One run of a study: a model config trained for one seed with the one training loop.

:func:`run_unit` takes a plain dict (so that worker processes can receive it) and returns
a plain dict: the model's facts from the analysis (parameters, per kind and per role,
weight_depth, FLOPs per training step), the measured time per step, the final train and
test loss (and accuracy), the loss curve, and the per-layer gradient statistics of
:class:`~layerwise.train.layerstats.GradientRecorder` (at initialisation and every
``grad_every`` steps). A run whose loss becomes NaN/inf or explodes is recorded as
``"status": "diverged"`` with what was measured until then -- it is a result, not a failure.

A unit::

    {"key": "...", "task": "image" | "lm", "data": "mnist-5k", "model": {config dict},
     "train": {TrainConfig fields}, "grad_every": 20, "input_shape": [784] | None,
     "eval_steps": 20 (lm only)}
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from typing import Any

import torch

from layerwise.analysis import analyze
from layerwise.analysis.roles_view import by_role
from layerwise.models.registry import build, get_config
from layerwise.train.config import TrainConfig
from layerwise.train.layerstats import GradientRecorder, first_last_ratio
from layerwise.train.tasks import ClassificationTask, LanguageModelTask
from layerwise.train.trainer import DivergedError, Trainer

# Held-out part of each classification set (the same split for every seed: the seeds vary
# the initialisation and the batch order, not the data).
TEST_FRACTION = 0.2
SPLIT_SEED = 0
LM_VAL_FRACTION = 0.1


@functools.lru_cache(maxsize=4)
def image_parts(name: str):
    """(dataset, train part, test part) of a labelled image set, loaded once per process."""
    from layerwise.data import check_labels, load_dataset, split
    from layerwise.errors import ConfigError

    ds = load_dataset(name)
    if not hasattr(ds, "images"):
        raise ConfigError(f"--data {name}: expected a labelled image set such as mnist-5k or digits")
    parts = split(ds, val=0.0, test=TEST_FRACTION, seed=SPLIT_SEED, stratify=True)
    check_labels(parts)
    return ds, parts.train, parts.test


@functools.lru_cache(maxsize=2)
def text_tokenizer(name: str):
    """(corpus, its character-level tokenizer), loaded once per process."""
    from layerwise.data import TextCorpus, load_dataset
    from layerwise.errors import ConfigError
    from layerwise.jobs.training import make_tokenizer

    corpus = load_dataset(name)
    if not isinstance(corpus, TextCorpus):
        raise ConfigError(f"--data {name}: expected a text corpus such as shakespeare-1m")
    return corpus, make_tokenizer("char", corpus.text)


@functools.lru_cache(maxsize=2)
def text_streams(name: str):
    """(tokenizer, train stream, validation stream) of a text corpus, character-level."""
    from layerwise.data import TokenStream, split

    corpus, tok = text_tokenizer(name)
    parts = split(corpus, val=LM_VAL_FRACTION, test=0.0)
    return tok, TokenStream.from_corpus(parts.train, tok), TokenStream.from_corpus(parts.val, tok)


def _finite(x):
    """JSON-safe numbers: NaN and infinities become None (the run's status says why)."""
    if isinstance(x, float):
        return float(f"{x:.6g}") if math.isfinite(x) else None
    if isinstance(x, list):
        return [_finite(v) for v in x]
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    return x


def model_facts(model_cfg: dict, batch_size: int, seq_len: int | None = None) -> dict:
    """Parameters (total, per kind, per role), depths and FLOPs of one training step of
    ``batch_size`` examples, from the analysis on the meta device."""
    cfg = get_config(model_cfg)
    meta = build(cfg, device="meta")
    a = analyze(meta, batch_size=batch_size, seq_len=seq_len)
    roles = by_role(meta, a, batch_size=batch_size, seq_len=seq_len)
    return {
        "params": a.totals.params,
        "by_kind": {k.kind: k.params for k in a.by_kind if k.params},
        "by_role": {r.role: r.params for r in roles.rows},
        "weight_depth": a.depth.weight_depth,
        "block_depth": a.depth.block_depth,
        "weight_layers": a.depth.weight_layers,
        "flops_forward": a.totals.flops_forward,
        "flops_per_step": a.totals.flops_train,
    }


def _step_times(history: list[dict], units_per_step: int, unit_key: str) -> tuple[list[dict], float | None]:
    """The loss curve with the cumulative pure training time at each logged step, and the
    median seconds per step over the logged windows."""
    curve, per_step, elapsed, prev = [], [], 0.0, 0
    for r in history:
        rate, steps = r.get(unit_key), r["step"] - prev
        prev = r["step"]
        if rate and steps > 0:
            seconds = steps * units_per_step / rate
            elapsed += seconds
            per_step.append(seconds / steps)
        curve.append({"step": r["step"], "loss": r["loss"], "train_seconds": elapsed})
    return curve, (statistics.median(per_step) if per_step else None)


def run_unit(unit: dict) -> dict:
    """Train one unit (see the module docstring) and return its record."""
    t0 = time.perf_counter()
    cfg = TrainConfig.from_dict(unit["train"])
    lm = unit["task"] == "lm"
    if lm:
        tok, train_data, test_data = text_streams(unit["data"])
        model_cfg = get_config({**unit["model"], "vocab_size": tok.vocab_size})
        task = LanguageModelTask(model_cfg.block_size)
        units_per_step = cfg.batch_size * model_cfg.block_size
        eval_kw = {"max_batches": unit.get("eval_steps", 20)}
    else:
        ds, train_data, test_data = image_parts(unit["data"])
        model_cfg = get_config(unit["model"])
        task = ClassificationTask(ds.num_classes, ds.label_names, input_shape=unit.get("input_shape"))
        units_per_step = cfg.batch_size
        eval_kw = {}
    facts = model_facts(model_cfg.to_dict(), cfg.batch_size, model_cfg.block_size if lm else None)
    torch.manual_seed(cfg.seed)
    model = build(model_cfg, device="cpu")
    last = {"step": 0}

    def seen(ev) -> None:
        if ev.kind == "step":
            last["step"] = ev.step

    rec = GradientRecorder(model, every=unit.get("grad_every", 20), then=seen)
    trainer = Trainer(model, task, train_data, None, cfg, callback=rec)
    out: dict[str, Any] = {"key": unit["key"], "seed": cfg.seed, "model": model_cfg.to_dict(), **facts}
    try:
        result = trainer.fit()
    except DivergedError as e:
        out.update(status="diverged", error=" ".join(str(e).split()), steps=last["step"] + 1,
                   train=None, test=None, curve=[], s_per_step=None)
    else:
        curve, s_per_step = _step_times(result.history, units_per_step, f"{task.unit}_per_s")
        keep = ("loss", "accuracy", "perplexity")
        train_m = trainer.evaluate(train_data, **eval_kw)
        test_m = trainer.evaluate(test_data, **eval_kw)
        status = "ok" if all(math.isfinite(m["loss"]) for m in (train_m, test_m)) else "diverged"
        out.update(status=status, steps=result.steps, curve=curve, s_per_step=s_per_step,
                   train={k: train_m[k] for k in keep if k in train_m}, test={k: test_m[k] for k in keep if k in test_m})
        if status == "diverged":
            out["error"] = "the final evaluation's loss is not finite"
    out["grad"] = {
        "layers": rec.names,
        "steps": [r["step"] for r in rec.records],
        "grad_norm": [r["grad_norm"] for r in rec.records],
        "update_ratio": [r.get("update_ratio") for r in rec.records],
    }
    out["grad_at_init"] = rec.at_init
    out["grad_ratio_init"] = first_last_ratio(rec.at_init) if rec.at_init else None
    out["seconds"] = time.perf_counter() - t0
    out["threads"] = torch.get_num_threads()
    return _finite(out)
