"""The training loop: one loop for pretraining, supervised training and fine-tuning.

``Trainer(model, task, train_data, val_data, config).fit()`` optimises the parameters
that have ``requires_grad`` -- a fine-tuning strategy changes the model (freezes
parameters, adds LoRA modules), never this loop. The :class:`~layerwise.train.tasks.Task`
turns batches into a loss; :class:`~layerwise.train.config.TrainConfig` holds every
option. Library code never prints: progress goes to ``callback(Event)``, metrics to the
run directory (:class:`~layerwise.train.runlog.RunLog`) and the returned
:class:`TrainResult`.

One optimizer step:
  lr from the schedule -> ``grad_accum`` micro-batches (forward under autocast, loss
  [+ L1 penalty] / grad_accum, backward; DDP syncs gradients on the last one) -> the
  loss must be finite (else :class:`NonFiniteLossError`, before the weights change) ->
  clip -> optimizer step -> log / evaluate / checkpoint.

A :class:`~layerwise.train.tasks.StepTask` (GAN, DQN) owns its update instead: the loop
makes the optimizers it names, calls ``task.train_step`` once per step, and checkpoints its
named models, every optimizer and the task's own state (replay buffer, environment, RNG);
everything else -- schedule, logging, evaluation, best checkpoint, Ctrl-C, divergence,
exact resume -- is this same loop.

Run directory (``config.out_dir``)::

  config.json        model config, train config, task and data description
  metrics.jsonl/.csv train records every log_every steps, validation records
  checkpoints/       step-N/ directories (last keep_last, plus the best), best.json
  loss-curve.png     at the end
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from layerwise.devices import resolve_device as _resolve_device
from layerwise.errors import ConfigError, LayerwiseError, LoadError
from layerwise.io import atomic_write_text
from layerwise.rundir import RunDir, open_run
from layerwise.train import distributed as D
from layerwise.train.checkpoint import (
    CheckpointManager,
    load_checkpoint,
    read_safetensors,
    state_subset,
    unwrap,
)
from layerwise.train.config import TrainConfig
from layerwise.train.optim import (
    LRSchedule,
    l1_penalty,
    make_optimizer,
    set_lr,
    split_decay,
    trainable_parameters,
)
from layerwise.train.perf import matmul_peak_flops, mfu, train_flops
from layerwise.train.runlog import RunLog
from layerwise.train.tasks import BatchSource, StepContext, StepTask, Task
from layerwise.vocab import precision_spec

# Fields that must match the checkpoint for a resumed run to continue the same run.
_RESUME_MUST_MATCH = ("batch_size", "grad_accum", "seed", "optimizer")


class DivergedError(LayerwiseError):
    """The training loss diverged: it grew past ``TrainConfig.diverge_factor`` times the first
    step's loss, or became NaN or infinite (the weights were not updated with it)."""


class NonFiniteLossError(DivergedError):
    """The training loss became NaN or infinite (the weights were not updated with it)."""


class CollapseError(DivergedError):
    """A task that owns its update asked to stop (a GAN whose discriminator's loss went to 0
    and stayed there, or whose samples went NaN); the last good checkpoint is kept."""


class TrainingInterrupted(LayerwiseError):
    """Ctrl-C during training: the current step finished and was checkpointed (``path``)."""

    run_status = "interrupted"

    def __init__(self, message: str, step: int, path: Path | None) -> None:
        super().__init__(message)
        self.step, self.path = step, path


