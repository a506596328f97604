"""Frozen-prefix caching gives the same training as running the whole model."""

import pytest
import torch

from layerwise.finetune import apply_strategy
from layerwise.finetune.cache import SuffixModel, cache_prefix, first_trainable_stage
from layerwise.models import build


def _train(model, batches, steps=6):
    """A few plain SGD steps; returns the losses."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    losses = []
    for step in range(steps):
        inputs, y = batches[step % len(batches)]
        out = model(*inputs)
        loss = torch.nn.functional.cross_entropy(getattr(out, "logits", out), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("family,strategy,expected_stage", [
    # bert-tiny has 2 layers, gpt-nano 3: top-1 starts at the last one
    ("bert", "head", "head"), ("bert", "top-1", "layers.1"), ("gpt", "head", "score"), ("gpt", "top-1", "transformer.h.2"),
])
def test_cached_training_equals_uncached(family, strategy, expected_stage):
    def fresh():
        torch.manual_seed(0)
        if family == "bert":
            return build("bert-tiny", head="sequence_classification", num_labels=2, dropout=0.0, attention_dropout=0.0)
        return build("gpt-nano", head="classification", num_labels=2)

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 100, (16, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[::3, 8:] = 0
    y = torch.randint(0, 2, (16,), generator=g)
    rows = [slice(0, 8), slice(8, 16)]

    plain = fresh()
    apply_strategy(plain, strategy)
    if family == "bert":
        uncached = _train(plain, [((ids[r], mask[r]), y[r]) for r in rows])
    else:
        uncached = _train(plain, [((ids[r], None, None, mask[r]), y[r]) for r in rows])

    model = fresh()
    apply_strategy(model, strategy)
    cached = cache_prefix(model, (ids, mask), batch_size=5)
    assert cached.stage == expected_stage == model.stage_names()[first_trainable_stage(model)]
    suffix = SuffixModel(model, cached.start)
    losses = _train(suffix, [(tuple(t[r] for t in cached.states), y[r]) for r in rows])
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(uncached), rtol=1e-5, atol=1e-6)
    assert len(set(losses)) > 1  # it trained
    # and it trained the same parameters to the same values
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for n, p in plain.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(trained[n], p, rtol=1e-5, atol=1e-6)
