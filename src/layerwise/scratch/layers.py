"""Layers of the articles' network, forward and backward, in NumPy.

Notation (the articles'): a batch is a matrix whose *columns* are the examples, so the
per-example formulas hold as written for the whole batch. ``a^(0) = x`` has shape
(d_0, N); layer ``l`` maps ``a^(l-1)`` (d_{l-1}, N) to

    z^(l) = W^(l) a^(l-1) + b^(l)          W^(l): (d_l, d_{l-1}), b^(l): (d_l, 1)
    a^(l) = σ(z^(l))

and the last layer's output is the prediction ŷ. Back propagation carries
``δ^(l) = ∂J/∂z^(l)`` from the loss J down to the input:

    ∂J/∂W^(l)   = δ^(l) a^(l-1)ᵀ
    ∂J/∂b^(l)   = Σ_n δ^(l)_n              (the sum over the batch's columns)
    ∂J/∂a^(l-1) = W^(l)ᵀ δ^(l)
    δ^(l-1)     = ∂J/∂a^(l-1) ⊙ σ'(z^(l-1))

Where the articles differ: one writes ``z^(l) = σ(W^(l) a^(l-1) + b^(l))`` and then
``a^(l) = σ(z^(l))`` (σ applied twice; z is the pre-activation), and two write the
output error as ``(y - ŷ)·σ'(z)``: for ``J = ½(y - ŷ)²`` the derivative is
``∂J/∂ŷ = ŷ - y``, so their sign is reversed (gradient *ascent* with their update rule).
The code follows the correct signs; the tests check every gradient against torch autograd.

Each layer caches what its backward needs during ``forward(…, train=True)``; ``backward``
takes the gradient of J with respect to the layer's output and returns the gradient with
respect to its input, filling ``grads`` for layers with parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from layerwise.errors import ConfigError, InputShapeError

INITS = ("uniform", "he", "xavier")


def _shape(s: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in s) + ")"


@dataclass
class Equations:
    """One layer's formulas with the shapes of this network and batch substituted."""

    layer: str  # e.g. "Dense 1 (64 → 64)"
    forward: list[str]
    backward: list[str]
    out_shape: tuple[int, ...]
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)
    update: list[str] = field(default_factory=list)  # an optimizer's rule


class Layer:
    """A step of the network: ``forward(a, train) -> out``, ``backward(∂J/∂out) -> ∂J/∂a``."""

    name: str = "layer"

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, a: np.ndarray, train: bool = True) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def equations(self, in_shape: tuple[int, int], index: int) -> Equations:
        raise NotImplementedError


