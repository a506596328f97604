""""Will it fit?": for each fine-tuning strategy and precision, whether one training step
fits in a memory budget per device, the largest batch and sequence length that fit,
whether gradient checkpointing is needed, the time per step, and one recommendation.

Every answer is a plan (:func:`layerwise.jobs.plan.plan`), checked: the peak of a step is
affine in the batch size (every activation is), so two plans give the largest batch
and a third confirms it (and that one more does not fit). The peak is a polynomial of
degree at most 2 in the sequence length (attention without a fused kernel keeps s×s
scores), so three plans predict the longest sequence that fits, and plans confirm it to
1% (a bisection takes over if the prediction misses). The searches plan memory only; the
time per step is planned with FLOPs at the answer.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from layerwise.analysis.plan import _context_limit
from layerwise.errors import ConfigError
from layerwise.jobs.plan import plan_prepared, prepare, trainer_groups

FIT_STRATEGIES = ("full", "top-2", "lora:16", "qlora:16", "head")
FIT_PRECISIONS = ("bf16-mixed", "bf16-true", "fp32")
MAX_BATCH = 1 << 16
# preference when recommending: the strategy that trains more (Hu et al. 2021 and Dettmers et al. 2023
# find LoRA on all layers close to full fine-tuning; QLoRA costs dequantization time), then no
# checkpointing (no recomputation), then precision (bf16-mixed keeps fp32 master weights)
_STRATEGY_ORDER = ("full", "top", "lora", "qlora", "adapter", "bitfit", "head")
_PRECISION_ORDER = ("bf16-mixed", "bf16-true", "fp16-mixed", "fp16-true", "fp32")

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4, "tb": 1000**4, "tib": 1024**4}


def parse_bytes(text: str | int, flag: str = "--budget") -> int:
    """'24GiB' / '80 GB' / '1.5TiB' / '512M' / 2**30 -> bytes (K/M/G/T alone are binary units)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise ConfigError(f"{flag} {text!r}: expected a size such as 24GiB, 80GB or 512MiB")
        value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise ConfigError(f"{flag} {text!r}: expected a size > 0")
    return value


@dataclass
class FitRow:
    strategy: str
    precision: str
    trainable: int
    fits: bool  # at the requested batch and sequence length, with checkpointing if needed
    needs_checkpointing: bool  # fits only with gradient checkpointing
    peak_bytes: int  # at the requested batch and sequence length (with checkpointing if needed)
    peak_phase: str
    max_batch: int  # largest batch per device that fits at the requested sequence length (0: none)
    max_seq_len: int | None  # largest sequence length that fits at the requested batch (None: no sequence)
    seconds_per_step: float | None  # at max_batch (or the requested batch), at --tflops
    tokens_per_second: float | None
    base_dtype: str | None = None
    note: str = ""


@dataclass
class FitReport:
    model: str
    budget_bytes: int
    devices: int
    shard: str
    batch_size: int
    seq_len: int | None
    tflops: float | None
    rows: list[FitRow]
    recommended: FitRow | None
    why: str
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return d


