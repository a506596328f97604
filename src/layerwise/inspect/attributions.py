"""Attributions with Captum: which inputs a prediction rests on.

- :func:`integrated_gradients` (Sundararajan et al. 2017, "Axiomatic Attribution for Deep
  Networks"): features of a tabular input; *completeness* — the attributions sum to
  f(x) − f(baseline) — holds up to the integral's error, which Captum reports as the
  convergence delta;
- :func:`token_attributions`: the same through the token embedding (Captum's
  ``LayerIntegratedGradients``; token ids are not differentiable), one number per token;
- :func:`grad_cam` (Selvaraju et al. 2017): Captum's ``LayerGradCam`` on a convolution,
  upsampled to the image;
- :func:`permutation_importance` (Breiman 2001): how much a metric drops when one feature's
  column is shuffled across the batch (Captum's ``FeaturePermutation`` on a batch metric).

Captum is an optional dependency (``pip install 'layerwise[inspect]'``); :func:`require_captum`
turns its absence into a one-line error with the install command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from layerwise.errors import LayerwiseError

PIP_LINE = "pip install 'layerwise[inspect]' (or: pip install captum)"


class MissingDependencyError(LayerwiseError):
    """An optional package a feature needs is not installed (the message gives the pip line)."""


def require_captum(what: str = "attributions"):
    """``captum.attr``, or a :class:`MissingDependencyError` naming the pip install line."""
    try:
        import captum.attr as attr
    except ImportError:
        raise MissingDependencyError(
            f"{what} need Captum, which is not installed: {PIP_LINE}; "
            "or leave them out with --sections health,attention,weights"
        ) from None
    return attr


Forward = Callable[..., torch.Tensor]  # (inputs, *additional) -> scores (B, K)


@dataclass
class IGResult:
    """Integrated Gradients of ``f_x[i] = forward(x)[i, target[i]]``.

    attributions: like the input (features) or (B, T) per token; delta (B,): Captum's
    convergence delta, sum(attributions) − (f(x) − f(baseline)).
    """

    attributions: torch.Tensor
    delta: torch.Tensor
    f_x: torch.Tensor  # (B,)
    f_baseline: torch.Tensor  # (B,)
    target: list[int]
    n_steps: int = 0  # the integration steps used (see ``tolerance``)
    method: str = ""  # Captum's quadrature: gausslegendre, or riemann_trapezoid past GL_MAX_STEPS

    @property
    def sums(self) -> torch.Tensor:
        return self.attributions.flatten(1).sum(dim=1)

    @property
    def completeness_error(self) -> torch.Tensor:
        """|sum(attributions) − (f(x) − f(baseline))| / max(|f(x) − f(baseline)|, 1e-6), per example."""
        diff = self.f_x - self.f_baseline
        return (self.sums - diff).abs() / diff.abs().clamp_min(1e-6)

    @property
    def checked(self) -> torch.Tensor:
        """(B,) bool: the examples completeness is judged on, those whose |f(x) − f(baseline)| is
        at least 0.1% of the batch's largest (a relative error of a near-zero difference means nothing)."""
        diff = (self.f_x - self.f_baseline).abs()
        return diff >= 1e-3 * float(diff.max())

    @property
    def worst_completeness_error(self) -> float:
        """The largest :attr:`completeness_error` of the :attr:`checked` examples."""
        keep = self.checked
        return float(self.completeness_error[keep].max()) if bool(keep.any()) else 0.0


GL_MAX_STEPS = 256


def _method(steps: int) -> str:
    """Gauss-Legendre (Captum's default: exact for smooth paths with few steps) up to GL_MAX_STEPS;
    past that the trapezoid rule, because Captum recomputes Legendre's nodes per call as an
    n×n eigenproblem (seconds at 1024 steps, minutes at 4096), and a ReLU network's kinks, not
    smoothness, limit the accuracy there (the trapezoid rule converged as fast on the seed MLP)."""
    return "gausslegendre" if steps <= GL_MAX_STEPS else "riemann_trapezoid"


def _until_complete(run: Callable[[int], IGResult], n_steps: int, tolerance: float | None, max_steps: int) -> IGResult:
    """Run IG with ``n_steps``, doubling them (up to ``max_steps``) while an example's attributions
    miss f(x) − f(baseline) by more than ``tolerance`` (relative). Sundararajan et al. (2017, sec. 3)
    check completeness this way. A ReLU network's gradient jumps where a unit switches on along the
    path, so a fixed quadrature converges only as 1/steps there (the seed MLP needs up to ~2000).
    Only the :attr:`IGResult.checked` examples are waited for."""
    result = run(n_steps)
    while tolerance is not None and n_steps < max_steps and result.worst_completeness_error > tolerance:
        n_steps = min(2 * n_steps, max_steps)
        result = run(n_steps)
    return result


def _score(forward: Forward, x, target: list[int], args: tuple) -> torch.Tensor:
    with torch.no_grad():
        out = forward(x, *args)  # (B, K)
    return out[torch.arange(out.shape[0]), torch.as_tensor(target)].detach()


def _targets(forward: Forward, x, target, args: tuple) -> list[int]:
    if target is None:  # the predicted class
        with torch.no_grad():
            out = forward(x, *args)
        return [0] * out.shape[0] if out.shape[1] == 1 else out.argmax(dim=1).tolist()
    if isinstance(target, int):
        return [target] * x.shape[0]
    return [int(t) for t in target]


