"""Per-layer gradient statistics: for every weight layer, in forward order, the gradient
norm ‖∂J/∂W‖ and the update/weight ratio ‖ΔW‖/‖W‖.

W is a weight layer's weight tensors -- those with two or more dimensions (a Linear's
matrix, a conv kernel, an embedding table, an RNN layer's input and recurrent matrices);
biases and norm scales are left out. Norms are Frobenius norms over all of a layer's
weight tensors together. The layers and their order are the analysis' (the order the
forward pass runs them, :func:`layerwise.analysis.roles_view.forward_weight_layers`).
A weight tensor shared by two layers (a tied LM head) is reported with its first owner;
the later layer is listed with ``shared_with`` and the same numbers.

Two ways to use it:

- one backward, e.g. at initialisation::

      layers = weight_layers(model)
      norms = backward_gradient_norms(model, lambda m: task.loss(m, batch)[0], layers)

- through training: :class:`GradientRecorder` is a :class:`~layerwise.train.trainer.Trainer`
  callback. On the ``gradients`` event (gradients complete, weights not yet updated) of
  step 1 and of every ``every``-th step it reads ‖∂J/∂W‖ and keeps a copy of W; on the
  ``step`` event that follows (after the update) it computes ‖ΔW‖/‖W‖. Step 1's gradient
  norms are those at initialisation (the first batch, the initial weights)::

      rec = GradientRecorder(model, every=10)
      Trainer(model, task, data, config=cfg, callback=rec).fit()
      rec.records  # [{"step": 1, "grad_norm": [...], "update_ratio": [...], "weight_norm": [...]}, ...]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class WeightLayer:
    """A weight layer of a model, with the tensors its statistics are computed over."""

    name: str  # qualified module name
    cls: str
    index: int  # position in forward order
    tensors: list[tuple[str, torch.nn.Parameter]]  # (parameter name, tensor): its own weight tensors
    shared_with: str | None = None  # an earlier layer that owns the same tensors (a tied head)


def weight_layers(model: nn.Module, inputs=None) -> list[WeightLayer]:
    """The weight layers of ``model`` in forward order, each with its weight tensors (2+ dims).

    ``inputs``: what the model is called with (default: its ``example_inputs(1)``); the
    order comes from one traced forward pass, which leaves the RNG untouched.
    """
    from layerwise.analysis.roles_view import forward_weight_layers

    mods = dict(model.named_modules())
    owner: dict[int, str] = {}
    out = []
    for fl in forward_weight_layers(model, inputs=inputs):
        tensors = [(f"{fl.name}.{n}" if fl.name else n, p) for n, p in mods[fl.name].named_parameters() if p.dim() >= 2]
        shared = next((owner[id(p)] for _, p in tensors if id(p) in owner), None)
        for _, p in tensors:
            owner.setdefault(id(p), fl.name)
        out.append(WeightLayer(fl.name, fl.cls, fl.index, tensors, shared))
    return out


def _norm(ts: list[torch.Tensor]) -> float:
    # In float64: a vanishing gradient of 1e-27 has squares of 1e-54, which float32 (and its
    # norm kernels) flush to 0 -- exactly the numbers a depth study must not lose.
    if not ts:
        return float("nan")
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.detach().double()) for t in ts])))


def gradient_norms(layers: list[WeightLayer]) -> list[float | None]:
    """‖∂J/∂W‖ of each layer from the ``.grad`` its tensors hold now (after a backward);
    None for a layer none of whose tensors has a gradient (frozen, or no backward yet)."""
    out: list[float | None] = []
    for lay in layers:
        grads = [p.grad for _, p in lay.tensors if p.grad is not None]
        out.append(_norm(grads) if grads else None)
    return out


def weight_norms(layers: list[WeightLayer]) -> list[float]:
    """‖W‖ of each layer."""
    return [_norm([p for _, p in lay.tensors]) for lay in layers]


def backward_gradient_norms(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor],
                            layers: list[WeightLayer] | None = None) -> list[float | None]:
    """‖∂J/∂W‖ per layer for one backward of ``loss_fn(model)`` (a scalar loss J).

    The model's existing ``.grad`` are kept aside and put back, so this can run in the
    middle of training; the weights are not changed.
    """
    layers = weight_layers(model) if layers is None else layers
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
    layers: the layers to watch (default: :func:`weight_layers` of ``model``).
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
        self.layers = weight_layers(model, inputs=inputs) if layers is None else layers
        self.then = then
        self.records: list[dict] = []
        self._before: list[list[torch.Tensor]] | None = None

    @property
    def names(self) -> list[str]:
        return [lay.name for lay in self.layers]

    def due(self, step: int) -> bool:
        return step == 1 or step % self.every == 0

    def __call__(self, event) -> None:
        if event.kind == "gradients" and self.due(event.step):
            self.records.append({"step": event.step, "loss": event.record.get("loss"),
                                 "grad_norm": gradient_norms(self.layers), "weight_norm": weight_norms(self.layers)})
            self._before = [[p.detach().clone() for _, p in lay.tensors] for lay in self.layers]
        elif event.kind == "step" and self._before is not None:
            rec = self.records[-1]
            ratios = []
            for lay, before, w in zip(self.layers, self._before, rec["weight_norm"]):
                delta = _norm([p.detach() - b for (_, p), b in zip(lay.tensors, before)])
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
