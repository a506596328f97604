"""The CPU dropout and attention kernels against torch's own (F.dropout, scaled_dot_product_attention)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from layerwise.models.ops import Dropout, attention, dropout, used_probability


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.9])
def test_drop_rate_and_scaling_match_torch_dropout(p):
    torch.manual_seed(0)
    x = torch.rand(1_000_000) + 0.5  # no zeros, so a zero output is a dropped element
    out = dropout(x, p)
    ref = F.dropout(x, p, training=True)
    n = x.numel()
    sigma = math.sqrt(p * (1 - p) / n)
    for y in (out, ref):  # both drop at rate p, to within 5 standard errors
        assert abs((y == 0).float().mean().item() - p) < 5 * sigma
    assert abs(used_probability(p) - p) <= 2**-17
    kept = out != 0
    # survivors are scaled so the expectation is the input: x / (1 - p_used)
    torch.testing.assert_close(out[kept], x[kept] / (1 - used_probability(p)))
    # and the mean over many elements equals the input's, as with torch's dropout
    assert abs(out.mean().item() - x.mean().item()) < 6 * x.std().item() * math.sqrt(p / (1 - p) / n) + 1e-3


def test_neighbouring_elements_drop_independently():
    # four elements share one 64-bit draw: their masks must still be independent
    torch.manual_seed(1)
    p = 0.3
    dropped = (dropout(torch.ones(4, 500_000), p) == 0).float()
    flat = dropped.flatten().view(-1, 4)  # the four lanes of each draw
    sigma = math.sqrt(p * p * (1 - p * p) / flat.shape[0])
    for a in range(4):
        assert abs(flat[:, a].mean().item() - p) < 5 * math.sqrt(p * (1 - p) / flat.shape[0])
        for b in range(a + 1, 4):
            both = (flat[:, a] * flat[:, b]).mean().item()
            assert abs(both - p * p) < 5 * sigma, (a, b, both)


def test_backward_uses_the_forward_mask():
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)
    y = dropout(x, 0.25)
    g = torch.randn_like(y)
    y.backward(g)
    scale = 1 / (1 - used_probability(0.25))
    kept = y.detach() != 0
    torch.testing.assert_close(x.grad, torch.where(kept, g * scale, 0.0))


def test_identity_when_not_training_or_p_zero_and_seeded():
    x = torch.randn(100)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    torch.manual_seed(3)
    a = dropout(x, 0.5)
    torch.manual_seed(3)
    b = dropout(x, 0.5)
    assert torch.equal(a, b)


def test_module_is_an_nn_dropout_and_follows_train_eval():
    m = Dropout(0.4)
    assert isinstance(m, nn.Dropout) and type(m).__name__ == "Dropout" and m.p == 0.4
    x = torch.ones(10_000)
    assert (m(x) == 0).any()
    m.eval()
    assert torch.equal(m(x), x)
    assert m.state_dict() == {}


def test_bf16_input_keeps_its_dtype():
    x = torch.randn(1000, dtype=torch.bfloat16)
    assert dropout(x, 0.1).dtype == torch.bfloat16


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_math_path_equals_torch_sdpa(causal, masked):
    # a p whose 16-bit threshold is 0 takes the dropout path but drops nothing: it must
    # then equal torch's fused attention, mask and causal flag included
    torch.manual_seed(4)
    q, k, v = (torch.randn(2, 3, 7, 8, requires_grad=True) for _ in range(3))
    mask = None
    if masked:
        mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
        mask[1, ..., 5:] = False
    assert used_probability(1e-7) == 0.0
    out = attention(q, k, v, mask, dropout_p=1e-7, is_causal=causal)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), g)
    ref_grads = torch.autograd.grad(ref, (q, k, v), g)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_attention_dropout_is_unbiased():
    # averaged over many masks, attention with dropout on the probabilities is attention without
    torch.manual_seed(5)
    q, k, v = (torch.randn(1, 2, 5, 4) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v)
    mean = torch.stack([attention(q, k, v, dropout_p=0.3) for _ in range(4000)]).mean(0)
    torch.testing.assert_close(mean, ref, atol=0.05, rtol=0.0)


def test_p_next_to_one_and_out_of_range():
    # round(p * 65536) reaches 65536 for p within 2**-17 of 1: torch's dropout takes over
    x = torch.ones(1000)
    out = Dropout(1 - 1e-7)(x)
    assert torch.isfinite(out).all() and (out == 0).float().mean() > 0.99
    with pytest.raises(ValueError, match="between 0 and 1"):
        dropout(x, -0.1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        dropout(x, 1.5)


def test_bf16_attention_with_dropout_computes_in_fp32_like_torch():
    # torch's math path upcasts half/bf16 scores and softmax to fp32; ours must be as accurate
    torch.manual_seed(6)
    q, k, v = (2 * torch.randn(2, 4, 128, 64, dtype=torch.float64) for _ in range(3))
    exact = F.scaled_dot_product_attention(q, k, v)
    q16, k16, v16 = (t.bfloat16() for t in (q, k, v))
    ours = attention(q16, k16, v16, dropout_p=1e-7)  # dropout path, nothing dropped
    theirs = F.scaled_dot_product_attention(q16, k16, v16)
    assert ours.dtype == torch.bfloat16
    err_ours = (ours.double() - exact).abs().max().item()
    err_theirs = (theirs.double() - exact).abs().max().item()
    assert err_ours <= 1.25 * err_theirs, (err_ours, err_theirs)
