"""The size block of ``layerwise summary`` (torchinfo's "Params size / Forward/backward pass
size / Estimated Total Size", Keras' "Total params: 351 (1.37 KB)"), from the planner.

Parameters' bytes come from the analysis. Activations per example and the training footprint
come from :func:`layerwise.analysis.plan.plan` (one fake training step on the meta device:
autograd's saved tensors measured, not guessed), called as any user would call it.
"""

from __future__ import annotations

from torch import nn

from layerwise.errors import LayerwiseError


def sizes(model: nn.Module, batch_size: int = 1, seq_len: int | None = None, input_shape=None,
          optimizer: str = "adamw", precision: str = "fp32") -> dict:
    """{"activation_bytes_per_example", "training_peak_bytes", "setting"} (exact integers), or
    {"not_estimated": why} when the planner cannot trace the model's step.

    Activations are planned for one example (``input_shape`` with its batch dimension set to
    1); the footprint (weights, gradients, optimizer state, activations at the peak) for
    ``batch_size`` examples, ``optimizer`` and ``precision``, on CPU."""
    from layerwise.analysis.plan import plan

    one = None
    if input_shape is not None:
        shapes = input_shape if isinstance(input_shape[0], (list, tuple)) else [input_shape]
        one = [[1, *s[1:]] for s in shapes]
        one = one if len(one) > 1 else one[0]
    setting = f"batch {batch_size}, {optimizer}, {precision}"
    try:
        m = model  # plan() works on a meta copy and leaves the model as it is
        per_example = plan(m, batch_size=1, seq_len=seq_len, input_shape=one, optimizer=optimizer,
                           precision=precision, device="cpu")
        if batch_size == 1 and input_shape is None:
            full = per_example
        else:
            full = plan(m, batch_size=batch_size, seq_len=seq_len, input_shape=input_shape, optimizer=optimizer,
                        precision=precision, device="cpu")
    except LayerwiseError as e:
        return {"not_estimated": str(e), "setting": setting}
    except Exception as e:  # noqa: BLE001 - the planner cannot run every model's step; say why, keep the summary
        return {"not_estimated": f"the planner could not trace one training step ({type(e).__name__}: "
                                 f"{' '.join(str(e).split())[:160]})", "setting": setting}
    return {"activation_bytes_per_example": per_example.activation_bytes, "training_peak_bytes": full.peak_bytes,
            "setting": setting}