class Dense(Layer):
    """Fully connected layer ``l``: ``z^(l) = W^(l) a^(l-1) + b^(l)``.

    W: (d_out, d_in), b: (d_out, 1) -- torch's ``nn.Linear`` stores the same W (out, in).
    forward(a (d_in, N)) -> z (d_out, N).
    backward(δ = ∂J/∂z (d_out, N)) -> ∂J/∂a = Wᵀ δ (d_in, N); grads
    ``∂J/∂W = δ aᵀ`` (d_out, d_in) and ``∂J/∂b = Σ_n δ_n`` (d_out, 1).

    init: "uniform" -- W, b ~ U(-1/√d_in, 1/√d_in), PyTorch's ``nn.Linear`` default;
    "he" -- W ~ N(0, 2/d_in), b = 0 (He et al. 2015, for ReLU);
    "xavier" -- W ~ U(±√(6/(d_in + d_out))), b = 0 (Glorot & Bengio 2010).
    """

    name = "Dense"

    def __init__(self, d_in: int, d_out: int, rng: np.random.Generator | None = None, init: str = "uniform",
                 dtype=np.float64) -> None:
        super().__init__()
        for what, d in (("d_in", d_in), ("d_out", d_out)):
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
                raise ConfigError(f"Dense.{what}: expected a positive integer, got {d!r}")
        if init not in INITS:
            raise ConfigError(f"Dense.init: expected one of {', '.join(INITS)}, got {init!r}")
        rng = rng if rng is not None else np.random.default_rng(0)
        self.d_in, self.d_out = int(d_in), int(d_out)
        if init == "uniform":
            bound = 1.0 / np.sqrt(d_in)
            W = rng.uniform(-bound, bound, (d_out, d_in))
            b = rng.uniform(-bound, bound, (d_out, 1))
        elif init == "he":
            W = rng.normal(0.0, np.sqrt(2.0 / d_in), (d_out, d_in))
            b = np.zeros((d_out, 1))
        else:
            bound = np.sqrt(6.0 / (d_in + d_out))
            W = rng.uniform(-bound, bound, (d_out, d_in))
            b = np.zeros((d_out, 1))
        self.params = {"W": W.astype(dtype), "b": b.astype(dtype)}
        self.grads = {"W": np.zeros_like(self.params["W"]), "b": np.zeros_like(self.params["b"])}
        self._a: np.ndarray | None = None

    @property
    def W(self) -> np.ndarray:
        return self.params["W"]

    @property
    def b(self) -> np.ndarray:
        return self.params["b"]

    def forward(self, a: np.ndarray, train: bool = True) -> np.ndarray:
        if a.ndim != 2 or a.shape[0] != self.d_in:
            raise InputShapeError(
                f"Dense({self.d_in} → {self.d_out}): input has shape {a.shape}, expected ({self.d_in}, N): "
                "one column per example"
            )
        self._a = a
        return self.W @ a + self.b  # (d_out, N)

    def backward(self, delta: np.ndarray) -> np.ndarray:
        if self._a is None:
            raise RuntimeError("Dense.backward: call forward first")
        self.grads["W"] = delta @ self._a.T  # (d_out, d_in)
        self.grads["b"] = delta.sum(axis=1, keepdims=True)  # (d_out, 1)
        return self.W.T @ delta  # (d_in, N)

    def equations(self, in_shape: tuple[int, int], index: int) -> Equations:
        l, p = index, index - 1
        n = in_shape[1]
        w, bs, out = (self.d_out, self.d_in), (self.d_out, 1), (self.d_out, n)
        a_prev = "x" if p == 0 else f"a^({p})"
        fwd = [f"z^({l}) = W^({l}) {a_prev} + b^({l})    {_shape(w)} · {_shape(in_shape)} + {_shape(bs)} → {_shape(out)}"]
        bwd = [
            f"∂J/∂W^({l}) = δ^({l}) {a_prev}ᵀ    {_shape(out)} · {_shape((n, self.d_in))} → {_shape(w)}",
            f"∂J/∂b^({l}) = Σ_n δ^({l})_n    {_shape(out)} summed over the N={n} columns → {_shape(bs)}",
            f"∂J/∂{a_prev} = W^({l})ᵀ δ^({l})    {_shape((self.d_in, self.d_out))} · {_shape(out)} → {_shape(in_shape)}",
        ]
        return Equations(f"Dense {l} ({self.d_in} → {self.d_out})", fwd, bwd, out, {"W": w, "b": bs})


