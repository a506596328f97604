"""Per-weight-layer health: weights, activations, gradients and update sizes, layer by layer.

One implementation for ``layerwise inspect`` and the depth study. The unit is the *weight
layer* of DESIGN.md (a Linear, Conv, Embedding, each layer of an RNN stack, ...), found by
:func:`weight_layers`; a weight layer's *weights* are its parameters other than biases
(biases say little about a layer's scale), including any adapter nested in it.

The API, smallest first:

- :func:`weight_layers(model)` → [:class:`WeightLayer`], in module order;
- :func:`grad_norms(layers)` → {name: L2 norm of the weights' gradients} after a backward
  (None for a frozen layer) — what a training loop logs every step;
- :func:`update_ratios(model, layers, lr, optimizer)` → {name: ‖Δw‖ / ‖w‖} of one step of
  ``optimizer`` at ``lr`` on the current gradients; the weights are restored afterwards;
- :func:`layer_health(model, loss_fn, ...)` → [:class:`LayerHealth`] in forward order: all of
  the above plus each layer's activation statistics on one batch;
- :func:`in_forward_order(model, layers)` → the same layers in the order one traced forward
  pass first runs them (the analysis' order, :mod:`layerwise.analysis.roles_view`);
- :func:`gradient_norms(layers)` / :func:`weight_norms(layers)` → lists in the layers' order;
  :func:`backward_gradient_norms(model, loss_fn)` for one backward (kept ``.grad`` restored);
- :class:`GradientRecorder`: a :class:`~layerwise.train.trainer.Trainer` callback that, on the
  ``gradients`` event (gradients complete, weights not yet updated) of step 1 and of every
  ``every``-th step, reads ‖∂J/∂W‖ and keeps W, then on the ``step`` event that follows
  computes ‖ΔW‖/‖W‖ of the real update — what the depth study records;
- :func:`diagnose(rows)` → one-line diagnoses ("layers 1–6: gradient norm < 1e-6 — vanishing;
  consider ReLU/residual/normalisation") where a number is out of its usual range
  (:data:`THRESHOLDS`).

Activations: a weight layer's activation is the output of the first activation module (ReLU,
sigmoid, tanh, GELU …) that runs after it and before the next weight layer, through any
norm or pooling in between (Linear → LayerNorm → ReLU); when none runs, the layer's own
output. The *dead fraction* (ReLU, ReLU6) is the share of units that output exactly 0 for
every example (and every position) of the batch — a unit is an output feature, or a channel
of a convolution. The *saturation fraction* (sigmoid, tanh) is the share of output values
beyond ±0.99 of the activation's range: |tanh| > 0.99, sigmoid < 0.005 or > 0.995.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from layerwise.analysis.kinds import assign_kinds, weight_layer_count

# Activation modules whose outputs are read, and what can go wrong with each.
DEAD_ACTIVATIONS = (nn.ReLU, nn.ReLU6)
SATURATING = {nn.Sigmoid: (0.0, 1.0), nn.Tanh: (-1.0, 1.0), nn.Hardtanh: (-1.0, 1.0)}
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
               nn.Softplus, nn.Hardswish, nn.Sigmoid, nn.Tanh, nn.Hardtanh)
SATURATION_LEVEL = 0.99  # of the activation's range, measured from its centre
HIST_BINS = 40

# The usual ranges; outside them :func:`diagnose` says something.
THRESHOLDS = {
    "vanishing_grad": 1e-6,  # gradient norm of a layer's weights below this: vanishing
    "exploding_grad": 1e2,  # above this: exploding
    "dead": 0.5,  # more than half the ReLU units dead on the batch
    "saturated": 0.5,  # more than half the sigmoid/tanh outputs saturated
    # Update/weight ratio of one step: around 1e-3 is healthy (CS231n, "Neural Networks
    # Part 3", ratio of updates to weights); far below, the layer barely moves; far above, it is rewritten.
    "update_low": 1e-5,
    "update_high": 1e-1,
}


@dataclass(eq=False)
class WeightLayer:
    """One weight layer: ``name`` is the module's qualified name (``rnn.l1`` for layer 1 of an RNN
    stack ``rnn``), ``weights`` its non-bias parameters (name within the model → Parameter)."""

    name: str
    module: nn.Module
    cls: str
    kind: str
    weights: dict[str, nn.Parameter]
    shared_with: str | None = None  # every weight is owned by an earlier layer (a tied LM head)
    conv: bool = False  # units are channels (dim 1) rather than the last dimension
    rnn_layer: int | None = None  # which layer of an RNN stack


def _is_bias(pname: str) -> bool:
    return pname.rsplit(".", 1)[-1].startswith("bias")


def weight_layers(model: nn.Module) -> list[WeightLayer]:
    """Every weight layer of ``model`` in module order (a module reached twice is listed once;
    a weight layer nested in another, like LoRA's factors, belongs to the outer one)."""
    kinds = assign_kinds(model)
    owners: dict[int, str] = {}
    out: list[WeightLayer] = []
    inside: list[str] = []
    for name, m in model.named_modules():
        if inside and (inside[-1] == "" or name == inside[-1] or name.startswith(inside[-1] + ".")):
            continue
        if not weight_layer_count(m):
            continue
        inside.append(name)
        cls, kind = type(m).__name__, kinds.get(name, "other")
        conv = isinstance(m, nn.modules.conv._ConvNd)
        params = {f"{name}.{p}" if name else p: t for p, t in m.named_parameters() if not _is_bias(p)}
        if isinstance(m, nn.RNNBase):
            for k in range(m.num_layers):
                mine = {n: t for n, t in params.items() if n.rsplit(".", 1)[-1].split("_l")[-1].split("_")[0] == str(k)}
                out.append(_layer(f"{name}.l{k}", m, cls, kind, mine, owners, rnn_layer=k))
        elif isinstance(m, nn.MultiheadAttention):
            own = {n: t for n, t in params.items() if not n.startswith(f"{name}.out_proj.")}
            out.append(_layer(f"{name}.in_proj", m, cls, kind, own, owners))
            proj = {n: t for n, t in params.items() if n.startswith(f"{name}.out_proj.")}
            out.append(_layer(f"{name}.out_proj", m.out_proj, "Linear", kind, proj, owners))
        else:
            out.append(_layer(name, m, cls, kind, params, owners, conv=conv))
    return out


def _layer(name, module, cls, kind, params, owners, **kw) -> WeightLayer:
    shared = [owners[id(p)] for p in params.values() if id(p) in owners]
    for p in params.values():
        owners.setdefault(id(p), name)
    return WeightLayer(name, module, cls, kind, params, shared[0] if shared and len(shared) == len(params) else None, **kw)


def _norm(tensors) -> float:
    # In float64: a vanishing gradient of 1e-27 has squares of 1e-54, which float32 (and its
    # norm kernels) flush to 0 -- exactly the numbers a depth study must not lose.
    tensors = [t.detach() for t in tensors]
    if not tensors:
        return float("nan")
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.double()) for t in tensors])))