def integrated_gradients(
    forward: Forward,
    x: torch.Tensor,
    baseline: torch.Tensor | None = None,
    target: int | list[int] | None = None,
    n_steps: int = 64,
    additional_args: tuple = (),
    internal_batch_size: int | None = None,
    tolerance: float | None = 0.01,
    max_steps: int = 4096,
) -> IGResult:
    """IG of ``forward(x, *additional_args)[:, target]`` from ``baseline`` (default zeros) to
    ``x`` (B, ...); ``target`` None: the predicted class (the one output of a binary logit).
    ``n_steps`` doubles up to ``max_steps`` until completeness holds within ``tolerance`` (None: fixed)."""
    attr = require_captum()
    baseline = torch.zeros_like(x) if baseline is None else baseline
    tgt = _targets(forward, x, target, additional_args)
    ig = attr.IntegratedGradients(forward)
    f_x, f_b = _score(forward, x, tgt, additional_args), _score(forward, baseline, tgt, additional_args)

    def run(steps: int) -> IGResult:
        a, delta = ig.attribute(x, baselines=baseline, target=tgt, additional_forward_args=additional_args or None,
                                n_steps=steps, method=_method(steps), return_convergence_delta=True,
                                internal_batch_size=internal_batch_size)
        return IGResult(a.detach(), delta.detach(), f_x, f_b, tgt, steps, _method(steps))

    return _until_complete(run, n_steps, tolerance, max_steps)


def token_attributions(
    forward: Forward,
    ids: torch.Tensor,
    embedding: nn.Module,
    baseline_ids: torch.Tensor,
    target: int | list[int] | None = None,
    n_steps: int = 64,
    additional_args: tuple = (),
    internal_batch_size: int | None = None,
    tolerance: float | None = 0.01,
    max_steps: int = 4096,
) -> IGResult:
    """Token importance: IG through ``embedding`` (the layer whose output is integrated) from the
    embedding of ``baseline_ids`` to that of ``ids`` (B, T), summed over the embedding width → (B, T).
    ``n_steps``, ``tolerance``, ``max_steps``: as :func:`integrated_gradients`."""
    attr = require_captum()
    tgt = _targets(forward, ids, target, additional_args)
    lig = attr.LayerIntegratedGradients(forward, embedding)
    f_x, f_b = _score(forward, ids, tgt, additional_args), _score(forward, baseline_ids, tgt, additional_args)

    def run(steps: int) -> IGResult:
        a, delta = lig.attribute(ids, baselines=baseline_ids, target=tgt, additional_forward_args=additional_args or None,
                                 n_steps=steps, method=_method(steps), return_convergence_delta=True,
                                 internal_batch_size=internal_batch_size)
        return IGResult(a.detach().sum(dim=-1), delta.detach(), f_x, f_b, tgt, steps, _method(steps))  # (B, T)

    return _until_complete(run, n_steps, tolerance, max_steps)


def grad_cam(forward: Forward, images: torch.Tensor, layer: nn.Module, target: int | list[int] | None = None,
             additional_args: tuple = ()) -> tuple[torch.Tensor, list[int]]:
    """Grad-CAM on convolution ``layer`` for ``images`` (B, C, H, W): (maps (B, H, W) ≥ 0, bilinearly
    upsampled from the layer's feature map, targets used)."""
    attr = require_captum()
    tgt = _targets(forward, images, target, additional_args)
    cam = attr.LayerGradCam(forward, layer).attribute(images, target=tgt, additional_forward_args=additional_args or None,
                                                      relu_attributions=True)  # (B, 1, h, w)
    up = attr.LayerAttribution.interpolate(cam.detach(), tuple(images.shape[-2:]), "bilinear")  # (B, 1, H, W)
    return up[:, 0].clamp_min(0.0), tgt


def mass_inside(maps: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The share of each map's mass on the pixels where the image is > 0 (a digit's strokes):
    (B,); NaN for an all-zero map."""
    inside = (images.flatten(1) > 0) if images.dim() == maps.dim() else (images.amax(dim=1).flatten(1) > 0)
    m = maps.flatten(1)
    total = m.sum(dim=1)
    return torch.where(total > 0, (m * inside).sum(dim=1) / total.clamp_min(1e-30), torch.full_like(total, float("nan")))


def permutation_importance(
    metric: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    n_repeats: int = 10,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (F,), std (F,)) over ``n_repeats`` of metric(x) − metric(x with column j shuffled
    across the batch), for features x (B, F); ``metric`` returns a scalar for the whole batch
    (accuracy: a drop means the model relies on the feature). The permutations come from
    torch's generator seeded with ``seed`` inside a forked RNG, so the caller's state is untouched."""
    attr = require_captum()
    fp = attr.FeaturePermutation(lambda inp: metric(inp).reshape(1))
    mask = torch.arange(x.shape[1], device=x.device)[None]  # one group per feature
    runs = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(n_repeats):
            with torch.no_grad():
                runs.append(fp.attribute(x, feature_mask=mask).reshape(-1).detach())
    stack = torch.stack(runs)  # (R, F)
    return stack.mean(dim=0), stack.std(dim=0, unbiased=False)