def _affine_max(p1, p2, budget: int, b1: int, b2: int) -> int:
    """The largest batch b with every phase's peak(b) <= budget, from plans at b1 and b2."""
    best = MAX_BATCH
    for phase in ("forward_peak_bytes", "backward_peak_bytes", "step_peak_bytes"):
        y1, y2 = getattr(p1, phase), getattr(p2, phase)
        slope = (y2 - y1) / (b2 - b1)
        if slope <= 0:
            continue
        best = min(best, int(b1 + (budget - y1) // slope))
    return max(best, 0)


def _max_batch(run: Callable[[int], object], budget: int, first) -> int:
    """Largest batch that fits, confirmed by plans (``first``: the plan at batch 1, which fits)."""
    second = run(2)
    if second.peak_bytes > budget:
        return 1
    b = max(2, min(_affine_max(first, second, budget, 1, 2), MAX_BATCH))
    # confirm: b fits and b + 1 does not (a few steps either way if rounding moved the line)
    for _ in range(6):
        p = run(b)
        if p.peak_bytes > budget:
            b = max(1, b - 1)
            continue
        if b >= MAX_BATCH or run(b + 1).peak_bytes > budget:
            return b
        b += 1
    return b


def _quadratic_root(points: list[tuple[int, int]], budget: int) -> float | None:
    """The largest x with q(x) = budget for the quadratic q through three (x, y) points."""
    (x0, y0), (x1, y1), (x2, y2) = points
    # Newton's divided differences: q(x) = y0 + d1 (x - x0) + d2 (x - x0)(x - x1)
    d01, d12 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
    d2 = (d12 - d01) / (x2 - x0)
    a, b = d2, d01 - d2 * (x0 + x1)
    c = y0 - d01 * x0 + d2 * x0 * x1 - budget
    if abs(a) < 1e-12:
        return None if b <= 0 else -c / b
    disc = b * b - 4 * a * c
    if disc < 0:
        return None
    roots = [(-b + sign * disc ** 0.5) / (2 * a) for sign in (1, -1)]
    roots = [r for r in roots if r >= x0]
    return max(roots) if roots else None


def _max_seq(run: Callable[[int], object], budget: int, lo: int, limit: int) -> int:
    """Largest sequence length in [lo, limit] that fits (``lo`` fits), to 1%: three plans predict
    it (the peak is at most quadratic in the length), plans confirm it, bisection if they do not."""
    if run(limit).peak_bytes <= budget:
        return limit
    hi = limit  # does not fit
    xs = sorted({lo, max(lo + 1, (lo + hi) // 2), hi})
    if len(xs) == 3:
        guess = _quadratic_root([(x, run(x).peak_bytes) for x in xs], budget)
        if guess is not None and lo <= guess < hi:
            g = int(guess)
            step = max(1, g // 100)
            if run(g).peak_bytes <= budget:
                lo = g
                if run(min(hi, g + step)).peak_bytes > budget:
                    hi = min(hi, g + step)
            else:
                hi = g
    while hi - lo > max(1, lo // 100):
        mid = (lo + hi) // 2
        if run(mid).peak_bytes <= budget:
            lo = mid
        else:
            hi = mid
    return lo


def _rank(row: FitRow) -> tuple:
    kind = re.split(r"[:\-+]", row.strategy)[0]
    s = _STRATEGY_ORDER.index(kind) if kind in _STRATEGY_ORDER else len(_STRATEGY_ORDER)
    p = _PRECISION_ORDER.index(row.precision) if row.precision in _PRECISION_ORDER else len(_PRECISION_ORDER)
    return (s, row.needs_checkpointing, p, -row.max_batch)


def fit(model: nn.Module, budget: int | str, strategies=FIT_STRATEGIES, precisions=FIT_PRECISIONS,
        batch_size: int = 1, seq_len: int | None = None, devices: int = 1, shard: str = "ddp",
        tflops: float | None = None, device: str = "cuda", name: str | None = None,
        progress: Callable[[int, int, str], None] | None = None, **kwargs) -> FitReport:
    """Whether each strategy × precision fits in ``budget`` bytes per device (see the module docstring).

    ``batch_size`` (per device) and ``seq_len`` (default: the model's example length) are
    the step asked about; ``qlora:R`` rows plan QLoRA's own precision (nf4 base, bf16).
    ``progress(done, total, label)`` is called after each configuration.
    """
    budget = parse_bytes(budget)
    strategies = list(strategies)
    if not strategies:
        raise ConfigError("--fit-strategies: expected at least one strategy")
    name = name or type(model).__name__
    combos = []
    for s in strategies:
        if s.split(":")[0] == "qlora":
            combos.append((s, None))
        else:
            combos += [(s, prec) for prec in precisions]
    rows: list[FitRow] = []
    skipped: dict[str, str] = {}
    limit = _context_limit(model)
    common = dict(devices=devices, shard=shard, tflops=tflops, device=device, name=name, **kwargs)
    for i, (strategy, precision) in enumerate(combos):
        label = f"{strategy} {precision or '(its own precision)'}"
        try:
            rows.append(_fit_one(model, strategy, precision, budget, batch_size, seq_len, limit, common))
        except ConfigError as e:
            skipped[label] = str(e)
        if progress is not None:
            progress(i + 1, len(combos), label)
    if not rows:
        raise ConfigError(f"no strategy applies to {name}: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    fitting = [r for r in rows if r.fits]
    rec = min(fitting, key=_rank) if fitting else None
    return FitReport(name, budget, devices, shard, batch_size, seq_len, tflops, rows, rec, _why(rec, rows, budget),
                     skipped)


def _fit_one(model, strategy, precision, budget, batch, seq_len, limit, common) -> FitRow:
    common = {k: v for k, v in common.items() if k != "grad_checkpointing"}
    options = common.pop("strategy_options", None)
    prepared, record = prepare(model, strategy, options)  # once: the planner does not change it
    groups = trainer_groups(prepared)
    memo: dict = {}

    def run(b: int, s: int | None = seq_len, ckpt: bool = False, flops: bool = False):
        """The plan at batch b and length s (memory only unless ``flops``), each planned once."""
        key = (b, s, ckpt, flops)
        if key not in memo:
            memo[key] = plan_prepared(prepared, record, strategy, precision=precision, batch_size=b, seq_len=s,
                                      grad_checkpointing=ckpt, compute_flops=flops, param_groups=groups, **common)
        return memo[key]

    base = run(batch, flops=True)
    memo[(batch, seq_len, False, False)] = base
    prec = base.precision
    ckpt = False
    at = base
    if base.peak_bytes > budget:
        try:
            at = run(batch, ckpt=True)
            ckpt = True
        except ConfigError:  # no repeated blocks to checkpoint
            at = base
    fits = at.peak_bytes <= budget
    seq = base.seq_len if base.tokens_per_step else None
    max_batch = 0
    max_seq = None
    if fits:
        one = run(1, ckpt=ckpt) if batch != 1 else at
        max_batch = _max_batch(lambda b: run(b, ckpt=ckpt), budget, one)
        if seq is not None:
            top = limit[1] if limit else max(seq, 1) * 64
            max_seq = _max_seq(lambda s: run(batch, s, ckpt=ckpt), budget, seq, top)
    elif seq is not None:
        # a shorter sequence may fit at this batch (with checkpointing if it helps)
        short = run(batch, 1, ckpt=ckpt)
        max_seq = _max_seq(lambda s: run(batch, s, ckpt=ckpt), budget, 1, seq) if short.peak_bytes <= budget else 0
    secs = tps = None
    if fits:
        speed_plan = run(max_batch, ckpt=ckpt, flops=True)
        secs = speed_plan.seconds_per_step
        tps = (speed_plan.tokens_per_step * base.devices / secs) if (secs and speed_plan.tokens_per_step) else None
    note = ""
    if ckpt and fits:
        note = "fits only with gradient checkpointing"
    elif not fits:
        note = f"needs {at.peak_bytes / 2**30:,.2f} GiB{' even with checkpointing' if ckpt else ''}" + (
            f"; up to {max_seq:,} tokens fit" if max_seq else "")
    return FitRow(strategy=strategy, precision=prec, trainable=base.trainable, fits=fits, needs_checkpointing=ckpt and fits,
                  peak_bytes=at.peak_bytes, peak_phase=at.peak_phase, max_batch=max_batch, max_seq_len=max_seq,
                  seconds_per_step=secs, tokens_per_second=tps, base_dtype=base.base_dtype, note=note)


def _why(rec: FitRow | None, rows: list[FitRow], budget: int) -> str:
    gib = budget / 2**30
    if rec is None:
        least = min(rows, key=lambda r: r.peak_bytes)
        return (f"nothing fits in {gib:,.2f} GiB: the smallest step is {least.strategy} in {least.precision} at "
                f"{least.peak_bytes / 2**30:,.2f} GiB; use more devices (--devices, --shard fsdp), a shorter "
                "--seq-len or a smaller model")
    reasons = [f"{rec.strategy} in {rec.precision} fits in {gib:,.2f} GiB at up to batch {rec.max_batch}"
               + (f" (sequence length up to {rec.max_seq_len:,})" if rec.max_seq_len else "")]
    kind = re.split(r"[:\-+]", rec.strategy)[0]
    better = [r for r in rows if _rank(r)[0] < _rank(rec)[0]]
    if kind == "full":
        reasons.append("it trains every parameter")
    elif better:
        reasons.append(f"it trains the most of what fits ({rec.trainable:,} parameters); "
                       + ", ".join(sorted({r.strategy for r in better})) + " does not fit")
    if rec.needs_checkpointing:
        reasons.append("only with gradient checkpointing (one extra forward of every block per step)")
    if rec.precision == "bf16-mixed":
        reasons.append("bf16-mixed keeps fp32 master weights and optimizer state (the stable default)")
    elif rec.precision == "bf16-true":
        reasons.append("bf16-true halves the weights, gradients and optimizer state; no fp32 master copy")
    if rec.seconds_per_step is not None:
        reasons.append(f"{rec.seconds_per_step:.3g} s per step at the given TFLOP/s")
    return "; ".join(reasons)
