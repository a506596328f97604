"""GPT against Hugging Face transformers: same logits for the same weights, same parameter counts.

Tiny randomly initialised GPT2LMHeadModel / LlamaForCausalLM models are converted with
the converter users run (load_hf_gpt) and compared in fp32, over architecture knobs.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

transformers = pytest.importorskip("transformers")

from layerwise.errors import ConfigError, LoadError  # noqa: E402
from layerwise.models import build, list_presets  # noqa: E402
from layerwise.models.convert import (  # noqa: E402
    gpt_config_from_hf,
    gpt_config_to_hf,
    gpt_state_dict_from_hf,
    gpt_state_dict_to_hf,
    load_hf_gpt,
)
from layerwise.models.gpt import GPT, GPTConfig, generate  # noqa: E402

TOL = dict(atol=2e-5, rtol=2e-5)
VOCAB = 61


def hf_config(d: dict):
    d = {k: v for k, v in d.items() if k != "architectures"}
    return transformers.AutoConfig.for_model(d.pop("model_type"), attn_implementation="eager", **d)


def hf_model(d: dict, seed: int = 0):
    """A transformers model with every parameter random (biases and norm scales too, not 0 and 1)."""
    cfg = hf_config(d)
    cls = transformers.GPT2LMHeadModel if cfg.model_type == "gpt2" else transformers.LlamaForCausalLM
    model = cls(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_norm = p.dim() == 1 and ("ln" in name or "norm" in name) and name.endswith("weight")
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + (1.0 if is_norm else 0.0))
    return model


def gpt2_dict(**kw) -> dict:
    base = dict(model_type="gpt2", vocab_size=VOCAB, n_positions=40, n_embd=32, n_layer=2, n_head=4)
    return {**base, "bos_token_id": 0, "eos_token_id": 0, **kw}


def llama_dict(**kw) -> dict:
    base = dict(
        model_type="llama",
        vocab_size=VOCAB,
        max_position_embeddings=40,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        rms_norm_eps=1e-5,
    )
    return {**base, **kw}


def assert_same_logits(hf, ours, seq_len=23):
    idx = torch.randint(0, VOCAB, (2, seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(idx).logits
        got = ours(idx).logits
    assert expected.abs().max() > 1.0  # the comparison is not between near-zero numbers
    torch.testing.assert_close(got, expected, **TOL)


GPT2_CASES = {
    "tied": {},
    "untied": dict(tie_word_embeddings=False),
    "exact-gelu": dict(activation_function="gelu"),
    "n_inner": dict(n_inner=56),
    "one-head": dict(n_head=1),
}


@pytest.mark.parametrize("case", GPT2_CASES)
def test_gpt2_logits_match(case):
    d = gpt2_dict(**GPT2_CASES[case])
    hf = hf_model(d)
    ours = load_hf_gpt(d, hf.state_dict())
    assert ours.config.tie_embeddings == d.get("tie_word_embeddings", True)
    assert_same_logits(hf, ours)


LLAMA3_ROPE = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0)
LLAMA_CASES = {
    "mha-untied": dict(num_key_value_heads=4),
    "gqa-2": dict(num_key_value_heads=2),
    "mqa-tied": dict(num_key_value_heads=1, tie_word_embeddings=True),
    "rope-base-5e5": dict(num_key_value_heads=2, rope_theta=500000.0),
    "rope-base-100": dict(rope_theta=100.0),
    "attention-bias": dict(num_key_value_heads=2, attention_bias=True),
    "mlp-bias": dict(mlp_bias=True),
    "all-biases-tied": dict(attention_bias=True, mlp_bias=True, tie_word_embeddings=True),
    "head-dim-16": dict(head_dim=16, num_key_value_heads=2),
    # Llama 3.1 rescaling. Head size 16 gives wavelengths 2*pi*1e4^(i/8) = 6.3, 20, 63, ...;
    # original context 32 puts them in all three bands (kept < 8 < interpolated < 32 < divided).
    "llama3-rope": dict(
        num_key_value_heads=2,
        head_dim=16,
        rope_theta=10000.0,
        rope_scaling={**LLAMA3_ROPE, "original_max_position_embeddings": 32},
    ),
}


@pytest.mark.parametrize("case", LLAMA_CASES)
def test_llama_logits_match(case):
    d = llama_dict(**LLAMA_CASES[case])
    hf = hf_model(d)
    ours = load_hf_gpt(d, hf.state_dict())
    assert ours.config.kv_heads == d.get("num_key_value_heads", 4)
    assert_same_logits(hf, ours, seq_len=37)


@pytest.mark.parametrize("d", [gpt2_dict(), llama_dict(num_key_value_heads=2, attention_bias=True)])
def test_our_fused_or_separate_layout_loads_either_checkpoint(d):
    hf = hf_model(d)
    cfg = gpt_config_from_hf(d)
    other = cfg.replace(attn_qkv="separate" if cfg.attn_qkv == "fused" else "fused")
    ours = GPT(other).eval()
    ours.load_state_dict(gpt_state_dict_from_hf(hf.state_dict(), other, d["model_type"]))
    assert_same_logits(hf, ours)


@pytest.mark.parametrize(
    "config",
    [
        GPTConfig(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=4, n_embd=32),
        GPTConfig(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=4, n_embd=32, attn_qkv="separate", mlp="gelu"),
        GPTConfig(
            vocab_size=VOCAB,
            block_size=32,
            n_layer=2,
            n_head=4,
            n_kv_head=2,
            n_embd=32,
            intermediate_size=40,
            mlp="swiglu",
            norm="rmsnorm",
            pos_embedding="rope",
            rope_base=500000.0,
            attn_qkv="fused",
            attn_bias=True,
            mlp_bias=False,
            tie_embeddings=True,
        ),
    ],
    ids=["gpt2-style", "gpt2-separate-qkv", "llama-style-fused"],
)
def test_round_trip_ours_to_hf(config):
    torch.manual_seed(0)
    ours = GPT(config).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    d = gpt_config_to_hf(config)
    hf = transformers.AutoModelForCausalLM.from_config(hf_config(d)).eval()
    result = hf.load_state_dict(gpt_state_dict_to_hf(ours.state_dict(), config), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert_same_logits(hf, ours)
    back = gpt_state_dict_from_hf(hf.state_dict(), config, d["model_type"])
    mine = ours.state_dict()
    assert back.keys() == mine.keys()
    assert all(torch.equal(back[k], mine[k]) for k in mine)


@pytest.mark.parametrize("preset", [p.name for p in list_presets("gpt")])
def test_parameter_count_matches_transformers(preset):
    ours = build(preset, device="meta")
    d = gpt_config_to_hf(ours.config)
    with torch.device("meta"):
        hf = transformers.AutoModelForCausalLM.from_config(hf_config(d))
    expected = hf.num_parameters()
    assert sum(p.numel() for p in ours.parameters()) == expected
    reference = next(p for p in list_presets("gpt") if p.name == preset).reference_params
    assert reference is None or reference == expected
    assert gpt_config_from_hf(d) == ours.config  # the config survives the trip through config.json


def test_config_from_old_and_new_style_llama_json():
    old = llama_dict(
        num_key_value_heads=2,
        rope_theta=500000.0,
        rope_scaling={**LLAMA3_ROPE, "original_max_position_embeddings": 16},
    )
    new = llama_dict(
        num_key_value_heads=2,
        rope_parameters={**LLAMA3_ROPE, "rope_theta": 500000.0, "original_max_position_embeddings": 16},
    )
    from_transformers = hf_config(old).to_dict()  # what transformers itself writes
    a, b, c = gpt_config_from_hf(old), gpt_config_from_hf(new), gpt_config_from_hf(from_transformers)
    assert a == b == c
    assert (a.rope_base, a.rope_scaling, a.rope_original_context, a.kv_heads) == (500000.0, "llama3", 16, 2)


def test_original_gpt2_checkpoint_layout_loads():
    """OpenAI's GPT-2 files: no 'transformer.' prefix, attention-mask buffers, no lm_head (tied)."""
    d = gpt2_dict()
    hf = hf_model(d)
    sd = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    for i in range(d["n_layer"]):
        sd[f"h.{i}.attn.bias"] = torch.ones(1, 1, 40, 40).tril()
        sd[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    ours = load_hf_gpt(d, sd)
    assert ours.lm_head.weight is ours.transformer.wte.weight
    assert_same_logits(hf, ours)


def test_load_errors_list_every_bad_key():
    d = llama_dict(num_key_value_heads=2)
    sd = dict(hf_model(d).state_dict())
    del sd["model.layers.1.mlp.up_proj.weight"]
    sd["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(32, 32)
    sd["model.layers.0.extra.weight"] = torch.zeros(3)
    with pytest.raises(LoadError) as err:
        load_hf_gpt(d, sd)
    msg = str(err.value)
    assert "\n" not in msg
    assert "missing 1 key(s): model.layers.1.mlp.up_proj.weight" in msg
    assert "unexpected 1 key(s): model.layers.0.extra.weight" in msg
    assert "model.layers.0.self_attn.k_proj.weight (expected (16, 32), got (32, 32))" in msg

    tied = gpt2_dict()
    sd = dict(hf_model(tied).state_dict())
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1.0
    with pytest.raises(LoadError, match="lm_head.weight differs from transformer.wte.weight"):
        load_hf_gpt(tied, sd)


@pytest.mark.parametrize(
    "d, match",
    [
        ({"model_type": "bert"}, "model_type 'bert' is not supported"),
        (gpt2_dict(activation_function="relu"), "activation_function='relu' is not supported"),
        (llama_dict(hidden_act="gelu"), "hidden_act='gelu' is not supported"),
        (llama_dict(rope_scaling={"rope_type": "yarn", "factor": 2.0}), "rope_type='yarn' is not supported"),
        ({k: v for k, v in llama_dict().items() if k != "hidden_size"}, "missing key 'hidden_size'"),
    ],
)
def test_unsupported_configs_are_refused(d, match):
    with pytest.raises(ConfigError, match=match):
        gpt_config_from_hf(d)


def test_config_without_hf_equivalent_is_refused():
    with pytest.raises(ConfigError, match="no Hugging Face equivalent"):
        gpt_config_to_hf(GPTConfig(vocab_size=VOCAB, n_layer=1, n_head=4, n_embd=32, mlp="swiglu"))


def test_greedy_generation_matches_transformers_generate():
    d = llama_dict(num_key_value_heads=2, tie_word_embeddings=True, bos_token_id=None, eos_token_id=None)
    hf = hf_model(d)
    ours = load_hf_gpt(d, hf.state_dict())
    prompt = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(2))
    expected = hf.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(generate(ours, prompt, 12, greedy=True), expected)
