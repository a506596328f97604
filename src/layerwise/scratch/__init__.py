"""Forward and back propagation written out in NumPy, from the articles' formulas.

No torch here: this package is the math the torch models compute, written once by hand
in the articles' notation (W, b, σ, ŷ, J; examples are columns) and checked against torch
autograd in ``tests/scratch``.

- :mod:`layers`: Dense; sigmoid, tanh, ReLU, leaky ReLU; dropout;
- :mod:`losses`: MSE, softmax cross-entropy, hinge;
- :mod:`penalties`: L1 and L2 on the weights;
- :mod:`optim`: SGD, momentum, Adam;
- :mod:`network`: the MLP, one training step, ``fit``, and :func:`explain` (each layer's
  equations with the shapes substituted).
"""

from layerwise.scratch.layers import (
    ACTIVATIONS,
    Dense,
    Dropout,
    Equations,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Tanh,
    make_activation,
)
from layerwise.scratch.losses import LOSSES, MSE, CrossEntropy, Hinge, make_loss, one_hot, softmax
from layerwise.scratch.network import MLP, FitResult, evaluate, explain, fit, format_explanation, minibatches, train_step
from layerwise.scratch.optim import OPTIMIZERS, SGD, Adam, Momentum, make_optimizer
from layerwise.scratch.penalties import L1, L2, Both, Penalty, make_penalty

__all__ = [
    "ACTIVATIONS", "Adam", "Both", "CrossEntropy", "Dense", "Dropout", "Equations", "FitResult", "Hinge", "L1", "L2",
    "LOSSES", "LeakyReLU", "MLP", "MSE", "Momentum", "OPTIMIZERS", "Penalty", "ReLU", "SGD", "Sigmoid", "Tanh", "evaluate",
    "explain", "fit", "format_explanation", "make_activation", "make_loss", "make_optimizer", "make_penalty", "minibatches",
    "one_hot", "softmax", "train_step",
]