def weight_norm(layer: WeightLayer) -> float:
    """L2 norm of all the layer's weights together."""
    return _norm(layer.weights.values())


def weight_std(layer: WeightLayer) -> float:
    """Standard deviation of all the layer's weight values together."""
    flat = torch.cat([p.detach().float().flatten() for p in layer.weights.values()])
    return float(flat.std(unbiased=False)) if flat.numel() else float("nan")


def grad_norm(layer: WeightLayer) -> float | None:
    """L2 norm of the gradients of the layer's weights (None when none has a gradient: frozen)."""
    grads = [p.grad for p in layer.weights.values() if p.grad is not None]
    return _norm(grads) if grads else None


def grad_norms(layers: list[WeightLayer]) -> dict[str, float | None]:
    """{layer name: :func:`grad_norm`}, after a backward pass."""
    return {layer.name: grad_norm(layer) for layer in layers}


def update_ratios(
    model: nn.Module, layers: list[WeightLayer], lr: float, optimizer: str = "sgd"
) -> dict[str, float | None]:
    """{layer name: ‖Δw‖ / ‖w‖} for one step of a fresh ``optimizer`` (a name of
    :data:`layerwise.train.optim.OPTIMIZER_NAMES`) at ``lr`` on the gradients already in the
    model; no weight decay. The weights are put back exactly afterwards. None for a layer
    without gradients."""
    from layerwise.train.optim import make_optimizer

    params = [p for layer in layers for p in layer.weights.values() if p.grad is not None]
    unique = list({id(p): p for p in params}.values())
    if not unique:
        return {layer.name: None for layer in layers}
    before = {id(p): p.detach().clone() for p in unique}
    opt = make_optimizer(unique, optimizer, lr=lr, fused=False)
    try:
        opt.step()
        out: dict[str, float | None] = {}
        for layer in layers:
            ws = [p for p in layer.weights.values() if p.grad is not None]
            if not ws:
                out[layer.name] = None
                continue
            delta = _norm([p.detach() - before[id(p)] for p in ws])
            w = _norm([before[id(p)] for p in ws])
            out[layer.name] = delta / w if w > 0 else float("inf")
        return out
    finally:
        with torch.no_grad():
            for p in unique:
                p.copy_(before[id(p)])


