"""L1 and L2 penalties on the weight matrices W^(l) (never the biases), added to the loss:
``J_total = J + Ω``. The articles' forms: ``L1 = Σ |w_i|``, ``L2 = Σ w_i²``, scaled by λ.

- :class:`L1`: ``Ω = λ Σ_l Σ_ij |W^(l)_ij|``; ``∂Ω/∂W = λ sign(W)`` (0 at w = 0, as torch).
  The trainer's ``TrainConfig.l1`` adds the same ``l1 · Σ|w|``.
- :class:`L2`: ``Ω = λ Σ_l Σ_ij (W^(l)_ij)²``; ``∂Ω/∂W = 2λW``. torch's SGD
  ``weight_decay=wd`` adds ``wd·W`` to the gradient: the same as λ = wd / 2.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from layerwise.errors import ConfigError


class Penalty:
    name = "penalty"
    formula = ""
    gradient = ""

    def __init__(self, lam: float) -> None:
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or lam < 0:
            raise ConfigError(f"{type(self).__name__}.lam: expected a number >= 0, got {lam!r}")
        self.lam = float(lam)

    def value(self, weights: Iterable[np.ndarray]) -> float:
        raise NotImplementedError

    def grad(self, W: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def label(self) -> str:
        return f"{self.name} (λ = {self.lam:g})"


class L1(Penalty):
    """``Ω = λ Σ |W_ij|``; ``∂Ω/∂W = λ sign(W)``."""

    name = "l1"
    formula = "Ω = λ Σ_l Σ_ij |W^(l)_ij|"
    gradient = "∂Ω/∂W^(l) = λ sign(W^(l))"

    def value(self, weights: Iterable[np.ndarray]) -> float:
        return self.lam * float(sum(np.abs(W).sum() for W in weights))

    def grad(self, W: np.ndarray) -> np.ndarray:
        return self.lam * np.sign(W)


class L2(Penalty):
    """``Ω = λ Σ W_ij²``; ``∂Ω/∂W = 2λW``."""

    name = "l2"
    formula = "Ω = λ Σ_l Σ_ij (W^(l)_ij)²"
    gradient = "∂Ω/∂W^(l) = 2λ W^(l)"

    def value(self, weights: Iterable[np.ndarray]) -> float:
        return self.lam * float(sum((W * W).sum() for W in weights))

    def grad(self, W: np.ndarray) -> np.ndarray:
        return 2.0 * self.lam * W


class Both(Penalty):
    """L1 and L2 together (the elastic net): ``Ω = λ1 Σ|W| + λ2 Σ W²``; the gradients add."""

    name = "l1 + l2"

    def __init__(self, l1: L1, l2: L2) -> None:
        super().__init__(l1.lam + l2.lam)
        self.parts = (l1, l2)
        self.formula = f"Ω = λ1 Σ_l Σ_ij |W^(l)_ij| + λ2 Σ_l Σ_ij (W^(l)_ij)²"
        self.gradient = "∂Ω/∂W^(l) = λ1 sign(W^(l)) + 2λ2 W^(l)"

    @property
    def label(self) -> str:
        return f"l1 + l2 (λ1 = {self.parts[0].lam:g}, λ2 = {self.parts[1].lam:g})"

    def value(self, weights: Iterable[np.ndarray]) -> float:
        weights = list(weights)
        return sum(p.value(weights) for p in self.parts)

    def grad(self, W: np.ndarray) -> np.ndarray:
        return self.parts[0].grad(W) + self.parts[1].grad(W)


def make_penalty(l1: float = 0.0, l2: float = 0.0) -> Penalty | None:
    """The penalty of the given strengths: None, :class:`L1`, :class:`L2` or :class:`Both`."""
    a, b = L1(l1), L2(l2)
    if a.lam and b.lam:
        return Both(a, b)
    return a if a.lam else b if b.lam else None
