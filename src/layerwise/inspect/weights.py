"""Weights as pictures: the first convolution's filters, the embedding matrix in two dimensions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def first_conv(model: nn.Module) -> tuple[str, nn.Module] | None:
    """(name, module) of the first 2-D convolution in module order, or None."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    return None


def conv_filters(conv: nn.Conv2d) -> torch.Tensor:
    """The kernels as images (C_out, kh, kw): each filter averaged over its input channels
    (a 1-channel input, MNIST's, shows the filters exactly)."""
    return conv.weight.detach().float().mean(dim=1).cpu()


@dataclass
class Projection:
    """An embedding matrix (V, d) projected on its first two principal components."""

    coords: torch.Tensor  # (V, 2)
    explained_variance_ratio: list[float]  # of the two components
    components: torch.Tensor  # (2, d), unit vectors


def pca_2d(matrix: torch.Tensor) -> Projection:
    """PCA of the rows of ``matrix`` (V, d): centred, then the top two right singular vectors.
    The sign of each component is fixed so that its largest-magnitude entry is positive."""
    x = matrix.detach().double().cpu()
    x = x - x.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    comps = vh[:2].clone()  # (2, d)
    for i in range(comps.shape[0]):
        if comps[i, comps[i].abs().argmax()] < 0:
            comps[i] = -comps[i]
    var = s.pow(2)
    ratio = (var[:2] / var.sum()).tolist() if float(var.sum()) > 0 else [0.0, 0.0]
    return Projection((x @ comps.T).float(), [float(r) for r in ratio], comps.float())


def token_embedding(model: nn.Module) -> tuple[str, nn.Embedding] | None:
    """(name, module) of the model's token embedding: its first ``nn.Embedding`` in module order."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Embedding):
            return name, m
    return None