def in_forward_order(model: nn.Module, layers: list[WeightLayer] | None = None, inputs=None) -> list[WeightLayer]:
    """``layers`` (default: :func:`weight_layers`) sorted by the order one traced forward pass
    first runs their modules (:func:`~layerwise.analysis.roles_view.forward_weight_layers`);
    the layers of an RNN stack keep their order; layers the forward never runs come last.
    ``inputs``: what the model is called with (default: its ``example_inputs(1)``); the trace
    leaves the RNG untouched."""
    from layerwise.analysis.roles_view import forward_weight_layers

    layers = weight_layers(model) if layers is None else layers
    rank = {fl.name: fl.index for fl in forward_weight_layers(model, inputs=inputs)}
    names = {id(m): n for n, m in model.named_modules()}

    def key(pos_layer):
        pos, layer = pos_layer
        name = names.get(id(layer.module), layer.name)
        while name not in rank and "." in name:  # a layer inside a weight layer (an attention's out_proj)
            name = name.rsplit(".", 1)[0]
        return (rank.get(name, len(rank)), pos)

    return [layer for _, layer in sorted(enumerate(layers), key=key)]


def gradient_norms(layers: list[WeightLayer]) -> list[float | None]:
    """:func:`grad_norm` of each layer, in the layers' order."""
    return [grad_norm(layer) for layer in layers]


def weight_norms(layers: list[WeightLayer]) -> list[float]:
    """:func:`weight_norm` of each layer, in the layers' order."""
    return [weight_norm(layer) for layer in layers]


def backward_gradient_norms(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor],
                            layers: list[WeightLayer] | None = None) -> list[float | None]:
    """‖∂J/∂W‖ per layer (forward order by default) for one backward of ``loss_fn(model)``.

    The model's existing ``.grad`` are kept aside and put back, so this can run in the middle
    of training; the weights are not changed."""
    layers = in_forward_order(model) if layers is None else layers
    params = list({id(p): p for p in model.parameters()}.values())
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        with torch.enable_grad():
            loss_fn(model).backward()
        return gradient_norms(layers)
    finally:
        for p, g in zip(params, saved):
            p.grad = g


def first_last_ratio(norms: list[float | None]) -> float | None:
    """The last weight layer's gradient norm divided by the first's (None if either is
    missing or the first is 0); > 1 means the gradient shrinks towards the input."""
    if not norms or norms[0] is None or norms[-1] is None or norms[0] == 0 or not math.isfinite(norms[0]):
        return None
    return norms[-1] / norms[0]


