"""The input / hidden / output view of a network's trainable parameters.

The articles split a network into an input layer, hidden layers and an output layer.
Defined on the forward data flow (one traced forward pass, meta device allowed):

- **input**: the weight layers that read the model's inputs directly -- no weight layer
  between the data and them (the embeddings of a transformer, token and position alike;
  the first Linear of an MLP; the stem conv of a CNN; both embeddings of an
  encoder-decoder);
- **output**: the last weight layer the forward pass runs, and every weight layer of kind
  ``head`` (the head); a network with a single weight layer has only an output layer;
- **hidden**: every other weight layer.

Parameters outside weight layers (norm scales, a model's own tensors) count with the
weight layer whose output they process: the last weight layer called before them, or
the input when none ran yet. A tied head (GPT-2's LM head is the token embedding) owns
no parameters of its own: the tensor is counted once, with its first owner.

:func:`forward_weight_layers` gives the weight layers in the order the forward pass runs
them (the order :mod:`layerwise.train.layerstats` reports gradients in); :func:`by_role`
gives the view.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import torch
from torch import nn

from layerwise.analysis.core import Analysis, analyze, default_inputs, make_inputs
from layerwise.analysis.kinds import detect_blocks, weight_layer_count
from layerwise.analysis.trace import TraceResult, trace
from layerwise.errors import LayerwiseError

ROLES = ("input", "hidden", "output")


@dataclass
class ForwardLayer:
    """One weight layer, in forward order."""

    name: str  # qualified module name
    cls: str
    index: int  # position in forward order (0: the first weight layer run)
    input_depth: int  # weight layers between the model's inputs and this layer's input


def _inputs(model: nn.Module, inputs, input_shape, batch_size: int, seq_len: int | None):
    if inputs is not None:
        return inputs
    if input_shape is not None:
        return make_inputs(model, input_shape)
    # example_inputs may draw random numbers: keep the caller's RNG stream untouched
    with torch.random.fork_rng(devices=[]):
        found = default_inputs(model, batch_size, seq_len)
    if found is None:
        raise LayerwiseError(f"{type(model).__name__}: no example inputs; pass inputs or an input shape (--input-shape)")
    return found


def _trace(model: nn.Module, inputs=None, input_shape=None, batch_size: int = 1, seq_len: int | None = None) -> TraceResult:
    was_grad = torch.is_grad_enabled()
    try:
        return trace(model, _inputs(model, inputs, input_shape, batch_size, seq_len), detect_blocks(model))
    finally:
        torch.set_grad_enabled(was_grad)


def forward_weight_layers(model: nn.Module, inputs=None, input_shape=None, batch_size: int = 1,
                          seq_len: int | None = None) -> list[ForwardLayer]:
    """The model's weight layers in the order its forward pass first runs them.

    One traced forward pass (works on the meta device; on a real device it computes the
    forward once, in eval mode, without keeping activations or touching the RNG).
    ``inputs``/``input_shape``/``batch_size``/``seq_len`` as in :func:`~layerwise.analysis.analyze`.
    A weight layer nested in another (the out-projection inside ``nn.MultiheadAttention``) is
    part of the outer one and not listed apart.
    """
    tr = _trace(model, inputs, input_shape, batch_size, seq_len)
    mods = dict(model.named_modules())
    return [ForwardLayer(n, type(mods[n]).__name__, i, tr.modules[n].input_depth) for i, n in enumerate(tr.call_order)]


@dataclass
class RoleLayer:
    name: str
    cls: str
    kind: str
    role: str
    weight_layer: bool  # False: parameters outside weight layers (a norm ...)
    params: int  # own parameters, each tensor counted once
    trainable: int
    formula: str | None = None  # "Linear: 784·64 + 64 = 50,240"
    note: str = ""


@dataclass
class RoleRow:
    role: str
    params: int
    trainable: int
    share: float  # of all parameters
    weight_layers: int  # as weight_depth counts them (an LSTM stack of 2 is 2)
    layers: list[str] = field(default_factory=list)  # the weight-layer modules in this role, forward order


@dataclass
class RoleView:
    model: str
    total: int
    rows: list[RoleRow]
    layers: list[RoleLayer]  # every module that owns parameters (and tied heads), forward order

    def row(self, role: str) -> RoleRow:
        return next(r for r in self.rows if r.role == role)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def _owner(name: str, weight_layers: set[str]) -> str | None:
    """The weight layer ``name`` is (or sits inside), or None."""
    probe = name
    while True:
        if probe in weight_layers:
            return probe
        if not probe:
            return None
        probe = probe.rsplit(".", 1)[0] if "." in probe else ""


def by_role(model: nn.Module, analysis: Analysis | None = None, inputs=None, input_shape=None, batch_size: int = 1,
            seq_len: int | None = None, name: str | None = None) -> RoleView:
    """The input / hidden / output split of ``model``'s parameters (see the module docstring).

    ``analysis``: the model's :func:`~layerwise.analysis.analyze` result, if already computed
    with the same inputs (its per-module parameter counts and formulas are reused).
    """
    x = _inputs(model, inputs, input_shape, batch_size, seq_len)
    if analysis is None:
        analysis = analyze(model, inputs=x, name=name)
    tr = _trace(model, inputs=x)
    order = tr.call_order
    if not order:
        raise LayerwiseError(f"{analysis.model}: the forward pass runs no weight layer; there is no input/hidden/output split")
    wl = set(order)
    rows = {r.name: r for r in analysis.rows if r.reuse_of is None}
    heads = {n for n in order if rows[n].kind == "head"}
    role_of: dict[str, str] = {}
    for i, n in enumerate(order):
        if n == order[-1] or n in heads:
            role_of[n] = "output"
        elif tr.modules[n].input_depth == 0:
            role_of[n] = "input"
        else:
            role_of[n] = "hidden"
    calls = [(tr.modules[n].first_call, n) for n in order]

    def preceding(module: str) -> str:
        t = tr.modules.get(module)
        if t is None or t.first_call < 0:
            return "hidden"
        before = [n for c, n in calls if c < t.first_call]
        return role_of[before[-1]] if before else "input"

    layers: list[RoleLayer] = []
    for r in analysis.rows:
        if r.reuse_of is not None or not (r.params or (r.name in wl and r.shared)):
            continue
        owner = _owner(r.name, wl)
        if owner is not None:
            role, note = role_of[owner], ("" if owner == r.name else f"inside weight layer {owner}")
        elif r.name == "":
            role, note = "input", "the model's own parameters"
        else:
            role = preceding(r.name)
            t = tr.modules.get(r.name)
            note = "not on the forward path" if t is None or t.first_call < 0 else ""
        if r.name in wl and r.shared:
            note = "; ".join(filter(None, [note, *(f"{s} (counted once, at its first owner)" for s in r.shared)]))
        layers.append(RoleLayer(r.name, r.cls, r.kind, role, owner is not None, r.params, r.trainable, r.formula, note))
    first_call = {n: (tr.modules[n].first_call if n in tr.modules else 1 << 60) for n in (lay.name for lay in layers)}
    layers.sort(key=lambda lay: first_call[lay.name])
    total = analysis.totals.params
    mods = dict(model.named_modules())
    out = []
    for role in ROLES:
        mine = [lay for lay in layers if lay.role == role]
        p, t = sum(lay.params for lay in mine), sum(lay.trainable for lay in mine)
        names = [n for n in order if role_of[n] == role]
        count = sum(weight_layer_count(mods[n]) for n in names)
        out.append(RoleRow(role, p, t, p / total if total else 0.0, count, names))
    assert sum(r.params for r in out) == total, "role accounting out of balance"
    return RoleView(analysis.model, total, out, layers)
