"""Optimizers: update the parameters θ in place from their gradients g = ∂J/∂θ.

- :class:`SGD`: ``θ ← θ - α g`` (the articles' ``W := W - α ∂J/∂W``).
- :class:`Momentum`: ``v ← μ v + g``, ``θ ← θ - α v`` (v starts at 0). This is torch's
  ``SGD(momentum=μ)``; the textbook ``v ← μ v - α g, θ ← θ + v`` is the same sequence of θ
  for a constant α (its v is -α times this one).
- :class:`Adam` (Kingma & Ba 2015, Algorithm 1): ``m ← β1 m + (1 - β1) g``,
  ``v ← β2 v + (1 - β2) g²``, ``m̂ = m / (1 - β1^t)``, ``v̂ = v / (1 - β2^t)``,
  ``θ ← θ - α m̂ / (√v̂ + ε)`` at step t = 1, 2, … (torch's ``Adam``).

``step(params, grads)`` takes two lists of arrays in the same order every call; the state
(v, m, t) is kept per position.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from layerwise.errors import ConfigError


def _num(name: str, v, lo: float, hi: float | None = None, lo_open: bool = False) -> float:
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and (v > lo if lo_open else v >= lo) and (hi is None or v < hi)
    if not ok:
        rng = f"{'(' if lo_open else '['}{lo:g}, {'∞' if hi is None else f'{hi:g}'})"
        raise ConfigError(f"{name}: expected a number in {rng}, got {v!r}")
    return float(v)


class Optimizer:
    name = "optimizer"
    rule: tuple[str, ...] = ()

    def __init__(self, lr: float) -> None:
        self.lr = _num(f"{type(self).__name__}.lr", lr, 0.0, lo_open=True)

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        raise NotImplementedError

    @property
    def label(self) -> str:
        return f"{self.name} (α = {self.lr:g})"


class SGD(Optimizer):
    """``θ ← θ - α g``."""

    name = "sgd"
    rule = ("θ ← θ - α g",)

    def step(self, params, grads):
        for p, g in zip(params, grads):
            p -= self.lr * g


class Momentum(Optimizer):
    """``v ← μ v + g``; ``θ ← θ - α v``."""

    name = "momentum"
    rule = ("v ← μ v + g", "θ ← θ - α v")

    def __init__(self, lr: float, momentum: float = 0.9) -> None:
        super().__init__(lr)
        self.momentum = _num("Momentum.momentum", momentum, 0.0, 1.0)
        self.v: list[np.ndarray] | None = None

    @property
    def label(self) -> str:
        return f"{self.name} (α = {self.lr:g}, μ = {self.momentum:g})"

    def step(self, params, grads):
        if self.v is None:
            self.v = [np.zeros_like(p) for p in params]
        for p, g, v in zip(params, grads, self.v):
            v *= self.momentum
            v += g
            p -= self.lr * v


class Adam(Optimizer):
    """``m ← β1 m + (1-β1) g``; ``v ← β2 v + (1-β2) g²``; ``θ ← θ - α m̂ / (√v̂ + ε)``."""

    name = "adam"
    rule = ("m ← β1 m + (1 - β1) g", "v ← β2 v + (1 - β2) g²", "m̂ = m / (1 - β1^t), v̂ = v / (1 - β2^t)",
            "θ ← θ - α m̂ / (√v̂ + ε)")

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        super().__init__(lr)
        self.beta1 = _num("Adam.beta1", beta1, 0.0, 1.0)
        self.beta2 = _num("Adam.beta2", beta2, 0.0, 1.0)
        self.eps = _num("Adam.eps", eps, 0.0, lo_open=True)
        self.t = 0
        self.m: list[np.ndarray] | None = None
        self.v: list[np.ndarray] | None = None

    @property
    def label(self) -> str:
        return f"{self.name} (α = {self.lr:g}, β1 = {self.beta1:g}, β2 = {self.beta2:g}, ε = {self.eps:g})"

    def step(self, params, grads):
        if self.m is None:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.t += 1
        c1, c2 = 1.0 - self.beta1**self.t, 1.0 - self.beta2**self.t
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m *= self.beta1
            m += (1.0 - self.beta1) * g
            v *= self.beta2
            v += (1.0 - self.beta2) * g * g
            p -= self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def make_optimizer(name: str, lr: float, **options) -> Optimizer:
    """An optimizer by name (sgd, momentum, adam); options: momentum; beta1, beta2, eps."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got {name!r}")
    return OPTIMIZERS[name](lr, **options)
