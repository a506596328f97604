"""Planning jobs: a plan per fine-tuning strategy, strategies side by side, the plan of
what the Trainer runs, and a measured step that checks a plan.

These combine the analysis (:func:`layerwise.analysis.plan.plan`, which plans a model
as it is), the fine-tuning strategies (applied to a meta copy, so the caller's model is
never changed) and the Trainer's optimizer (:func:`layerwise.train.optim.make_optimizer`),
so they live above all three. "Will it fit?" is :mod:`layerwise.jobs.fit`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from layerwise.analysis.memory import (
    SavedTensors,
    autocast,
    checkpointed,
    default_loss,
    storage_bytes,
    storage_key,
)
from layerwise.analysis.plan import (  # noqa: F401
    DEVICES,
    GiB,
    Plan,
    _blocks,
    make_batch,
    meta_copy,
    plan_inference,
)
from layerwise.analysis.plan import plan as plan_model
from layerwise.errors import ConfigError, LayerwiseError, UnknownNameError
from layerwise.finetune.strategies import StrategyRecord, apply_strategy, parse_strategy
from layerwise.vocab import DEFAULT_MOMENTUM, optimizer_spec, precision_spec

COMPARE_STRATEGIES = ("full", "head", "top-2", "bitfit", "lora:8", "lora:16", "adapter:64")


def prepare(model: nn.Module, strategy: str | None, strategy_options: dict | None = None
            ) -> tuple[nn.Module, StrategyRecord | None]:
    """A meta copy of ``model`` with ``strategy`` applied (the caller's model is untouched)."""
    if strategy is None:
        on_meta = all(t.device.type == "meta" for t in list(model.parameters()) + list(model.buffers()))
        return (model if on_meta else meta_copy(model)), None
    parse_strategy(strategy)  # a bad spec fails before the copy
    m = meta_copy(model)
    return m, apply_strategy(m, strategy, **(strategy_options or {}))


def strategy_defaults(record: StrategyRecord | None, precision: str | None, optimizer: str | None,
                      base_dtype: str | None) -> tuple[str, str, str | None]:
    """(precision, optimizer, base_dtype): what the caller gave, else what the strategy implies.

    ``qlora:R`` plans QLoRA's setting (Dettmers et al. 2023): an nf4 base, bf16 compute and
    LoRA factors, paged AdamW with 32-bit moments. Other strategies: fp32 and AdamW.
    """
    base = getattr(record, "base_dtype", None) if record is not None else None
    if base is not None and base_dtype is not None and base_dtype != base:
        if not (base in ("nf4", "fp4") and base_dtype in ("nf4", "fp4")):
            raise ConfigError(f"--base-dtype {base_dtype}: the strategy {record.strategy} plans a 4-bit base; "
                              f"for an {base_dtype} base use lora:R --base-dtype {base_dtype}")
        base = base_dtype
    base = base or base_dtype
    if record is not None and getattr(record, "base_dtype", None):
        return precision or "bf16-true", optimizer or "paged-adamw", base
    return precision or "fp32", optimizer or "adamw", base


def trainer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """The parameter groups the Trainer's optimizer gets (decayed, not decayed)."""
    from layerwise.train.optim import split_decay

    return [g for g in split_decay(model) if g]


def plan(model: nn.Module, strategy: str | None = None, strategy_options: dict | None = None,
         precision: str | None = None, optimizer: str | None = None, base_dtype: str | None = None,
         **kwargs) -> Plan:
    """:func:`layerwise.analysis.plan.plan` (``plan_model``) of ``model`` with ``strategy`` applied to a meta copy.

    strategy: a fine-tuning strategy (``"lora:16"``, ``"head"``, ``"top-2"``, ``"qlora:16"`` …,
        see :func:`layerwise.finetune.apply_strategy`); None keeps the model's own flags.
    strategy_options: keyword arguments for ``apply_strategy`` (``lora_targets``,
        ``lora_alpha``, ``lora_dropout``).
    precision, optimizer, base_dtype: default to what the strategy implies (QLoRA: bf16-true,
        paged AdamW, nf4), else fp32 and AdamW. Everything else: see the analysis planner.
    """
    m, record = prepare(model, strategy, strategy_options)
    return plan_prepared(m, record, strategy, precision=precision, optimizer=optimizer, base_dtype=base_dtype, **kwargs)


def plan_prepared(m: nn.Module, record: StrategyRecord | None, strategy: str | None, precision: str | None = None,
                  optimizer: str | None = None, base_dtype: str | None = None, param_groups=None, **kwargs) -> Plan:
    """:func:`plan` of a model :func:`prepare` made (the planner does not change it: one prepared
    model serves many plans, as "will it fit?" makes)."""
    precision, optimizer, base_dtype = strategy_defaults(record, precision, optimizer, base_dtype)
    return plan_model(m, precision=precision, optimizer=optimizer, base_dtype=base_dtype, strategy=strategy,
                      strategy_record=record.to_dict() if record is not None else None,
                      param_groups=param_groups if param_groups is not None else trainer_groups(m), **kwargs)


def compare_strategies(model: nn.Module, strategies=COMPARE_STRATEGIES, skipped: dict[str, str] | None = None,
                       **kwargs) -> list[Plan]:
    """:func:`plan` for each strategy, side by side (the model is not changed).

    A strategy that does not apply to the model (LoRA without attention projections,
    top-k without repeated blocks) raises, unless ``skipped`` is a dict: then it is
    left out and its reason recorded there.
    """
    strategies = list(strategies)
    if not strategies:
        raise ConfigError("--compare-strategies: expected a comma-separated list of strategies, got none")
    dup = sorted({s for s in strategies if strategies.count(s) > 1})
    if dup:
        raise ConfigError(f"--compare-strategies: {', '.join(dup)} given twice")
    for s in strategies:
        parse_strategy(s)
    plans = []
    for s in strategies:
        try:
            plans.append(plan(model, strategy=s, **kwargs))
        except ConfigError as e:
            if skipped is None:
                raise
            skipped[s] = str(e)
    if not plans:
        raise ConfigError(f"no strategy applies to {kwargs.get('name') or type(model).__name__}: "
                          + "; ".join(f"{k}: {v}" for k, v in (skipped or {}).items()))
    return plans


def _as_kwargs(model: nn.Module, args: tuple, kwargs: dict):
    if not kwargs:
        return args
    return dict(inspect.signature(model.forward).bind(*args, **kwargs).arguments)


def plan_training(model: nn.Module, config, batch: tuple[torch.Tensor, ...], task=None, name: str | None = None,
                  **kwargs) -> Plan:
    """The plan of the step the Trainer runs for ``model`` (as it will train: strategy applied,
    or the frozen-prefix cache's suffix) with ``config`` (a TrainConfig) on ``batch``.

    The optimizer, its momentum and implementation, the precision and the device are the
    Trainer's (``make_optimizer``'s choice of fused/foreach on the config's device); the
    inputs are what ``task.model_inputs(batch)`` gives the model.
    """
    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device).type
    if task is not None:
        args, kw = task.model_inputs(batch)
        inputs = _as_kwargs(model, args, kw)
    else:
        inputs = batch[:-1]
    params = [p for p in model.parameters() if p.requires_grad]
    from layerwise.train.optim import optimizer_implementation

    impl = optimizer_implementation(config.optimizer, params, device=device) if params else "auto"
    m = meta_copy(model)
    return plan_model(m, optimizer=config.optimizer, momentum=config.momentum, optimizer_impl=impl,
                          precision=precision_spec(config.precision).name, inputs=inputs, device=device,
                          name=name or type(model).__name__, param_groups=trainer_groups(m), **kwargs)