class GradientRecorder:
    """A Trainer callback that records per-layer gradient statistics (see the module docstring).

    every: record at step 1 and at every ``every``-th step.
    layers: the layers to watch (default: :func:`weight_layers` of ``model`` in forward order).
    then: another callback to pass every event on to (a progress bar).

    ``records``: one dict per recorded step: ``step``, ``loss``, ``grad_norm``,
    ``weight_norm`` (before the update) and ``update_ratio`` (‖ΔW‖/‖W‖ of that step's
    update), each a list in the order of ``names``.
    """

    def __init__(self, model: nn.Module, every: int = 10, layers: list[WeightLayer] | None = None,
                 then: Callable | None = None, inputs=None) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"GradientRecorder.every: expected an integer >= 1, got {every!r}")
        self.every = every
        self.layers = in_forward_order(model, inputs=inputs) if layers is None else layers
        self.then = then
        self.records: list[dict] = []
        self._before: list[list[torch.Tensor]] | None = None

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def due(self, step: int) -> bool:
        return step == 1 or step % self.every == 0

    def __call__(self, event) -> None:
        if event.kind == "gradients" and self.due(event.step):
            self.records.append({"step": event.step, "loss": event.record.get("loss"),
                                 "grad_norm": gradient_norms(self.layers), "weight_norm": weight_norms(self.layers)})
            self._before = [[p.detach().clone() for p in layer.weights.values()] for layer in self.layers]
        elif event.kind == "step" and self._before is not None:
            rec = self.records[-1]
            ratios = []
            for layer, before, w in zip(self.layers, self._before, rec["weight_norm"]):
                delta = _norm([p.detach() - b for p, b in zip(layer.weights.values(), before)])
                ratios.append(delta / w if w and math.isfinite(w) else None)
            rec["update_ratio"] = ratios
            self._before = None
        if self.then is not None:
            self.then(event)

    @property
    def at_init(self) -> list[float | None] | None:
        """‖∂J/∂W‖ per layer of the first step: the gradient at initialisation."""
        first = next((r for r in self.records if r["step"] == 1), None)
        return first["grad_norm"] if first else None


@dataclass
class ActivationStats:
    """What one layer's activation did on the batch (see the module docstring)."""

    activation: str  # the activation module's class ("ReLU"), or "output" (the layer's own output)
    mean: float
    std: float
    dead_fraction: float | None = None  # ReLU, ReLU6
    saturation_fraction: float | None = None  # sigmoid, tanh
    units: int = 0
    hist_counts: list[int] = field(default_factory=list)
    hist_edges: list[float] = field(default_factory=list)


def activation_stats(y: torch.Tensor, act: nn.Module | None, conv: bool = False) -> ActivationStats:
    """Statistics of activation output ``y``: (B, F), (B, T, F) or, with ``conv``, (B, C, ...).
    ``act``: the activation module that produced it, or None for a layer's own output."""
    y = y.detach().float()
    unit_dim = 1 if conv else y.dim() - 1
    units = y.shape[unit_dim] if y.dim() else 1
    finite = y[torch.isfinite(y)]
    counts, edges = (torch.histogram(finite.cpu(), bins=HIST_BINS) if finite.numel() else (torch.zeros(0), torch.zeros(0)))
    st = ActivationStats(
        activation=type(act).__name__ if act is not None else "output",
        mean=float(y.mean()),
        std=float(y.std(unbiased=False)),
        units=int(units),
        hist_counts=[int(c) for c in counts.tolist()],
        hist_edges=[float(e) for e in edges.tolist()],
    )
    if isinstance(act, DEAD_ACTIVATIONS):
        active = (y != 0).movedim(unit_dim, 0).reshape(units, -1).any(dim=1)  # (units,)
        st.dead_fraction = float((~active).float().mean())
    for cls, (lo, hi) in SATURATING.items():
        if isinstance(act, cls):
            centre, half = (lo + hi) / 2, (hi - lo) / 2
            st.saturation_fraction = float(((y - centre).abs() > SATURATION_LEVEL * half).float().mean())
    return st


def _first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x:
        return _first_tensor(x[0])
    return None