class _DeferredInterrupt:
    """The first SIGINT asks the loop to stop after the current step (and checkpoint it);
    a second one interrupts at once. Only in the main thread of a single-process run."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous = None

    def __enter__(self) -> _DeferredInterrupt:
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)


@dataclass
class Event:
    """What the loop reports to ``callback``.

    kind: "start" (record: run facts), "gradients" (every step, after the backward and
    before clipping and the optimizer step: the parameters' ``.grad`` hold the step's
    gradients and the weights are the ones they were computed at; loss, lr), "step" (every
    step, after the update: loss, lr), "log" (every log_every steps: the full train record),
    "eval" (validation metrics), "checkpoint" (path), "end" (summary).
    """

    kind: str
    step: int
    total_steps: int
    record: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    steps: int  # optimizer steps completed
    total_steps: int
    history: list[dict]  # train records (loss, lr, throughput, MFU)
    evals: list[dict]  # validation records
    final: dict | None  # the last validation metrics
    best: dict | None  # {"step", "metric", "value"} of the best evaluation
    stopped_early: bool
    run_dir: Path | None
    seconds: float
    flops_per_step: int | None  # training FLOPs of one optimizer step (all processes)
    peak_flops: float | None  # measured matmul peak of one process, FLOP/s
    start_step: int = 0  # the step this process started from (> 0 after a resume)
    train_seconds: float = 0.0  # time in optimizer steps only (no set-up, evaluation or checkpoints), whole run
    notes: list[str] = field(default_factory=list)  # resume fallbacks, --overwrite, ...

    @property
    def losses(self) -> list[float]:
        return [r["loss"] for r in self.history]


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), Python's random and NumPy's global generator."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def resolve_device(name: str, info: D.DistInfo) -> torch.device:
    return _resolve_device(name, local_rank=info.local_rank if info.enabled else None)


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _as_kwargs(model: nn.Module, args: tuple, kwargs: dict):
    if not kwargs:
        return args
    try:
        return dict(inspect.signature(model.forward).bind(*args, **kwargs).arguments)
    except TypeError:
        return args


class Trainer:
    """Train ``model`` on ``train_data`` with ``task`` (see the module docstring).

    model: any nn.Module (a layerwise model's ``config`` is saved with checkpoints).
    task: a :class:`~layerwise.train.tasks.Task` (LanguageModelTask, ClassificationTask).
    train_data, val_data: what ``task.make_source`` accepts (a TokenStream, an
        ImageClassification, an EncodedText, a tuple of tensors) or a ready BatchSource.
    callback: called with every :class:`Event` (a progress bar, a test's interrupt).
    run_info: extra JSON written into config.json and checkpoints (data, tokenizer, ...); its
        ``name``, when given, titles the loss curve.
    run: the :class:`~layerwise.rundir.RunDir` a job opened for ``config.out_dir``; without
        it the trainer opens ``out_dir`` itself (:func:`~layerwise.rundir.open_run`), and
        finishes it at the end.
    notes: what the person starting the run should be told before it trains (a model the
        job changed to fit the data, ...): in the "start" event and ``TrainResult.notes``.
    params_base: (base model's parameters, parameters a strategy added) when ``model`` is not
        the whole model that a "trainable of total" line should count (a fine-tune: LoRA
        factors added, or only the stages above a cached frozen prefix): the "start" event's
        ``params`` is then the base model's count, the one denominator of every such line.
    saved_module, saved_names: checkpoint only these entries of ``saved_module``'s state
        dict (a fine-tune saves what its strategy trains, not the frozen base; the trained
        ``model`` may be a wrapper of ``saved_module``, e.g. the cached suffix).
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        train_data: Any,
        val_data: Any = None,
        config: TrainConfig | None = None,
        callback: Callable[[Event], None] | None = None,
        run_info: dict | None = None,
        run: RunDir | None = None,
        notes: list[str] | None = None,
        params_base: tuple[int, int] | None = None,
        saved_module: nn.Module | None = None,
        saved_names=None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise LayerwiseError(f"Trainer: expected a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.task = task
        self.train_data = train_data
        self.val_data = val_data
        self.config = config if config is not None else TrainConfig()
        if not isinstance(self.config, TrainConfig):
            raise ConfigError(f"Trainer: config must be a TrainConfig, got {type(self.config).__name__}")
        self.callback = callback
        self.run_info = dict(run_info or {})
        self.run = run
        self.notes = list(notes or [])
        self.params_base = params_base
        self.saved_module = saved_module if saved_module is not None else model
        self.saved_names = set(saved_names) if saved_names is not None else None
        self.device: torch.device | None = None

    # ------------------------------------------------------------------ helpers

    def _emit(self, kind: str, step: int, total: int, record: dict | None = None) -> None:
        if self.callback is not None:
            self.callback(Event(kind, step, total, record or {}))

    def _source(self, data: Any, seed: int, train: bool) -> BatchSource:
        if isinstance(data, BatchSource):
            return data
        cfg = self.config
        return self.task.make_source(data, cfg.batch_size, seed=seed, shuffle=train, oversample=train and cfg.oversample)

    def _autocast(self, device: torch.device):
        dtype = precision_spec(self.config.precision).autocast_dtype
        if dtype is not None:
            return torch.autocast(device.type, dtype=dtype)
        return contextlib.nullcontext()

    @torch.no_grad()
    def _evaluate(self, model: nn.Module, source: BatchSource, max_batches: int | None, device: torch.device, info: D.DistInfo, sharded: bool) -> dict:
        was_training = model.training
        model.eval()
        meter = self.task.new_meter()
        try:
            for batch in source.eval_batches(max_batches):
                if sharded:
                    batch = D.shard(batch, info)
                if batch[-1].shape[0] == 0:
                    continue
                batch = self.task.to_device(batch, device)
                with self._autocast(device):
                    loss, preds = self.task.loss(model, batch)
                meter.update_batch(loss.float(), preds.cpu() if preds is not None else None, tuple(t.cpu() for t in batch[-1:]))
            if sharded:
                D.all_reduce_sum_(meter.tensors(), info, device)
        finally:
            model.train(was_training)
        return meter.compute()

    def _step_context(self, step: int, device: torch.device, optimizers: dict, on_nonfinite=None) -> StepContext:
        def refuse(name: str, value: float) -> None:
            raise NonFiniteLossError(f"{name}: loss {value} is not finite")

        return StepContext(step, device, optimizers, lambda: self._autocast(device), self.config.clip_grad_norm,
                           on_nonfinite or refuse)

    @torch.no_grad()
    def _evaluate_own(self, model: nn.Module, data: Any, device: torch.device, optimizers: dict | None = None, step: int = 0) -> dict:
        was_training = model.training
        model.eval()
        try:
            return self.task.evaluate(model, data, self._step_context(step, device, optimizers or {}))
        finally:
            model.train(was_training)

    def evaluate(self, data: Any = None, max_batches: int | None = None) -> dict:
        """Metrics of the model on ``data`` (default: the validation data), in this process."""
        data = self.val_data if data is None else data
        if data is None:
            raise ConfigError("Trainer.evaluate: no data given and no validation data")
        model = unwrap(self.model)
        device = self.device or next((p.device for p in model.parameters()), torch.device("cpu"))
        self.task.bind(model)
        if isinstance(self.task, StepTask):
            return self._evaluate_own(model, data, device)
        return self._evaluate(model, self._source(data, self.config.seed, train=False), max_batches, device, D.DistInfo(), sharded=False)

    # ------------------------------------------------------------------ the loop

    def fit(self, resume: bool = False, overwrite: bool = False) -> TrainResult:
        """Train; with ``resume`` continue from the newest checkpoint in ``out_dir`` that
        verifies (a fresh start when there is none). On CPU the resumed run reproduces the
        uninterrupted one. ``overwrite`` replaces a run already in ``out_dir``
        (:func:`~layerwise.rundir.open_run`); without it a used directory is refused."""
        cfg = self.config
        if resume and cfg.out_dir is None:
            raise ConfigError("--resume: needs --out-dir naming the run directory to resume from")
        device_type = "cuda" if cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
        _resolve_device(cfg.device)  # an unusable device fails before anything is written
        D.check_parallel(cfg.parallel)
        own_run = self.run is None and cfg.out_dir is not None
        if own_run:
            self.run = open_run(cfg.out_dir, "train", resume=resume, overwrite=overwrite, compatible=("*",))
        info = D.init_distributed(device_type)
        try:
            with self.run if own_run else contextlib.nullcontext():
                result = self._fit(info, resume)
        except BaseException:
            D.close(info, failed=True)
            raise
        D.close(info)
        return result

    def _fit(self, info: D.DistInfo, resume: bool) -> TrainResult:
        cfg, task = self.config, self.task
        t_start = time.perf_counter()
        device = resolve_device(cfg.device, info)
        self.device = device
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        D.check_divisible(cfg.batch_size, info)
        seed_everything(cfg.seed)

        base = unwrap(self.model).to(device)
        task.bind(base)
        train_src = self._source(self.train_data, cfg.seed, train=True)
        own = isinstance(task, StepTask)  # the task owns its update (GAN, DQN)
        if own:
            if info.enabled:
                raise ConfigError(f"{type(task).__name__}: trains in one process; run it without torchrun")
            val_src = self.val_data  # the task's evaluate reads it as it is
        else:
            val_src = self._source(self.val_data, cfg.seed, train=False) if self.val_data is not None else None
        task.configure(cfg, train_src)
        if cfg.early_stopping is not None and val_src is None:
            raise ConfigError("TrainConfig.early_stopping: needs validation data (val_data)")
        default_monitor = task.monitor() if own else ("loss", "min")
        monitor = cfg.early_stopping.metric if cfg.early_stopping else default_monitor[0]
        monitor_mode = cfg.early_stopping.mode if cfg.early_stopping else default_monitor[1]

        bpe = train_src.batches_per_epoch  # micro-batches per epoch
        total = cfg.steps if cfg.steps is not None else max(1, math.ceil(cfg.epochs * bpe / cfg.grad_accum))
        schedule = LRSchedule(cfg.schedule, cfg.lr, total, min(cfg.warmup_steps, total), cfg.min_lr)

        # FLOPs of one micro-batch on this process (frozen-aware), and the matmul peak.
        first = task.to_device(D.shard(train_src.batch(0), info), device)
        if own:
            step_flops = task.step_flops(base, first)
        else:
            args, kwargs = task.model_inputs(first)
            micro_flops = train_flops(base, _as_kwargs(base, args, kwargs))
            step_flops = micro_flops * cfg.grad_accum * info.world_size if micro_flops else None
        peak = matmul_peak_flops(device, precision_spec(cfg.precision).compute_dtype)

        model = D.wrap(base, info, cfg.parallel, device)
        fsdp = info.enabled and cfg.parallel == "fsdp"
        ddp = model if isinstance(model, nn.parallel.DistributedDataParallel) else None
        run_model = torch.compile(model) if cfg.compile else model

        def new_optimizer(params):
            return make_optimizer(params, cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                                  nesterov=cfg.nesterov, betas=cfg.betas, eps=cfg.eps)

        if own:
            optimizers = {name: new_optimizer(p) for name, p in task.optimizer_params(base).items()}
            lr_scales = {name: float(task.lr_scales().get(name, 1.0)) for name in optimizers}
            optimizer = None
            params, l1_params = [], []
        else:
            optimizer = new_optimizer(model if fsdp else base)
            optimizers = {"optimizer": optimizer}
            lr_scales = {"optimizer": 1.0}
            params = trainable_parameters(model if fsdp else base)
            l1_params = split_decay(model if fsdp else base)[0] if cfg.l1 else []

        run_dir = Path(cfg.out_dir) if cfg.out_dir is not None else None
        run = self.run
        notes: list[str] = (list(run.notes) if run is not None else []) + self.notes
        mgr = CheckpointManager(run_dir / "checkpoints", cfg.keep_last) if run_dir is not None else None
        step = 0
        loop: dict[str, Any] = {"best": None, "bad_evals": 0, "elapsed_s": 0.0, "step_s": 0.0, "initial_loss": None,
                                "window": {"seconds": 0.0, "units": 0, "losses": []}}
        if own:
            loop["window"]["metrics"] = {}
        resumed_from = None
        if resume and mgr is not None:
            resumed_from, skipped = mgr.latest_valid()
            for bad, reason in skipped:
                notes.append(f"checkpoint {bad.name} does not verify ({reason}); "
                             + (f"resuming from {resumed_from.name} instead" if resumed_from else "skipped"))
            if resumed_from is None and skipped:
                raise LoadError(f"--resume: no checkpoint in {mgr.root} verifies; nothing to resume from "
                                "(--overwrite starts the run again)")
            if resumed_from is not None:
                step, restored = self._restore(resumed_from, base, model if fsdp else None, optimizers, info)
                loop.update(restored)
            elif not any(n.startswith("nothing to resume") for n in notes):
                notes.append(f"nothing to resume in {run_dir} (no checkpoint yet); starting fresh")
        window = loop["window"]
        window_time, window_units, window_losses = float(window["seconds"]), int(window["units"]), list(window["losses"])
        window_metrics: dict[str, list[float]] = {k: list(v) for k, v in (window.get("metrics") or {}).items()}
        elapsed_before = float(loop.get("elapsed_s") or 0.0)
        main = info.is_main
        model_config = getattr(base, "config", None)
        model_config = model_config.to_dict() if hasattr(model_config, "to_dict") else None
        n_params = sum(p.numel() for p in {id(p): p for p in base.parameters()}.values())
        trained = {id(p): p for opt in optimizers.values() for g in opt.param_groups for p in g["params"]}
        n_train = sum(p.numel() for p in trained.values())
        facts = {
            "total_steps": total,
            "start_step": step,
            "resumed_from": str(resumed_from) if resumed_from else None,
            "run_id": run.run_id if run is not None else None,
            "notes": notes,
            "device": str(device),
            "world_size": info.world_size,
            "params": self.params_base[0] if self.params_base else n_params,
            "params_added": self.params_base[1] if self.params_base else 0,
            "trainable_params": n_train,
            "batches_per_epoch": bpe,
            "flops_per_step": step_flops,
            "peak_flops": peak,
            "unit": task.unit,
        }
        if main and run_dir is not None:
            doc = {"model": model_config, "train": cfg.to_dict(), "task": task.describe(), **self.run_info, "run": facts}
            atomic_write_text(run_dir / "config.json", json.dumps(doc, indent=2, default=str) + "\n")
            if run is not None and run.writable:
                run.update(model=model_config, task=task.describe(), train=cfg.to_dict())
        log = RunLog(run_dir if main else None, resume_step=step if resumed_from is not None else None, tensorboard=cfg.tensorboard and main)

        def save(at_step: int) -> Path | None:
            if mgr is None:
                return None
            loop["elapsed_s"] = elapsed_before + time.perf_counter() - t_start
            loop["window"] = {"seconds": window_time, "units": window_units, "losses": list(window_losses)}
            if own:
                loop["window"]["metrics"] = {k: list(v) for k, v in window_metrics.items()}
            state = {
                "step": at_step,
                "run_id": run.run_id if run is not None else None,
                "model_config": model_config,
                "train_config": cfg.to_dict(),
                "task": task.describe(),
                "schedule": schedule.state_dict(),
                "loop": loop,
                "run_info": self.run_info,
                "world_size": info.world_size,
            }
            if own:
                task_tensors, task_state = task.state_dict()
                state["task_state"] = task_state
                path = mgr.save(at_step, models=task.checkpoint_models(base), optimizers=optimizers, state=state,
                                tensors={f"task/{k}": v for k, v in task_tensors.items()})
            elif fsdp:
                msd, osd = D.full_state(model, optimizer)
                path = mgr.save(at_step, models={"model": msd}, optimizers={"optimizer": osd}, state=state) if main else None
            else:
                weights = state_subset(self.saved_module, sorted(self.saved_names)) if self.saved_names is not None else base
                state["saved_names"] = sorted(self.saved_names) if self.saved_names is not None else None
                path = mgr.save(at_step, models={"model": weights}, optimizers={"optimizer": optimizer}, state=state) if main else None
            D.barrier(info)
            if run is not None:
                run.release_replaced()  # the new run now has a checkpoint: the replaced one can go
            self._emit("checkpoint", at_step, total, {"path": str(path) if path else None})
            return path

        self._emit("start", step, total, facts)
        unit_key = f"{task.unit}_per_s"
        saved_at: int | None = step if resumed_from is not None else None
        stopped_early = False
        final: dict | None = None
        interrupt = _DeferredInterrupt(enabled=not info.enabled)
        try:
            interrupt.__enter__()
            model.train()
            while step < total:
                t0 = time.perf_counter()
                lr = schedule(step)
                for name, opt in optimizers.items():
                    set_lr(opt, lr * lr_scales[name])
                grad_norm = None
                if own:
                    step_loss, units, step_metrics = self._own_step(run_model, train_src, step, device, optimizers, loop, log, lr, mgr)
                    for k, v in step_metrics.items():
                        window_metrics.setdefault(k, []).append(v)
                else:
                    step_loss, units, grad_norm = self._step(run_model, train_src, step, device, info, ddp, optimizer, params,
                                                             l1_params, loop, log, lr, mgr, total)
                step += 1
                loop["step_s"] = float(loop.get("step_s") or 0.0) + time.perf_counter() - t0
                window_time += time.perf_counter() - t0
                window_units += units * info.world_size
                window_losses.append(step_loss)
                self._emit("step", step, total, {"loss": step_loss, "lr": lr})

                if step % cfg.log_every == 0 or step == total:
                    rec = {
                        "split": "train",
                        "step": step,
                        "epoch": step * cfg.grad_accum / bpe,
                        "loss": sum(window_losses) / len(window_losses),
                        **{k: sum(v) / len(v) for k, v in window_metrics.items() if v},
                        "lr": lr,
                        unit_key: window_units / window_time if window_time > 0 else None,
                        "mfu": mfu(step_flops * len(window_losses), window_time * info.world_size, peak) if step_flops else None,
                        "elapsed_s": elapsed_before + time.perf_counter() - t_start,
                    }
                    if own and not task.counts_epochs:
                        del rec["epoch"]
                    if grad_norm is not None:
                        rec["grad_norm"] = grad_norm
                    log.log(rec)
                    self._emit("log", step, total, rec)
                    window_time, window_units, window_losses = 0.0, 0, []
                    window_metrics = {}

                if val_src is not None and self._eval_due(step, total, bpe):
                    eval_model = model if fsdp else base
                    if own:
                        final = self._evaluate_own(base, val_src, device, optimizers, step)
                    else:
                        final = self._evaluate(eval_model, val_src, cfg.eval_steps, device, info, sharded=not fsdp)
                    if monitor not in final:
                        raise ConfigError(
                            f"TrainConfig.early_stopping.metric: {monitor!r} is not a validation metric; "
                            f"expected one of {', '.join(k for k, v in final.items() if isinstance(v, (int, float)))}"
                        )
                    rec = {"split": "val", "step": step, **_scalars(final)}
                    if "confusion_matrix" in final:
                        rec["confusion_matrix"] = final["confusion_matrix"]
                    log.log(rec)
                    self._emit("eval", step, total, rec)
                    value = float(final[monitor])
                    best = loop["best"]
                    delta = cfg.early_stopping.min_delta if cfg.early_stopping else 0.0
                    improved = best is None or (
                        value < best["value"] - delta if monitor_mode == "min" else value > best["value"] + delta
                    )
                    if improved and math.isfinite(value):
                        loop["best"] = {"step": step, "metric": monitor, "value": value}
                        loop["bad_evals"] = 0
                        if mgr is not None and (not own or task.checkpoint_ok(base)):
                            if saved_at != step:
                                save(step)
                                saved_at = step
                            if main:
                                mgr.mark_best(step, monitor, value)
                    else:
                        loop["bad_evals"] += 1
                        if cfg.early_stopping and loop["bad_evals"] >= cfg.early_stopping.patience:
                            stopped_early = True
                if (mgr is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and saved_at != step
                        and (not own or task.checkpoint_ok(base))):
                    save(step)
                    saved_at = step
                if stopped_early:
                    break
                if interrupt.requested:
                    path = None
                    if mgr is not None:
                        path = save(step) if saved_at != step else mgr.step_dir(step)
                        saved_at = step
                    raise TrainingInterrupted(
                        f"interrupted at step {step} of {total}; "
                        + (f"checkpoint {path} holds it" if path else "no run directory, nothing was saved"),
                        step, path)
            if mgr is not None and saved_at != step:
                save(step)
                saved_at = step
        finally:
            interrupt.__exit__()
            log.write_csv()
            log.close()
        if main:
            label = self.run_info.get("name") or (model_config or {}).get("family") or type(base).__name__.lstrip("_")
            log.plot(title=f"{label}: {step:,} step{'' if step == 1 else 's'}")
        history = [r for r in log.records if r.get("split") == "train"]
        evals = [r for r in log.records if r.get("split") == "val"]
        if final is None and evals:
            final = evals[-1]
        result = TrainResult(
            steps=step,
            total_steps=total,
            history=history,
            evals=evals,
            final=final,
            best=loop["best"],
            stopped_early=stopped_early,
            run_dir=run_dir,
            seconds=elapsed_before + time.perf_counter() - t_start,
            flops_per_step=step_flops,
            peak_flops=peak,
            start_step=int(facts["start_step"]),
            train_seconds=float(loop.get("step_s") or 0.0),
            notes=notes,
        )
        self._emit("end", step, total, {"steps": step, "stopped_early": stopped_early, "best": loop["best"], "seconds": result.seconds})
        return result

    def _step(self, run_model, train_src: BatchSource, step: int, device, info, ddp, optimizer, params, l1_params,
              loop: dict, log: RunLog, lr: float, mgr, total: int) -> tuple[float, int, float | None]:
        """One supervised optimizer step: ``grad_accum`` micro-batches, the divergence check,
        clipping, the update. Returns (loss, units, grad norm or None)."""
        cfg, task = self.config, self.task
        loss_sum = torch.zeros((), device=device)
        units = 0
        for micro in range(cfg.grad_accum):
            batch = task.to_device(D.shard(train_src.batch(step * cfg.grad_accum + micro), info), device)
            sync = ddp.no_sync() if ddp is not None and micro < cfg.grad_accum - 1 else contextlib.nullcontext()
            with sync:
                with self._autocast(device):
                    loss, _ = task.loss(run_model, batch)
                    objective = loss + cfg.l1 * l1_penalty(l1_params) if cfg.l1 else loss
                (objective / cfg.grad_accum).backward()
            loss_sum += loss.detach().float()
            units += task.count(batch)
        step_loss = float(D.mean_over_processes(loss_sum / cfg.grad_accum, info))
        self._check_divergence(step + 1, step_loss, loop, log, lr, mgr)
        # The step's gradients are complete (and, under DDP, averaged); the weights are
        # not yet updated: per-layer statistics read them here (layerwise.train.layerstats).
        self._emit("gradients", step + 1, total, {"loss": step_loss, "lr": lr})
        grad_norm = None
        if cfg.clip_grad_norm is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return step_loss, units, grad_norm

    def _own_step(self, run_model, train_src: BatchSource, step: int, device, optimizers: dict, loop: dict,
                  log: RunLog, lr: float, mgr) -> tuple[float, int, dict]:
        """One update of a StepTask. Returns (loss, units, the step's other metrics)."""
        task = self.task

        def nonfinite(name: str, value: float) -> None:
            self._check_divergence(step + 1, value, loop, log, lr, mgr, what=f"the {name} loss")

        ctx = self._step_context(step, device, optimizers, nonfinite)
        out = task.train_step(run_model, task.to_device(train_src.batch(step), device), ctx)
        metrics = {k: float(v) for k, v in out.metrics.items()}
        metrics.update({f"grad_norm_{k}": v for k, v in ctx.grad_norms.items()})
        if out.stop:
            last = mgr.latest() if mgr is not None else None
            log.log({"split": "train", "step": step + 1, "loss": out.loss, **metrics, "lr": lr, "error": "collapsed"})
            where = f"last good checkpoint: {last}" if last else "no checkpoint written yet"
            raise CollapseError(f"stopped at step {step + 1}: {out.stop}; {where}")
        self._check_divergence(step + 1, float(out.loss), loop, log, lr, mgr, updated=True)
        return float(out.loss), int(out.units), metrics

    def _check_divergence(self, step: int, loss: float, loop: dict, log: RunLog, lr: float, mgr,
                          what: str = "loss", updated: bool = False) -> None:
        """Stop (before the optimizer step) on a non-finite loss, or one past
        ``diverge_factor`` times the first step's loss. ``updated``: the check comes after
        a task's own update (the message says so); ``what`` names the loss."""
        cfg = self.config
        first = loop.get("initial_loss")
        finite = math.isfinite(loss)
        if finite and first is None:
            loop["initial_loss"] = loss
            return
        grown = (finite and cfg.diverge_factor is not None and first is not None and first != 0
                 and abs(loss) > cfg.diverge_factor * abs(first))
        if finite and not grown:
            return
        last = mgr.latest() if mgr is not None else None
        log.log({"split": "train", "step": step, "loss": loss, "lr": lr, "error": "diverged"})
        where = f"last good checkpoint: {last}" if last else "no checkpoint written yet"
        stopped = "stopped after this step's update" if updated else "stopped before updating the weights with it"
        if not finite:
            raise NonFiniteLossError(
                f"diverged at step {step} ({what} {loss}, not finite); {stopped}; "
                f"{where}; try a smaller --lr, --clip-grad-norm, or --precision fp32")
        raise DivergedError(
            f"diverged at step {step} ({what} {loss:.4g}, more than {cfg.diverge_factor:g}x the first step's {first:.4g}); "
            f"{stopped}; {where}; try a smaller --lr or --clip-grad-norm")

    def _eval_due(self, step: int, total: int, bpe: int) -> bool:
        cfg = self.config
        if step == total:
            return True
        if cfg.eval_every:
            return step % cfg.eval_every == 0
        if cfg.epochs is not None:  # once per epoch
            ga = cfg.grad_accum
            return (step * ga) // bpe > ((step - 1) * ga) // bpe
        return False

    def _restore(self, path: Path, base: nn.Module, fsdp_model: nn.Module | None, optimizers: dict, info: D.DistInfo) -> tuple[int, dict]:
        cfg = self.config
        own = isinstance(self.task, StepTask)
        if own:
            ck = load_checkpoint(path, self.task.checkpoint_models(base))
        elif fsdp_model is None and self.saved_names is not None:
            ck = load_checkpoint(path, {"model": self.saved_module}, names={"model": self.saved_names})
        elif fsdp_model is None:
            ck = load_checkpoint(path, {"model": base})
        else:
            ck = load_checkpoint(path)
            msd = read_safetensors(path / "model.safetensors")[0]
            D.load_full_state(fsdp_model, optimizers["optimizer"], msd, ck.optimizer_state_dict())
        saved = ck.state.get("train_config", {})
        for name in _RESUME_MUST_MATCH:
            if name in saved and saved[name] != getattr(cfg, name):
                raise ConfigError(
                    f"resume: TrainConfig.{name} is {getattr(cfg, name)!r} but the checkpoint {path} was trained with "
                    f"{saved[name]!r}; an exact resume needs the same value"
                )
        if fsdp_model is None:
            for name, opt in optimizers.items():
                ck.load_optimizer(opt, name)
        if own:
            prefix = "task/"
            self.task.load_state_dict({k[len(prefix):]: v for k, v in ck.tensors.items() if k.startswith(prefix)},
                                      dict(ck.state.get("task_state") or {}))
        ck_run = ck.state.get("run_id")
        if self.run is not None and ck_run and self.run.run_id and ck_run != self.run.run_id:
            raise ConfigError(
                f"--resume: checkpoint {path} was written by run {ck_run[:8]}, not by this directory's run "
                f"{self.run.run_id[:8]}; the two runs would mix (--overwrite starts this directory again)")
        ck.restore_rng()
        loop = dict(ck.state.get("loop") or {"best": None, "bad_evals": 0})
        if info.is_main and self.config.out_dir is not None:
            CheckpointManager(Path(cfg.out_dir) / "checkpoints", cfg.keep_last).discard_after(ck.step)
        D.barrier(info)
        return ck.step, loop


def train(
    model: nn.Module,
    task: Task,
    train_data: Any,
    val_data: Any = None,
    config: TrainConfig | None = None,
    resume: bool = False,
    callback: Callable[[Event], None] | None = None,
    run_info: dict | None = None,
    overwrite: bool = False,
    **overrides: Any,
) -> TrainResult:
    """``Trainer(...).fit(resume, overwrite)`` in one call; ``overrides`` replace TrainConfig fields."""
    config = config if config is not None else TrainConfig()
    if overrides:
        config = config.replace(**overrides)
    return Trainer(model, task, train_data, val_data, config, callback, run_info).fit(resume=resume, overwrite=overwrite)