class Activation(Layer):
    """Element-wise ``a = σ(z)``; backward: ``δ = ∂J/∂a ⊙ σ'(z)``.

    ``formula`` and ``derivative`` are the article's expressions with ``{z}`` and ``{a}``
    standing for this layer's z^(l) and a^(l) (what :meth:`equations` prints).
    """

    formula = "σ({z})"
    derivative = "σ'({z})"

    def __init__(self) -> None:
        super().__init__()
        self._z: np.ndarray | None = None
        self._a: np.ndarray | None = None

    def f(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def df(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, z: np.ndarray, train: bool = True) -> np.ndarray:
        a = self.f(z)
        self._z, self._a = z, a
        return a

    def backward(self, grad: np.ndarray) -> np.ndarray:
        if self._z is None:
            raise RuntimeError(f"{self.name}.backward: call forward first")
        return grad * self.df(self._z, self._a)

    def equations(self, in_shape: tuple[int, int], index: int) -> Equations:
        s = _shape(in_shape)
        z, a = f"z^({index})", f"a^({index})"
        fwd = [f"{a} = {self.formula.format(z=z, a=a)}    {s} → {s}"]
        bwd = [f"δ^({index}) = ∂J/∂{a} ⊙ {self.derivative.format(z=z, a=a)}    {s} ⊙ {s} → {s}"]
        return Equations(f"{self.name} {index}", fwd, bwd, in_shape)


class Sigmoid(Activation):
    """``σ(z) = 1 / (1 + e^(-z))``; ``σ'(z) = σ(z)(1 - σ(z))``."""

    name = "Sigmoid"
    formula = "1 / (1 + e^(-{z}))"
    derivative = "{a} ⊙ (1 - {a})"

    def f(self, z: np.ndarray) -> np.ndarray:
        # e^(-|z|) never overflows: for z < 0, σ(z) = e^z / (1 + e^z).
        e = np.exp(-np.abs(z))
        return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    def df(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return a * (1.0 - a)


class Tanh(Activation):
    """``tanh(z) = (e^z - e^(-z)) / (e^z + e^(-z))``; ``tanh'(z) = 1 - tanh²(z)``."""

    name = "Tanh"
    formula = "(e^({z}) - e^(-{z})) / (e^({z}) + e^(-{z}))"
    derivative = "(1 - {a}²)"

    def f(self, z: np.ndarray) -> np.ndarray:
        return np.tanh(z)

    def df(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return 1.0 - a * a


class ReLU(Activation):
    """``f(z) = max(0, z)``; ``f'(z) = 1 if z > 0 else 0`` (0 at z = 0, as torch)."""

    name = "ReLU"
    formula = "max(0, {z})"
    derivative = "1[{z} > 0]"

    def f(self, z: np.ndarray) -> np.ndarray:
        return np.maximum(z, 0.0)

    def df(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return (z > 0).astype(z.dtype)


class LeakyReLU(Activation):
    """``f(z) = max(αz, z)`` with α = 0.01 (the articles' leaky ReLU); ``f'(z) = 1 if z > 0 else α``."""

    name = "LeakyReLU"

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha < 1:
            raise ConfigError(f"LeakyReLU.alpha: expected a number in [0, 1), got {alpha!r}")
        self.alpha = float(alpha)
        self.formula = f"max({self.alpha:g}·{{z}}, {{z}})"
        self.derivative = f"(1 if {{z}} > 0 else {self.alpha:g})"

    def f(self, z: np.ndarray) -> np.ndarray:
        return np.where(z > 0, z, self.alpha * z)

    def df(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return np.where(z > 0, 1.0, self.alpha).astype(z.dtype)


ACTIVATIONS = {"sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU, "leaky_relu": LeakyReLU}


def make_activation(name: str) -> Activation:
    """An activation by name: sigmoid, tanh, relu or leaky_relu."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"activation: expected one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


class Dropout(Layer):
    """Inverted dropout (Srivastava et al. 2014): in training ``a = z ⊙ m / (1 - p)`` with
    ``m_i ~ Bernoulli(1 - p)``, so E[a] = z; at evaluation ``a = z``.
    backward: ``∂J/∂z = ∂J/∂a ⊙ m / (1 - p)``. The mask of the last forward is ``mask``."""

    name = "Dropout"

    def __init__(self, p: float, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ConfigError(f"Dropout.p: expected a probability in [0, 1), got {p!r}")
        self.p = float(p)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.mask: np.ndarray | None = None

    def forward(self, z: np.ndarray, train: bool = True) -> np.ndarray:
        if not train or self.p == 0.0:
            self.mask = None
            return z
        self.mask = (self.rng.random(z.shape) >= self.p).astype(z.dtype)
        return z * self.mask / (1.0 - self.p)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        if self.mask is None:
            return grad
        return grad * self.mask / (1.0 - self.p)

    def equations(self, in_shape: tuple[int, int], index: int) -> Equations:
        s = _shape(in_shape)
        q = f"{1 - self.p:g}"
        return Equations(
            f"Dropout {index} (p = {self.p:g})",
            [f"a^({index}) ← a^({index}) ⊙ m / {q},  m ~ Bernoulli({q})    {s} ⊙ {s} → {s} (training only)"],
            [f"∂J/∂a^({index}) ← ∂J/∂a^({index}) ⊙ m / {q}    {s} → {s}"],
            in_shape,
        )