class record_activations:  # noqa: N801 - a context manager, like torch.no_grad
    """``with record_activations(model, layers) as rec: model(x)`` → ``rec.stats`` {layer name:
    :class:`ActivationStats`} and ``rec.order`` (weight layers by first call). Hooks are removed on exit."""

    def __init__(self, model: nn.Module, layers: list[WeightLayer]) -> None:
        self.model, self.layers = model, layers
        self.order: list[str] = []
        self.stats: dict[str, ActivationStats] = {}
        self._pending: WeightLayer | None = None  # the weight layer that ran last, its output not yet read
        self._pending_out: torch.Tensor | None = None
        self._hooks: list = []

    def __enter__(self) -> record_activations:
        by_module: dict[int, list[WeightLayer]] = {}
        for layer in self.layers:
            by_module.setdefault(id(layer.module), []).append(layer)
        for m in {id(l.module): l.module for l in self.layers}.values():
            self._hooks.append(m.register_forward_hook(self._on_weight_layer(by_module[id(m)])))
        for m in self.model.modules():
            if isinstance(m, ACTIVATIONS) and id(m) not in by_module:
                self._hooks.append(m.register_forward_hook(self._on_activation))
        return self

    def _settle(self) -> None:
        """The pending layer had no activation after it: its own output is its activation."""
        if self._pending is not None and self._pending.name not in self.stats and self._pending_out is not None:
            self.stats[self._pending.name] = activation_stats(self._pending_out, None, self._pending.conv)
        self._pending, self._pending_out = None, None

    def _on_weight_layer(self, layers: list[WeightLayer]):
        def hook(module, args, output):
            self._settle()
            for layer in layers:
                if layer.name not in self.order:
                    self.order.append(layer.name)
            last = layers[-1]  # an RNN stack: only its last layer's output is visible
            y = _first_tensor(output)
            if last.name not in self.stats and y is not None:
                self._pending, self._pending_out = last, y.detach()
        return hook

    def _on_activation(self, module, args, output):
        if self._pending is not None and self._pending.name not in self.stats:
            y = _first_tensor(output)
            if y is not None:
                self.stats[self._pending.name] = activation_stats(y, module, self._pending.conv)
            self._pending, self._pending_out = None, None

    def __exit__(self, *exc) -> None:
        self._settle()
        for h in self._hooks:
            h.remove()
        self._hooks.clear()


@dataclass
class LayerHealth:
    """One row of :func:`layer_health`: a weight layer, numbered from 1 in forward order."""

    index: int
    name: str
    cls: str
    kind: str
    params: int  # weight values (biases excluded)
    weight_norm: float
    weight_std: float
    grad_norm: float | None
    update_ratio: float | None
    activation: ActivationStats | None
    shared_with: str | None = None
    weight_hist_counts: list[int] = field(default_factory=list)
    weight_hist_edges: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def layer_health(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], torch.Tensor],
    layers: list[WeightLayer] | None = None,
    lr: float | None = None,
    optimizer: str = "sgd",
) -> list[LayerHealth]:
    """Every weight layer's health on one batch, in forward order.

    loss_fn(model) runs the forward on the batch and returns the scalar loss; it is called
    once, then backpropagated. The model runs as it is (call ``model.eval()`` first for
    inference behaviour); its gradients are cleared before and after, and its weights are
    unchanged. ``lr``: also the update/weight ratio of one ``optimizer`` step at that rate.
    Layers the forward never reached come last, without activation statistics.
    """
    layers = weight_layers(model) if layers is None else layers
    model.zero_grad(set_to_none=True)
    try:
        with record_activations(model, layers) as rec:
            loss = loss_fn(model)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise ValueError("layer_health: loss_fn must return a scalar tensor")
        if loss.requires_grad:
            loss.backward()
        grads = grad_norms(layers)
        updates = update_ratios(model, layers, lr, optimizer) if lr is not None else {}
        rank = {name: i for i, name in enumerate(rec.order)}
        ordered = sorted(layers, key=lambda l: rank.get(l.name, len(rank)))
        rows = []
        for i, layer in enumerate(ordered, start=1):
            flat = torch.cat([p.detach().float().flatten() for p in layer.weights.values()]) if layer.weights else torch.zeros(0)
            counts, edges = torch.histogram(flat.cpu(), bins=HIST_BINS) if flat.numel() else (torch.zeros(0), torch.zeros(0))
            rows.append(LayerHealth(
                index=i, name=layer.name, cls=layer.cls, kind=layer.kind,
                params=sum(p.numel() for p in layer.weights.values()),
                weight_norm=weight_norm(layer), weight_std=weight_std(layer),
                grad_norm=grads[layer.name], update_ratio=updates.get(layer.name),
                activation=rec.stats.get(layer.name), shared_with=layer.shared_with,
                weight_hist_counts=[int(c) for c in counts.tolist()], weight_hist_edges=[float(e) for e in edges.tolist()],
            ))
        return rows
    finally:
        model.zero_grad(set_to_none=True)


