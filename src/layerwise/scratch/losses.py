"""Loss functions J, their values and their gradients with respect to the network's output.

Batches are columns (see :mod:`layerwise.scratch.layers`): the output is (K, N) for N
examples and K outputs. Targets are class indices (N,) or an array shaped like the output.
Every loss is the *mean* over the N examples, so the gradient carries a 1/N.

- :class:`MSE` -- the articles' ``J = ½ Σ (y - ŷ)²``, per example, averaged:
  ``J = 1/(2N) Σ_n Σ_k (y_kn - ŷ_kn)²``;  ``∂J/∂ŷ = (ŷ - y) / N``.
- :class:`CrossEntropy` -- softmax then ``J = -(1/N) Σ_n Σ_k y_kn log ŷ_kn`` with
  ``ŷ = softmax(z)``, ``ŷ_kn = e^(z_kn) / Σ_j e^(z_jn)``; on the logits z the gradient is
  ``∂J/∂z = (ŷ - y) / N``.
- :class:`Hinge` -- the articles' ``J = max(0, 1 - y ŷ)`` with y ∈ {-1, +1}, for every output
  (one-vs-rest for K classes) and averaged: ``J = (1/N) Σ_n Σ_k max(0, 1 - y_kn ŷ_kn)``;
  ``∂J/∂ŷ = -y ⊙ 1[y ŷ < 1] / N``.
"""

from __future__ import annotations

import numpy as np

from layerwise.errors import ConfigError, InputShapeError


def one_hot(y: np.ndarray, k: int, dtype=np.float64) -> np.ndarray:
    """Class indices (N,) → a (K, N) matrix with a 1 in row y_n of column n."""
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise InputShapeError(f"one_hot: expected class indices of shape (N,), got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= k):
        raise InputShapeError(f"one_hot: class index {int(y.max() if y.max() >= k else y.min())} is not in 0..{k - 1}")
    out = np.zeros((k, y.shape[0]), dtype=dtype)
    out[y, np.arange(y.shape[0])] = 1.0
    return out


def _targets(out: np.ndarray, y: np.ndarray, negative: float = 0.0) -> np.ndarray:
    if out.ndim != 2:
        raise InputShapeError(f"loss: the output has shape {out.shape}, expected (K, N): one column per example")
    y = np.asarray(y)
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        t = one_hot(y, out.shape[0], out.dtype)
        if y.shape[0] != out.shape[1]:
            raise InputShapeError(f"loss: {y.shape[0]} labels for {out.shape[1]} examples")
        return t if negative == 0.0 else np.where(t > 0, 1.0, negative).astype(out.dtype)
    if y.shape != out.shape:
        raise InputShapeError(f"loss: targets have shape {y.shape}, expected class indices (N,) or the output's shape {out.shape}")
    return y.astype(out.dtype, copy=False)


class Loss:
    """``forward(out (K, N), y) -> J`` (a float); ``backward() -> ∂J/∂out`` (K, N)."""

    name = "loss"
    #: the formula and its gradient, as :func:`layerwise.scratch.network.explain` prints them
    formula = ""
    gradient = ""

    def forward(self, out: np.ndarray, y: np.ndarray) -> float:
        raise NotImplementedError

    def backward(self) -> np.ndarray:
        raise NotImplementedError

    def predict(self, out: np.ndarray) -> np.ndarray:
        """Predicted class per example (N,): the largest output."""
        return out.argmax(axis=0)


class MSE(Loss):
    """Mean squared error ``J = 1/(2N) Σ_n Σ_k (y_kn - ŷ_kn)²``; ``∂J/∂ŷ = (ŷ - y) / N``.

    The ½ is the articles' (it cancels the 2 of the derivative); torch's ``mse_loss`` is
    ``(1/(NK)) Σ (y - ŷ)²``, i.e. this J times 2/K.
    """

    name = "mse"
    formula = "J = 1/(2N) Σ_n Σ_k (y_kn - ŷ_kn)²"
    gradient = "∂J/∂ŷ = (ŷ - y) / N"

    def forward(self, out: np.ndarray, y: np.ndarray) -> float:
        t = _targets(out, y)
        self._diff, self._n = out - t, out.shape[1]
        return float(0.5 * np.sum(self._diff**2) / self._n)

    def backward(self) -> np.ndarray:
        return self._diff / self._n


def softmax(z: np.ndarray) -> np.ndarray:
    """``ŷ_kn = e^(z_kn) / Σ_j e^(z_jn)`` per column; the column maximum is subtracted first
    (the same ŷ, without overflow)."""
    e = np.exp(z - z.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def log_softmax(z: np.ndarray) -> np.ndarray:
    s = z - z.max(axis=0, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=0, keepdims=True))


class CrossEntropy(Loss):
    """Softmax cross-entropy on logits z (K, N): ``ŷ = softmax(z)``,
    ``J = -(1/N) Σ_n Σ_k y_kn log ŷ_kn``; ``∂J/∂z = (ŷ - y) / N``.

    The gradient: ``∂ŷ_k/∂z_j = ŷ_k(1[k = j] - ŷ_j)`` and ``Σ_k y_k = 1``, so
    ``∂J/∂z_j = -Σ_k y_k (1[k = j] - ŷ_j) = ŷ_j - y_j`` per example. With class indices
    this is torch's ``cross_entropy(logits, labels)``.
    """

    name = "cross_entropy"
    formula = "ŷ = softmax(z), J = -(1/N) Σ_n Σ_k y_kn log ŷ_kn"
    gradient = "∂J/∂z = (ŷ - y) / N"

    def forward(self, out: np.ndarray, y: np.ndarray) -> float:
        t = _targets(out, y)
        logp = log_softmax(out)
        self._yhat, self._t, self._n = np.exp(logp), t, out.shape[1]
        return float(-np.sum(t * logp) / self._n)

    def backward(self) -> np.ndarray:
        return (self._yhat - self._t) / self._n

    def probabilities(self, out: np.ndarray) -> np.ndarray:
        return softmax(out)


class Hinge(Loss):
    """The articles' hinge ``max(0, 1 - y ŷ)``, y ∈ {-1, +1}, on every output and averaged:
    ``J = (1/N) Σ_n Σ_k max(0, 1 - y_kn ŷ_kn)``; ``∂J/∂ŷ = -y ⊙ 1[y ŷ < 1] / N``
    (0 at the kink y ŷ = 1, as torch's ``clamp``).

    Class indices become one-vs-rest targets: +1 in the example's class, -1 elsewhere. With
    one output (K = 1) and y ∈ {-1, +1} this is scikit-learn's ``hinge_loss``.
    """

    name = "hinge"
    formula = "J = (1/N) Σ_n Σ_k max(0, 1 - y_kn ŷ_kn),  y ∈ {-1, +1}"
    gradient = "∂J/∂ŷ = -y ⊙ 1[y ŷ < 1] / N"

    def forward(self, out: np.ndarray, y: np.ndarray) -> float:
        t = _targets(out, y, negative=-1.0)
        margin = 1.0 - t * out
        self._t, self._active, self._n = t, (margin > 0).astype(out.dtype), out.shape[1]
        return float(np.sum(np.maximum(margin, 0.0)) / self._n)

    def backward(self) -> np.ndarray:
        return -self._t * self._active / self._n


LOSSES = {"mse": MSE, "cross_entropy": CrossEntropy, "hinge": Hinge}


def make_loss(name: str) -> Loss:
    """A loss by name: mse, cross_entropy or hinge."""
    if name not in LOSSES:
        raise ConfigError(f"loss: expected one of {', '.join(LOSSES)}, got {name!r}")
    return LOSSES[name]()
