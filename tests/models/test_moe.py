"""layerwise's mixture-of-experts layer against transformers' Mixtral and Qwen2-MoE (same weights,
same logits), and its grouped matmul against autograd on the dense computation."""

import pytest
import torch
import transformers as T

from layerwise.models import build
from layerwise.models.gpt import GPT, GPTConfig
from layerwise.models.ops import grouped_mm

TOL = dict(atol=2e-5, rtol=2e-5)


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _ours_from_hf(hf: torch.nn.Module, config: GPTConfig) -> GPT:
    """Copy a transformers Mixtral/Qwen2-MoE state dict onto our names (q/k/v/o, the router, the 3-D experts)."""
    ours = GPT(config).eval()
    sd = {"transformer.wte.weight": hf.model.embed_tokens.weight, "transformer.ln_f.weight": hf.model.norm.weight,
          "lm_head.weight": hf.lm_head.weight}
    for i, layer in enumerate(hf.model.layers):
        p = f"transformer.h.{i}."
        sd[p + "ln_1.weight"] = layer.input_layernorm.weight
        sd[p + "ln_2.weight"] = layer.post_attention_layernorm.weight
        for ours_name, theirs in (("q_proj", "q_proj"), ("k_proj", "k_proj"), ("v_proj", "v_proj"), ("c_proj", "o_proj")):
            for part, t in getattr(layer.self_attn, theirs).named_parameters():
                sd[f"{p}attn.{ours_name}.{part}"] = t
        sd[p + "mlp.router.weight"] = layer.mlp.gate.weight
        sd[p + "mlp.experts.gate_up_proj"] = layer.mlp.experts.gate_up_proj
        sd[p + "mlp.experts.down_proj"] = layer.mlp.experts.down_proj
        if hasattr(layer.mlp, "shared_expert"):
            for name in ("gate_proj", "up_proj", "down_proj"):
                sd[f"{p}mlp.shared_expert.{name}.weight"] = getattr(layer.mlp.shared_expert, name).weight
            sd[p + "mlp.shared_expert_gate.weight"] = layer.mlp.shared_expert_gate.weight
    ours.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=True)
    return ours


LLAMA = dict(mlp="swiglu", norm="rmsnorm", pos_embedding="rope", attn_qkv="separate", attn_bias=False, mlp_bias=False,
             tie_embeddings=False, vocab_size=61, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)


@pytest.mark.parametrize("impl", ["eager", "batched_mm", "grouped_mm"])
def test_mixtral_logits_match_transformers(impl):
    hf = T.MixtralForCausalLM(T.MixtralConfig(
        vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, rms_norm_eps=1e-5, rope_theta=1e4,
        attn_implementation="eager", experts_implementation=impl)).eval()
    _randomise(hf)
    ours = _ours_from_hf(hf, GPTConfig(**LLAMA, intermediate_size=48, n_experts=4, n_experts_per_token=2))
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
    cfg = GPTConfig(**{**LLAMA, "attn_bias": True}, attn_out_bias=False, intermediate_size=48, n_experts=6,
                    n_experts_per_token=3, moe_intermediate_size=16, moe_norm_topk=False, shared_expert_size=40,
                    shared_expert_gate=True)
    ours = _ours_from_hf(hf, cfg)
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
