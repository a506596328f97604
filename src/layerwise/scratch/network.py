"""The articles' multilayer network end to end: forward, back propagation, an update.

``MLP(sizes=(64, 64, 10))`` is Dense → σ → [Dropout] → … → Dense: the last Dense's output
z^(L) goes to the loss (softmax is part of :class:`~layerwise.scratch.losses.CrossEntropy`).
One training step (:func:`train_step`):

    forward:   a^(0) = x;  z^(l) = W^(l) a^(l-1) + b^(l);  a^(l) = σ(z^(l));  J = loss(z^(L), y) + Ω
    backward:  δ^(L) = ∂J/∂z^(L);  ∂J/∂W^(l) = δ^(l) a^(l-1)ᵀ (+ ∂Ω/∂W^(l));  ∂J/∂b^(l) = Σ_n δ^(l)_n;
               δ^(l-1) = W^(l)ᵀ δ^(l) ⊙ σ'(z^(l-1))
    update:    the optimizer's rule on every W^(l), b^(l)

Data arrive as rows (N, d), NumPy's and torch's convention; :func:`train_step`,
:func:`evaluate` and :func:`fit` transpose them once into the articles' columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from layerwise.errors import ConfigError, InputShapeError
from layerwise.scratch.layers import Dense, Dropout, Equations, Layer, _shape, make_activation
from layerwise.scratch.losses import CrossEntropy, Loss
from layerwise.scratch.optim import Optimizer
from layerwise.scratch.penalties import Penalty


class MLP:
    """Dense layers of ``sizes`` (input first), ``activation`` between them, ``dropout``
    after each hidden activation; the output layer has no activation (the loss sees z^(L)).

    activation: sigmoid, tanh, relu or leaky_relu. init: see :class:`Dense`.
    ``seed`` fixes the initial weights and the dropout masks.
    """

    def __init__(self, sizes: Sequence[int], activation: str = "relu", dropout: float = 0.0, init: str = "uniform",
                 seed: int = 0, dtype=np.float64) -> None:
        sizes = tuple(sizes)
        if len(sizes) < 2:
            raise ConfigError(f"MLP.sizes: expected at least two widths (input and output), got {sizes!r}")
        self.sizes, self.activation, self.dropout = sizes, activation, dropout
        rng = np.random.default_rng(seed)
        self.layers: list[Layer] = []
        for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            self.layers.append(Dense(d_in, d_out, rng, init, dtype))
            if i < len(sizes) - 2:
                self.layers.append(make_activation(activation))
                if dropout > 0:
                    self.layers.append(Dropout(dropout, np.random.default_rng([seed, i])))

    @property
    def dense(self) -> list[Dense]:
        return [layer for layer in self.layers if isinstance(layer, Dense)]

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """x: (d_0, N) columns → z^(L): (d_L, N)."""
        a = x
        for layer in self.layers:
            a = layer.forward(a, train)
        return a

    def backward(self, grad: np.ndarray) -> np.ndarray:
        """From ∂J/∂z^(L) (d_L, N): fills every Dense's grads; returns ∂J/∂x (d_0, N)."""
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad

    def parameters(self) -> list[tuple[str, np.ndarray]]:
        """[("W1", W^(1)), ("b1", b^(1)), …] in order (the arrays themselves, not copies)."""
        return [(f"{k}{i}", layer.params[k]) for i, layer in enumerate(self.dense, 1) for k in ("W", "b")]

    def gradients(self) -> list[np.ndarray]:
        return [layer.grads[k] for layer in self.dense for k in ("W", "b")]

    def num_params(self) -> int:
        return sum(p.size for _, p in self.parameters())

    def set_weights(self, weights: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        """Copy (W (out, in), b (out,) or (out, 1)) per Dense, e.g. from torch Linears."""
        dense = self.dense
        if len(weights) != len(dense):
            raise ConfigError(f"MLP.set_weights: {len(weights)} (W, b) pairs for {len(dense)} Dense layers")
        for i, (layer, (W, b)) in enumerate(zip(dense, weights), 1):
            W, b = np.asarray(W), np.asarray(b).reshape(-1, 1)
            if W.shape != layer.W.shape or b.shape != layer.b.shape:
                raise InputShapeError(
                    f"MLP.set_weights: layer {i} needs W {layer.W.shape} and b {layer.b.shape}, got {W.shape} and {b.shape}"
                )
            layer.params["W"][...] = W
            layer.params["b"][...] = b


def _columns(x: np.ndarray, d: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != d:
        raise InputShapeError(f"scratch MLP: inputs have shape {x.shape}, expected (N, {d}) rows")
    return x.T


def train_step(net: MLP, loss: Loss, optimizer: Optimizer, x: np.ndarray, y: np.ndarray,
               penalty: Penalty | None = None) -> dict:
    """One forward, backward and update on the rows ``x`` (N, d_0), labels ``y`` (N,) or
    targets (N, d_L). Returns {"loss": J, "penalty": Ω, "accuracy": …} before the update."""
    cols = _columns(x, net.sizes[0])
    y = np.asarray(y)
    t = y if y.ndim == 1 else y.T
    out = net.forward(cols, train=True)
    J = loss.forward(out, t)
    net.backward(loss.backward())
    omega = 0.0
    if penalty is not None and penalty.lam > 0:
        omega = penalty.value(layer.W for layer in net.dense)
        for layer in net.dense:
            layer.grads["W"] = layer.grads["W"] + penalty.grad(layer.W)
    params = [p for _, p in net.parameters()]
    optimizer.step(params, net.gradients())
    rec = {"loss": J, "penalty": omega}
    if y.ndim == 1:
        rec["accuracy"] = float(np.mean(loss.predict(out) == y))
    return rec


def evaluate(net: MLP, loss: Loss, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> dict:
    """Mean loss and accuracy (for class labels) over rows ``x``, without dropout."""
    total, correct, n = 0.0, 0, len(x)
    y = np.asarray(y)
    for start in range(0, n, batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        out = net.forward(_columns(xb, net.sizes[0]), train=False)
        total += loss.forward(out, yb if yb.ndim == 1 else yb.T) * len(xb)
        if y.ndim == 1:
            correct += int(np.sum(loss.predict(out) == yb))
    rec = {"loss": total / n}
    if y.ndim == 1:
        rec["accuracy"] = correct / n
    return rec


def minibatches(n: int, batch_size: int, epoch: int, seed: int) -> Iterator[np.ndarray]:
    """The row indices of each mini-batch of one epoch: a permutation drawn from
    (seed, epoch), cut into ``batch_size`` pieces (the last one may be smaller)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


@dataclass
class FitResult:
    history: list[dict]  # one record per step: epoch, step, loss, penalty, accuracy
    evals: list[dict]  # one record per epoch on the validation rows, when given


def fit(net: MLP, loss: Loss, optimizer: Optimizer, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int = 32,
        seed: int = 0, penalty: Penalty | None = None, val: tuple[np.ndarray, np.ndarray] | None = None,
        callback: Callable[[str, dict], None] | None = None) -> FitResult:
    """Train for ``epochs`` over the rows ``x`` in :func:`minibatches`; ``callback(kind, record)``
    gets every step ("step") and every epoch's validation ("eval")."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"fit.epochs: expected an integer >= 1, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"fit.batch_size: expected an integer >= 1, got {batch_size!r}")
    history, evals, step = [], [], 0
    for epoch in range(epochs):
        for rows in minibatches(len(x), batch_size, epoch, seed):
            step += 1
            rec = {"epoch": epoch + 1, "step": step, **train_step(net, loss, optimizer, x[rows], y[rows], penalty)}
            history.append(rec)
            if callback is not None:
                callback("step", rec)
        if val is not None:
            rec = {"epoch": epoch + 1, "step": step, **evaluate(net, loss, *val)}
            evals.append(rec)
            if callback is not None:
                callback("eval", rec)
    return FitResult(history, evals)


def explain(net: MLP, batch_size: int = 32, loss: Loss | None = None, penalty: Penalty | None = None,
            optimizer: Optimizer | None = None) -> list[Equations]:
    """Each layer's forward and backward equations with this network's shapes and a batch of
    ``batch_size`` examples substituted, then the loss (default cross-entropy), the penalty
    and the optimizer's update rule."""
    loss = loss if loss is not None else CrossEntropy()
    shape = (net.sizes[0], batch_size)
    out: list[Equations] = []
    index = 0
    for layer in net.layers:
        if isinstance(layer, Dense):
            index += 1
        eq = layer.equations(shape, index)
        out.append(eq)
        shape = eq.out_shape
    L = index
    s = _shape(shape)
    fwd = [f"{loss.formula.replace('z', f'z^({L})') if loss.name == 'cross_entropy' else loss.formula}"
           f"    ŷ{'' if loss.name == 'cross_entropy' else f' = z^({L})'} {s}, y {s} → scalar J"]
    bwd = [f"δ^({L}) = {loss.gradient.split('=', 1)[1].strip()}    {s}"]
    out.append(Equations(f"Loss: {loss.name}", fwd, bwd, ()))
    if penalty is not None and penalty.lam > 0:
        shapes = ", ".join(f"W^({i}) {_shape(d.W.shape)}" for i, d in enumerate(net.dense, 1))
        out.append(Equations(f"Penalty: {penalty.label}",
                             [f"J ← J + {penalty.formula.split('=', 1)[1].strip()}    over {shapes}"],
                             [f"∂J/∂W^(l) ← ∂J/∂W^(l) + {penalty.gradient.split('=', 1)[1].strip()}"], ()))
    if optimizer is not None:
        out.append(Equations(f"Update: {optimizer.label}, for every θ in W^(1..{L}), b^(1..{L})",
                             [], [], (), update=list(optimizer.rule)))
    return out


def format_explanation(equations: Sequence[Equations]) -> str:
    """The equations as plain text, one block per layer (what ``--explain`` prints)."""
    lines: list[str] = []
    for eq in equations:
        lines.append(eq.layer)
        for tag, items in (("forward ", eq.forward), ("backward", eq.backward), ("update  ", eq.update)):
            for k, item in enumerate(items):
                lines.append(f"  {tag if k == 0 else ' ' * len(tag)}  {item}")
    return "\n".join(lines) + "\n"