@dataclass
class Diagnosis:
    """A finding over some layers: ``line`` is what the user reads."""

    code: str  # vanishing_grad | exploding_grad | dead | saturated | update_low | update_high | nonfinite
    layers: list[int]  # forward-order indices (1-based)
    line: str


def layer_ranges(indices: list[int]) -> str:
    """[1, 2, 3, 6, 8, 9] → "1–3, 6, 8–9"."""
    out, run = [], []
    for i in sorted(set(indices)):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}–{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}–{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)


def _finding(code: str, idx: list[int], what: str, advice: str) -> Diagnosis:
    word = "layer" if len(idx) == 1 else "layers"
    return Diagnosis(code, idx, f"{word} {layer_ranges(idx)}: {what} — {advice}")


def diagnose(rows: list[LayerHealth], thresholds: dict | None = None) -> list[Diagnosis]:
    """One :class:`Diagnosis` per kind of out-of-range number, naming the layers (see :data:`THRESHOLDS`)."""
    t = {**THRESHOLDS, **(thresholds or {})}
    found: list[Diagnosis] = []

    def pick(test) -> list[int]:
        return [r.index for r in rows if r.shared_with is None and test(r)]

    def finite(v) -> bool:
        return v is not None and math.isfinite(v)

    bad = pick(lambda r: not math.isfinite(r.weight_norm) or (r.grad_norm is not None and not math.isfinite(r.grad_norm)))
    if bad:
        found.append(_finding("nonfinite", bad, "NaN or infinite weights or gradients",
                              "diverged; lower the learning rate or clip gradients (--clip-grad-norm)"))
    idx = pick(lambda r: finite(r.grad_norm) and r.grad_norm < t["vanishing_grad"])
    if idx:
        found.append(_finding("vanishing_grad", idx, f"gradient norm < {t['vanishing_grad']:g}",
                              "vanishing; consider ReLU/residual/normalisation"))
    idx = pick(lambda r: finite(r.grad_norm) and r.grad_norm > t["exploding_grad"])
    if idx:
        found.append(_finding("exploding_grad", idx, f"gradient norm > {t['exploding_grad']:g}",
                              "exploding; consider gradient clipping (--clip-grad-norm), a lower learning rate, "
                              "normalisation"))
    idx = pick(lambda r: r.activation is not None and finite(r.activation.dead_fraction)
               and r.activation.dead_fraction > t["dead"])
    if idx:
        found.append(_finding("dead", idx, f"more than {t['dead']:.0%} of the ReLU units dead (0 on every example)",
                              "they no longer learn; consider a lower learning rate, LeakyReLU or He initialisation"))
    idx = pick(lambda r: r.activation is not None and finite(r.activation.saturation_fraction)
               and r.activation.saturation_fraction > t["saturated"])
    if idx:
        found.append(_finding("saturated", idx,
                              f"more than {t['saturated']:.0%} of the sigmoid/tanh outputs saturated (beyond ±0.99)",
                              "their gradients vanish; consider ReLU, normalisation or smaller initial weights"))
    idx = pick(lambda r: finite(r.update_ratio) and r.update_ratio < t["update_low"])
    if idx:
        found.append(_finding("update_low", idx, f"update/weight ratio < {t['update_low']:g}",
                              "too small; the layer barely changes per step; consider a higher learning rate"))
    idx = pick(lambda r: finite(r.update_ratio) and r.update_ratio > t["update_high"])
    if idx:
        found.append(_finding("update_high", idx, f"update/weight ratio > {t['update_high']:g}",
                              "too large; each step rewrites the layer; consider a lower learning rate"))
    return found