# ----------------------------------------------------------------------------- GANs


class _DiscriminatorStep(nn.Module):
    """The discriminator's step of a GAN: real images and a generated batch (no gradient into G)."""

    def __init__(self, gan: nn.Module) -> None:
        super().__init__()
        self.gan = gan

    def forward(self, z: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        fake = self.gan(z).detach()  # (B, C, H, W)
        return torch.cat([self.gan.discriminate(real), self.gan.discriminate(fake)])  # (2B, 1) logits


class _GeneratorStep(nn.Module):
    """The generator's step: D(G(z)), the gradient flowing through the frozen discriminator into G."""

    def __init__(self, gan: nn.Module) -> None:
        super().__init__()
        self.gan = gan

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.gan.discriminate(self.gan(z))  # (B, 1) logits


def is_gan(model: nn.Module) -> bool:
    """A model with a generator, a discriminator and ``discriminate(x)`` (layerwise's GAN family)."""
    return all(hasattr(model, a) for a in ("generator", "discriminator", "discriminate"))


@dataclass
class GANPlan:
    """The two steps of GAN training (Goodfellow et al. 2014; the DCGAN recipe): the discriminator
    on real and generated images, then the generator through the discriminator. Each step's plan
    holds both networks' weights and its own network's gradients and optimizer state; the other
    network's optimizer state is live too, so the GAN's peak is the larger of the two sums."""

    discriminator: Plan
    generator: Plan
    peak_bytes: int
    peak_step: str

    def to_dict(self) -> dict:
        return {"discriminator": self.discriminator.to_dict(), "generator": self.generator.to_dict(),
                "peak_bytes": self.peak_bytes, "peak_step": self.peak_step}


def plan_gan(model: nn.Module, batch_size: int = 1, name: str | None = None, precision: str | None = None,
             optimizer: str | None = None, **kwargs) -> GANPlan:
    """Plan both steps of training a GAN (see :class:`GANPlan`); ``batch_size`` images per step."""
    if not is_gan(model):
        raise ConfigError(f"{type(model).__name__} is not a GAN (no generator, discriminator and discriminate())")
    for k in ("seq_len", "input_shape", "inputs"):
        if kwargs.get(k) is not None:
            raise ConfigError(f"--{k.replace('_', '-')}: a GAN's steps take noise and images; use --batch")
        kwargs.pop(k, None)
    kwargs.pop("strategy", None)
    name = name or type(model).__name__
    cfg = model.config
    steps = {}
    for label, wrapper, train in (("discriminator", _DiscriminatorStep, "discriminator"),
                                  ("generator", _GeneratorStep, "generator")):
        m = meta_copy(model)
        for net in ("generator", "discriminator"):
            for p in getattr(m, net).parameters():
                p.requires_grad_(net == train)
        z = torch.empty(batch_size, cfg.latent_dim, device="meta")
        inputs = (z, torch.empty(batch_size, *cfg.image_shape, device="meta")) if train == "discriminator" else (z,)
        step = wrapper(m)
        steps[label] = plan_model(step, inputs=inputs, name=f"{name} ({label} step)", strategy=f"{label} step",
                                  precision=precision or "fp32", optimizer=optimizer or "adamw",
                                  param_groups=trainer_groups(step), **kwargs)
    d, g = steps["discriminator"], steps["generator"]
    totals = {"discriminator": d.peak_bytes + g.optimizer_state_bytes, "generator": g.peak_bytes + d.optimizer_state_bytes}
    which = max(totals, key=totals.get)
    return GANPlan(d, g, totals[which], which)


# ----------------------------------------------------------------------------- measure


@dataclass
class Measurement:
    """A real training step next to its plan. Bytes; ``None`` where not measured."""

    plan: Plan
    device: str
    method: str
    optimizer_impl: str  # what make_optimizer built
    weight_bytes: int
    buffer_bytes: int
    gradient_bytes: int
    optimizer_state_bytes: int
    input_bytes: int
    saved_bytes: int  # real saved_tensors_hooks, unique storages
    activation_bytes: int  # allocated after the model's forward − before
    loss_bytes: int
    forward_peak_bytes: int
    backward_peak_bytes: int
    step_peak_bytes: int
    peak_bytes: int
    seconds: float

    def rows(self) -> list[tuple[str, int, int, float | None]]:
        """(component, estimate, measured, error in % of measured)."""
        p = self.plan
        pairs = [
            ("weights", p.weight_bytes, self.weight_bytes),
            ("buffers", p.buffer_bytes, self.buffer_bytes),
            ("gradients", p.gradient_bytes, self.gradient_bytes),
            ("optimizer state", p.optimizer_state_bytes, self.optimizer_state_bytes),
            ("inputs", p.input_bytes, self.input_bytes),
            ("saved for backward", p.saved_bytes, self.saved_bytes),
            ("activations (after forward)", p.activation_bytes, self.activation_bytes),
            ("loss", p.loss_bytes, self.loss_bytes),
            ("forward peak", p.forward_peak_bytes, self.forward_peak_bytes),
            ("backward peak", p.backward_peak_bytes, self.backward_peak_bytes),
            ("optimizer step peak", p.step_peak_bytes, self.step_peak_bytes),
            ("peak", p.peak_bytes, self.peak_bytes),
        ]
        return [(n, e, m, error_pct(e, m)) for n, e, m in pairs]

    @property
    def peak_error_pct(self) -> float | None:
        return error_pct(self.plan.peak_bytes, self.peak_bytes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["rows"] = [dict(zip(("component", "estimate", "measured", "error_pct"), r)) for r in self.rows()]
        return d


def error_pct(estimate: int, measured: int) -> float | None:
    return None if not measured else 100.0 * (estimate - measured) / measured


def materialize(model: nn.Module, device: str | torch.device) -> nn.Module:
    """Allocate a meta model's tensors on ``device`` (in place) with small random values; ties kept."""
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for mod in model.modules():
        for n, p in mod._parameters.items():
            if p is not None:
                owners.setdefault(id(p), []).append((mod, n))
    model.to_empty(device=device)
    for group in owners.values():
        first = group[0][0]._parameters[group[0][1]]
        for mod, n in group[1:]:
            mod._parameters[n] = first
    gen = torch.Generator(device="cpu").manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.02)
        for n, b in model.named_buffers():
            if n.endswith("running_var"):
                b.fill_(1)
            else:
                b.zero_()
    return model


def available_bytes(dev: torch.device) -> int | None:
    """Memory free for a measurement on ``dev`` (None if unknown)."""
    if dev.type == "cuda":
        return torch.cuda.mem_get_info(dev)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _opt_state_tensors(opt) -> list[torch.Tensor]:
    return [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]


def measure(
    model: nn.Module,
    strategy: str | None = None,
    optimizer: str = "adamw",
    precision: str = "fp32",
    batch_size: int = 1,
    seq_len: int | None = None,
    input_shape=None,
    inputs=None,
    grad_checkpointing: bool = False,
    device: str = "cpu",
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    name: str | None = None,
    strategy_options: dict | None = None,
    momentum: float = DEFAULT_MOMENTUM,
) -> Measurement:
    """Run one real training step with the same settings as :func:`plan` and measure it.

    The optimizer is the one the Trainer builds (:func:`layerwise.train.optim.make_optimizer`
    over the model's decay groups: fused where torch has it, else foreach), and the plan is
    made for that implementation. A meta copy of the model gets the strategy, is
    allocated on ``device`` with random values (memory does not depend on them; the
    caller's model is not touched), one warm-up step allocates the optimizer state, then
    a second step is measured:

    - CPU: ``torch.profiler`` with ``profile_memory=True`` records every allocation and
      free of the CPU allocator; their running sum over the step, on top of the bytes
      already live (weights, buffers, optimizer state, batch: counted from their
      storages), gives the live bytes at each moment and the peak of each phase. LSTMs run
      oneDNN's kernel, as a CPU training step does.
    - CUDA: ``torch.cuda.memory_allocated`` / ``max_memory_allocated`` around each phase.

    Saved-for-backward bytes are counted with the same ``saved_tensors_hooks`` as the
    estimate, on the real tensors. The estimate is planned for the same device type.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    from layerwise.train.optim import make_optimizer, optimizer_implementation

    dev = torch.device(device)
    if dev.type not in DEVICES:
        raise UnknownNameError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    spec = optimizer_spec(optimizer)
    if not spec.trainer:
        raise ConfigError(f"--measure runs torch's own optimizers; {optimizer} is planned only")
    prec = precision_spec(precision)
    real, _ = prepare(model, strategy, strategy_options)
    real = meta_copy(real) if real is model else real
    groups = trainer_groups(real)
    impl = optimizer_implementation(optimizer, [p for g in groups for p in g], device=dev.type) if groups else "auto"
    est = plan(model, strategy=strategy, optimizer=optimizer, precision=prec.name, batch_size=batch_size,
               seq_len=seq_len, input_shape=input_shape, inputs=inputs, grad_checkpointing=grad_checkpointing,
               device=dev.type, loss_fn=loss_fn, name=name, strategy_options=strategy_options, momentum=momentum,
               optimizer_impl=impl)
    if est.base_dtype is not None:
        raise ConfigError(f"--measure runs the step with torch's own layers; a {est.base_dtype} base "
                          f"({strategy or '--base-dtype'}) is planned, not run here")
    param_dtype, amp = prec.param_dtype, prec.autocast_dtype
    loss_fn = loss_fn or default_loss
    free = available_bytes(dev)
    if free is not None and est.peak_bytes > 0.9 * free:
        raise LayerwiseError(f"measure: the plan's peak, {est.peak_bytes / GiB:.2f} GiB, does not fit in the "
                             f"{free / GiB:.2f} GiB available on {dev}; measure a smaller batch or model")

    materialize(real, dev)
    if param_dtype != torch.float32:
        real = real.to(dtype=param_dtype)
    real.train()
    if inputs is not None:
        batch = torch.utils._pytree.tree_map(lambda x: x.to(dev) if isinstance(x, torch.Tensor) else x, inputs)
    else:
        batch = make_batch(real, None, input_shape, batch_size, seq_len)
    if param_dtype != torch.float32:
        batch = torch.utils._pytree.tree_map(
            lambda x: x.to(param_dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x, batch)
    blocks = _blocks(real) if grad_checkpointing else []
    trainable = [p for p in {id(p): p for p in real.parameters()}.values() if p.requires_grad]
    opt = make_optimizer(real, optimizer, lr=1e-4, momentum=momentum)
    scaler = torch.amp.GradScaler(dev.type) if amp == torch.float16 else None
    params_buffers = list(real.parameters()) + list(real.buffers())
    exclude = {storage_key(t) for t in params_buffers}
    exclude |= {storage_key(t) for t in torch.utils._pytree.tree_leaves(batch) if isinstance(t, torch.Tensor)}
    marks: dict[str, float] = {}
    result: dict[str, int] = {}
    saved = SavedTensors(exclude)
    cuda = dev.type == "cuda"
    native = contextlib.nullcontext() if dev.type == "cpu" else _native(real)

    def mark(label: str) -> None:
        if cuda:
            torch.cuda.synchronize(dev)
            marks[label] = torch.cuda.memory_allocated(dev)
            marks[label + ":peak"] = torch.cuda.max_memory_allocated(dev)
            torch.cuda.reset_peak_memory_stats(dev)

    def step(record: bool) -> None:
        ctx = saved.hooks() if record else torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)
        with record_function("layerwise::forward"), ctx:
            with checkpointed(blocks) if blocks else contextlib.nullcontext(), native, autocast(prec.name, dev.type):
                out = _call(real, batch)
                mark("model")
                with record_function("layerwise::loss"):
                    loss = loss_fn(out)
        mark("forward")
        with record_function("layerwise::backward"):
            (scaler.scale(loss) if scaler else loss).backward()
        del out, loss
        mark("backward")
        if record:
            result["gradients"] = storage_bytes(p.grad for p in trainable if p.grad is not None)
        with record_function("layerwise::step"):
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
        mark("step")
        opt.zero_grad(set_to_none=True)

    step(record=False)  # allocates the optimizer state
    gc.collect()
    weight_bytes = storage_bytes(real.parameters())
    buffer_bytes = storage_bytes(real.buffers())
    opt_bytes = storage_bytes(_opt_state_tensors(opt))
    leaves = [t for t in torch.utils._pytree.tree_leaves(batch) if isinstance(t, torch.Tensor)]
    input_bytes = storage_bytes(leaves)
    base = storage_bytes(params_buffers + _opt_state_tensors(opt) + leaves)
    t0 = time.perf_counter()
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        start = torch.cuda.memory_allocated(dev)
        step(record=True)
        seconds = time.perf_counter() - t0
        act = marks["model"] - start
        loss_b = marks["forward"] - marks["model"]
        fwd_peak = max(marks["model:peak"], marks["forward:peak"]) - start + base
        bwd_peak = marks["backward:peak"] - start + base
        step_peak = marks["step:peak"] - start + base
        method = "torch.cuda.memory_allocated / max_memory_allocated per phase"
    else:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step(record=True)
        seconds = time.perf_counter() - t0
        live = profiler_phases(prof)
        act = live["forward_model_end"]
        loss_b = live["forward_end"] - live["forward_model_end"]
        fwd_peak = base + live["forward_peak"]
        bwd_peak = base + live["backward_peak"]
        step_peak = base + live["step_peak"]
        method = "torch.profiler memory events (CPU allocator), on top of the live weights, state and batch"
    return Measurement(
        plan=est, device=str(dev), method=method, optimizer_impl=impl, weight_bytes=weight_bytes,
        buffer_bytes=buffer_bytes, gradient_bytes=result["gradients"], optimizer_state_bytes=opt_bytes,
        input_bytes=input_bytes, saved_bytes=saved.bytes, activation_bytes=act, loss_bytes=loss_b,
        forward_peak_bytes=fwd_peak, backward_peak_bytes=bwd_peak, step_peak_bytes=step_peak,
        peak_bytes=max(fwd_peak, bwd_peak, step_peak), seconds=seconds,
    )


def _native(model: nn.Module):
    from layerwise.analysis.memory import native_rnns

    return native_rnns(model)


def _call(model, inputs):
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def profiler_phases(prof, spans_prefix: str = "layerwise::") -> dict[str, int]:
    """Running sum of the CPU allocator's events: live bytes at the phase marks and each phase's
    peak, relative to the bytes live when the forward span starts.

    Profiling may start earlier (warm-up steps included): frees of blocks allocated before the
    profiler started are not reported, which shifts the running sum by a constant that the
    difference from the step's start removes."""
    events = list(prof.profiler.kineto_results.events())
    spans = {}
    for e in events:
        if e.name().startswith(spans_prefix):
            spans[e.name()[len(spans_prefix):]] = (e.start_ns(), e.start_ns() + e.duration_ns())
    mem = sorted((e for e in events if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")),
                 key=lambda e: e.start_ns())
    out = {"forward_peak": 0, "backward_peak": 0, "step_peak": 0}
    cur = 0
    f_start, f_end = spans["forward"]
    model_end = spans["loss"][0]
    b_end = spans["backward"][1]
    s_end = spans["step"][1]
    base = None
    model_done = forward_done = False
    for e in mem:
        t = e.start_ns()
        if t < f_start:
            cur += e.nbytes()
            continue
        if base is None:
            base = cur
        if t > s_end:
            break
        if not model_done and t >= model_end:
            out["forward_model_end"] = cur - base
            model_done = True
        if not forward_done and t > f_end:
            out["forward_end"] = cur - base
            forward_done = True
        cur += e.nbytes()
        phase = "forward_peak" if t <= f_end else ("backward_peak" if t <= b_end else "step_peak")
        out[phase] = max(out[phase], cur - base)
    base = cur if base is None else base
    out.setdefault("forward_model_end", cur - base)
    out.setdefault("forward_end", cur - base)
    return out
