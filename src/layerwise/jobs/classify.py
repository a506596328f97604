"""One classification job for ``layerwise train`` and ``layerwise finetune``.

Both: load the data, split it (stratified, fixed by the seed; the training part optionally
subsampled), pick the positive class (an index or a name), encode texts, train with the one
Trainer into the run directory, reload the best checkpoint, and report its validation and
test metrics (``results.json``); throughput counts training steps only, not set-up.

``train`` builds the model from a preset or config, sized from the data (classes, image
shape, vocabulary). ``finetune`` starts from a pretrained base (:func:`layerwise.jobs.runs.load_base`),
applies a strategy and, where the bottom of the model is frozen, caches it
(:mod:`layerwise.finetune.cache`); its checkpoints hold only what the strategy changes, and a
recipe that rebuilds the model (:func:`layerwise.jobs.runs.load_run`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from layerwise.errors import ConfigError, LayerwiseError
from layerwise.io import atomic_write_text
from layerwise.rundir import RunDir, check_run, open_run
from layerwise.train.config import TrainConfig
from layerwise.train.trainer import Event, TrainResult


@dataclass
class Classification:
    """What the job did: the training result, the model with its best checkpoint's weights,
    the metrics of that checkpoint, and (fine-tunes) the strategy record and cache."""

    result: TrainResult
    model: nn.Module  # best checkpoint loaded (the full model, cache or not)
    trained_model: nn.Module  # what the Trainer stepped (the cached suffix, or ``model``)
    dataset: Any
    train_examples: int
    val: dict | None
    test: dict | None
    record: Any = None  # StrategyRecord of a fine-tune
    cache: dict | None = None
    examples_per_second: float = 0.0
    seq_len: int | None = None
    task: Any = None  # the ClassificationTask the Trainer ran
    train_set: Any = None  # what it trained on (cached prefix states when cached)


class _SuffixClassifier(nn.Module):
    """The stages after the cached frozen prefix, called as the ClassificationTask calls a model."""

    def __init__(self, model: nn.Module, start: int) -> None:
        super().__init__()
        self.model = model
        self.start = start
        self.stop = len(model.stage_names())

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        state = (x,) if attention_mask is None else (x, attention_mask)
        return self.model.run_stages(state, self.start, self.stop)[0]


def resolve_positive(positive: int | str | None, label_names: list[str], data: str) -> int | None:
    """The positive class as an index: an index (int or digits), a label name, or None
    (class 1 of a two-class problem; macro averages for more classes)."""
    k = len(label_names)
    if positive is None:
        return 1 if k == 2 else None
    if isinstance(positive, str) and positive in label_names:
        return label_names.index(positive)
    if isinstance(positive, int) or (isinstance(positive, str) and positive.lstrip("-").isdigit()):
        i = int(positive)
        if not 0 <= i < k:
            raise ConfigError(f"--positive {positive}: expected a class index in 0..{k - 1} or a label of {data} "
                              f"({', '.join(label_names)})")
        return i
    raise ConfigError(f"--positive {positive!r}: not a label of {data}; expected one of {', '.join(label_names)} "
                      f"or an index in 0..{k - 1}")


def _split(data: str, val: float, test: float, seed: int, train_fraction: float | None, options: dict | None = None):
    from layerwise.data import check_labels, load_dataset, split

    ds = load_dataset(data, **(options or {}))
    if not hasattr(ds, "label_names"):
        raise LayerwiseError(f"--data {data}: is a {type(ds).__name__}; expected labelled texts or images "
                             "(use pretrain for a corpus)")
    parts = split(ds, val=val, test=test, seed=seed, stratify=True)
    check_labels(parts)
    train = parts.train
    if train_fraction is not None and train_fraction < 1:
        train = split(train, val=0.0, test=1.0 - train_fraction, seed=seed, stratify=True).train
    return ds, (train, parts.val, parts.test)


def prepare_text_data(data: str, tokenizer, max_len: int, val: float, test: float, seed: int,
                      train_fraction: float | None = None, options: dict | None = None):
    """(dataset, (train, val, test) encoded with ``tokenizer``): what a comparison of
    strategies prepares once and hands to every fine-tune. ``options``: how to read a data
    file (``text_column``, ``label_column``)."""
    from layerwise.data import TextClassification, encode_classification

    _check_fraction(train_fraction)
    ds, parts = _split(data, val, test, seed, train_fraction, options)
    if not isinstance(ds, TextClassification):
        raise LayerwiseError(f"--data {data}: is a {type(ds).__name__}; fine-tuning a pretrained text model needs labelled texts")
    return ds, tuple(encode_classification(p, tokenizer, max_len) for p in parts)


def _check_fraction(train_fraction: float | None) -> None:
    if train_fraction is not None and not (isinstance(train_fraction, (int, float)) and 0 < train_fraction <= 1):
        raise ConfigError(f"--train-fraction: expected a number in (0, 1], got {train_fraction!r}")


def classify(
    model: Any,
    data: str,
    config: TrainConfig,
    *,
    strategy: str | None = None,
    tokenizer: str | None = None,
    max_len: int = 64,
    val: float = 0.1,
    test: float = 0.1,
    train_fraction: float | None = None,
    positive: int | str | None = None,
    cache: bool | str = "auto",
    lora_targets=None,
    lora_alpha: float | None = None,
    lora_dropout: float = 0.0,
    model_overrides: dict | None = None,
    adapter: str | None = None,
    prepared=None,
    resume: bool = False,
    overwrite: bool = False,
    run: RunDir | None = None,
    callback: Callable[[Event], None] | None = None,
    data_options: dict | None = None,
) -> Classification:
    """Train (``strategy`` None) or fine-tune (``strategy`` a spec) a classifier; see the
    module docstring. ``prepared``: (dataset, encoded splits) from :func:`prepare_text_data`.
    ``data_options``: how to read a data file (``text_column``/``label_column``, ``labels``),
    recorded for ``eval``. What the job changes in the model to fit the data (classes, input
    size, vocabulary, an output sigmoid moved into the loss) is said in one line each, in the
    "start" event's notes; a fine-tune trains the new head whatever the strategy (PEFT's
    ``modules_to_save`` for sequence classification)."""
    from layerwise.finetune.strategies import parse_strategy
    from layerwise.train.distributed import check_parallel
    from layerwise.train.trainer import seed_everything

    check_parallel(config.parallel)
    data_options = {k: str(v) for k, v in (data_options or {}).items() if v is not None}

    command = "train" if strategy is None else "finetune"
    if strategy is not None:
        parse_strategy(strategy)  # a bad spec fails before anything loads
    if not (isinstance(lora_dropout, (int, float)) and 0 <= lora_dropout < 1):
        raise ConfigError(f"--lora-dropout: expected a probability in [0, 1), got {lora_dropout}")
    _check_fraction(train_fraction)
    if run is not None:
        if config.out_dir is None or Path(config.out_dir) != run.path:
            raise ConfigError(f"{command}: the run directory given ({run.path}) is not TrainConfig.out_dir ({config.out_dir})")
    elif config.out_dir is not None:
        check_run(config.out_dir, command, resume=resume, overwrite=overwrite)
    elif resume:
        raise ConfigError("--resume: needs --out-dir naming the run directory to resume from")
    seed_everything(config.seed)
    run_dir = Path(config.out_dir) if config.out_dir is not None else None
    if strategy is None:
        net, tok, ds, sets, info = _build_for_data(model, data, config, tokenizer, max_len, val, test, train_fraction,
                                                   model_overrides, run_dir, resume, data_options)
        record = base = None
    else:
        net, tok, ds, sets, info, record, base = _base_for_data(
            model, data, config, max_len, val, test, train_fraction, strategy, lora_targets, lora_alpha, lora_dropout,
            adapter, prepared, data_options)
    if data_options:
        info["data"]["options"] = data_options
    notes = info.pop("_notes", [])
    positive = resolve_positive(positive, list(ds.label_names), data)
    from layerwise.train.tasks import ClassificationTask

    task = ClassificationTask(ds.num_classes, ds.label_names, positive=positive,
                              input_shape=info.pop("_input_shape", None))
    seq_len = int(sets[0].ids.shape[1]) if hasattr(sets[0], "ids") else None
    trained_model, sets, cache_info = _maybe_cache(net, sets, cache if strategy is not None else False)
    info["finetune"] = {"record": record.to_dict(), "cache": cache_info} if record is not None else None
    saved_names = None
    if strategy is not None:
        from layerwise.finetune.checkpoint import finetuned_names

        saved_names = finetuned_names(net)
        info["recipe"] = {"kind": "finetune", "base": base.spec, "base_digest": base.digest,
                          "num_labels": ds.num_classes, "strategy": strategy, "new_head": True,
                          "options": {"lora_targets": list(lora_targets) if lora_targets else None,
                                      "lora_alpha": lora_alpha, "lora_dropout": lora_dropout}}
    else:
        info["recipe"] = {"kind": "config"}
    manifest = {"data": info["data"], "tokenizer": info.get("tokenizer")}
    if strategy is not None:
        manifest.update(base=base.spec, strategy=strategy)
    if run is not None:
        run.update(**manifest)
        scope = contextlib.nullcontext(run)
    elif run_dir is not None:
        scope = open_run(run_dir, command, resume=resume, overwrite=overwrite, info=manifest)
    else:
        scope = contextlib.nullcontext()
    from layerwise.train.trainer import Trainer

    with scope as run:
        if run_dir is not None and tok is not None and os.environ.get("RANK", "0") == "0":
            tok.save(run_dir / "tokenizer.json")
        trainer = Trainer(trained_model, task, sets[0], sets[1] if _rows(sets[1]) else None, config, callback, info,
                          run=run, saved_module=net, saved_names=saved_names, notes=notes,
                          params_base=(record.total_base, record.added) if record is not None else None)
        result = trainer.fit(resume=resume)
        if run_dir is not None and (run_dir / "checkpoints").is_dir():
            from layerwise.train.checkpoint import load_checkpoint, resolve_checkpoint

            best = resolve_checkpoint(run_dir, prefer="best")
            load_checkpoint(best, {"model": net}, names={"model": set(saved_names)} if saved_names else None)
        val_m = _plain(trainer.evaluate(sets[1])) if _rows(sets[1]) else None
        test_m = _plain(trainer.evaluate(sets[2])) if _rows(sets[2]) else None
        examples = result.steps * config.batch_size * config.grad_accum
        speed = examples / result.train_seconds if result.train_seconds > 0 else 0.0
        out = Classification(result, net, trained_model, ds, _rows(sets[0]), val_m, test_m, record, cache_info, speed,
                             seq_len, task, sets[0])
        if run_dir is not None and os.environ.get("RANK", "0") == "0":
            doc = {"val": val_m, "test": test_m, "best": result.best, "steps": result.steps,
                   "train_seconds": result.train_seconds, "examples_per_second": speed}
            atomic_write_text(run_dir / "results.json", json.dumps(doc, indent=2) + "\n")
    return out


def _rows(part) -> int:
    """Examples in a split: a dataset, encoded texts, or cached (states..., labels) tensors."""
    return int(part[-1].shape[0]) if isinstance(part, (tuple, list)) else len(part)


def _plain(metrics: dict) -> dict:
    return json.loads(json.dumps(metrics, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _build_for_data(model, data, config, tokenizer, max_len, val, test, train_fraction, overrides, run_dir, resume,
                    options=None):
    """``train``: the model from a preset or config, sized from the data."""
    from layerwise.data import ImageClassification, encode_classification
    from layerwise.jobs.training import (
        TOKENIZER_SPECS,
        _for_training,
        _model_config,
        _replace,
        _run_tokenizer,
        _with_classes,
        _with_images,
        architecture_note,
        make_tokenizer,
        model_name,
        unknown_note,
    )
    from layerwise.models.registry import build

    ds, parts = _split(data, val, test, config.seed, train_fraction, options)
    asked = _model_config(model, overrides)
    cfg = _for_training(_with_classes(asked, ds.num_classes))
    notes: list[str] = []
    info: dict[str, Any] = {"data": {"name": str(data), "kind": "image" if isinstance(ds, ImageClassification) else "text",
                                     "val": val, "test": test, "split_seed": config.seed, "train_fraction": train_fraction}}
    tok = None
    if isinstance(ds, ImageClassification):
        if tokenizer is not None:
            raise ConfigError(f"--tokenizer: applies to texts; --data {data} holds images")
        cfg = _with_images(cfg, ds.image_shape)
        sets = parts
    else:
        if tokenizer is None:
            raise ConfigError(f"--data {data}: holds texts; pass --tokenizer ({TOKENIZER_SPECS})")
        tok = _run_tokenizer(run_dir, resume) or make_tokenizer(tokenizer, list(parts[0].texts))
        if hasattr(cfg, "vocab_size"):
            cfg = _replace(cfg, vocab_size=tok.vocab_size)
        sets = tuple(encode_classification(p, tok, max_len) for p in parts)
        for what, part in (("validation", parts[1]), ("test", parts[2])):
            note = unknown_note(tok, part.texts, f"the {what} texts")
            if note:
                notes.append(note)
        info["tokenizer"] = {"spec": tokenizer, "file": "tokenizer.json", "vocab_size": tok.vocab_size}
        info["data"]["max_len"] = max_len
    why = f"{Path(str(data)).name} ({ds.num_classes} classes" + (f", images {'×'.join(map(str, ds.image_shape))})"
                                                                 if isinstance(ds, ImageClassification)
                                                                 else f", the {tokenizer} tokenizer)")
    note = architecture_note(model_name(model), asked, cfg, why, ds.num_classes)
    info["_notes"] = ([note] if note else []) + notes
    net = build(cfg, device="cpu")
    if isinstance(ds, ImageClassification):
        example = net.example_inputs(1)[0]
        if tuple(example.shape[1:]) != ds.image_shape:
            if example[0].numel() != parts[0].images[0].numel():
                raise ConfigError(f"--model {model}: takes inputs of shape {tuple(example.shape[1:])}, "
                                  f"the images of {data} are {ds.image_shape}")
            info["_input_shape"] = tuple(example.shape[1:])
    return net, tok, ds, sets, info


def _base_for_data(model, data, config, max_len, val, test, train_fraction, strategy, lora_targets, lora_alpha,
                   lora_dropout, adapter, prepared, options=None):
    """``finetune``: the pretrained base with a head for the data's classes, the strategy applied."""
    from layerwise.devices import resolve_device
    from layerwise.finetune.strategies import apply_strategy
    from layerwise.jobs.runs import load_base

    device = str(resolve_device(config.device))
    if prepared is not None:
        ds, sets = prepared
    else:
        from layerwise.data import load_dataset

        ds = load_dataset(data, **(options or {}))
        if not hasattr(ds, "label_names"):
            raise LayerwiseError(f"--data {data}: is a {type(ds).__name__}; expected labelled texts")
    torch.manual_seed(config.seed)  # the fresh head: the same for every strategy
    base = load_base(model, ds.num_classes, device, adapter=adapter)
    limit = next((getattr(base.net.config, f) for f in ("block_size", "max_position", "max_position_embeddings")
                  if isinstance(getattr(getattr(base.net, "config", None), f, None), int)), None)
    if limit is not None and max_len > limit:
        raise ConfigError(f"--max-len {max_len}: longer than the {Path(str(model)).name} model takes "
                          f"({limit} positions); give --max-len {limit} or less")
    if prepared is None:
        ds, sets = prepare_text_data(data, base.tokenizer, max_len, val, test, config.seed, train_fraction, options)
    # the head is new (a fresh one for the data's classes): every strategy trains it, as
    # PEFT's sequence-classification task does with modules_to_save
    record = apply_strategy(base.net, strategy, lora_targets=lora_targets, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                            new_head=True)
    info = {"name": f"{Path(str(model)).name} {strategy}",
            "data": {"name": str(data), "kind": "text", "val": val, "test": test, "split_seed": config.seed,
                     "max_len": max_len, "train_fraction": train_fraction},
            "tokenizer": {"spec": "base", "file": "tokenizer.json", "vocab_size": base.tokenizer.vocab_size}}
    return base.net, base.tokenizer, ds, list(sets), info, record, base


def _maybe_cache(net: nn.Module, sets, cache: bool | str):
    """(model the Trainer steps, its data, cache facts): the frozen prefix computed once when
    the model's bottom is frozen (``cache`` "auto" or True)."""
    from layerwise.finetune.cache import cache_prefix, first_trainable_stage, supports_stages

    use = cache is True or (cache == "auto" and supports_stages(net) and first_trainable_stage(net) > 0)
    if not use:
        return net, list(sets), None
    t0 = time.perf_counter()
    cached = [cache_prefix(net, (s.ids, s.attention_mask), batch_size=64) if len(s.labels) else None for s in sets]
    info = {"stage": cached[0].stage, "bytes": sum(c.bytes for c in cached if c), "seconds": time.perf_counter() - t0}
    return _SuffixClassifier(net, cached[0].start), [(*c.states, s.labels) if c else s for c, s in zip(cached, sets)], info
