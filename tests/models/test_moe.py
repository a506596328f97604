"""layerwise's mixture-of-experts layer against transformers' Mixtral and Qwen2-MoE: converted with
``load_hf_gpt``, same weights give the same logits; and its grouped matmul against autograd
on the dense computation."""

import pytest
import torch
import transformers as T

from layerwise.models import build
from layerwise.models.convert import gpt_config_from_hf, gpt_config_to_hf, gpt_state_dict_to_hf, load_hf_gpt
from layerwise.models.gpt import GPT
from layerwise.models.ops import grouped_mm

TOL = dict(atol=2e-5, rtol=2e-5)


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _ours_from_hf(hf: torch.nn.Module) -> GPT:
    """Convert with the converter users run (config.json + state dict), then check the round trip."""
    d = {**hf.config.to_dict(), "model_type": hf.config.model_type}
    ours = load_hf_gpt(d, hf.state_dict())
    back = gpt_state_dict_to_hf(ours.state_dict(), ours.config)
    theirs = {k: v for k, v in hf.state_dict().items() if "rotary_emb" not in k}
    assert back.keys() == theirs.keys() and all(torch.equal(back[k], theirs[k]) for k in theirs)
    assert gpt_config_from_hf(gpt_config_to_hf(ours.config)) == ours.config
    return ours


@pytest.mark.parametrize("impl", ["eager", "batched_mm", "grouped_mm"])
def test_mixtral_logits_match_transformers(impl):
    hf = T.MixtralForCausalLM(T.MixtralConfig(
        vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, rms_norm_eps=1e-5, rope_theta=1e4,
        attn_implementation="eager", experts_implementation=impl)).eval()
    _randomise(hf)
    ours = _ours_from_hf(hf)
    assert (ours.config.n_experts, ours.config.n_experts_per_token, ours.config.shared_expert_size) == (4, 2, 0)
    assert sum(p.numel() for p in ours.parameters()) == hf.num_parameters()
    x = torch.randint(0, 61, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, hf(x).logits, **TOL)


def test_qwen_moe_with_gated_shared_expert_logits_match_transformers():
    hf = T.Qwen2MoeForCausalLM(T.Qwen2MoeConfig(
        vocab_size=61, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, shared_expert_intermediate_size=40,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, num_experts=6, num_experts_per_tok=3,
        norm_topk_prob=False, rms_norm_eps=1e-5, rope_theta=1e4, attn_implementation="eager")).eval()
    _randomise(hf)
    ours = _ours_from_hf(hf)
    c = ours.config
    assert (c.n_experts, c.n_experts_per_token, c.expert_size, c.shared_expert_size, c.moe_norm_topk) == (6, 3, 16, 40, False)
    assert c.attn_bias and c.attn_out_bias is False
    assert sum(p.numel() for p in ours.parameters()) == hf.num_parameters()
    x = torch.randint(0, 61, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, hf(x).logits, **TOL)


def test_grouped_mm_and_its_gradients_equal_the_dense_computation():
    g = torch.Generator().manual_seed(0)
    counts = [3, 0, 5, 2]  # an expert may receive no rows
    x = torch.randn(sum(counts), 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    offs = torch.tensor(counts).cumsum(0).to(torch.int32)
    assert torch.autograd.gradcheck(lambda a, b: grouped_mm(a, b, offs), (x, w))
    group = torch.repeat_interleave(torch.arange(4), torch.tensor(counts))  # (S,) each row's expert
    dense = torch.einsum("sk,skn->sn", x, w[group])
    torch.testing.assert_close(grouped_mm(x, w, offs), dense)


def test_moe_preset_trains_on_cpu_and_runs_on_meta():
    m = build("moe-nano")
    x = torch.randint(0, 256, (2, 16))
    out = m(x, x)
    out.loss.backward()
    experts = m.transformer.h[0].mlp.experts
    assert experts.gate_up_proj.grad.abs().sum() > 0 and m.transformer.h[0].mlp.router.weight.grad.abs().sum() > 0
    meta = build("moe-nano", device="meta")
    assert meta(torch.zeros(2, 16, dtype=torch.long, device="meta")).logits.shape == (2, 16, 256)
