"""GPT family: validation, roles, attention and RoPE against their definitions, KV cache, generation."""

import math

import pytest
import torch
from torch import nn

from layerwise.errors import ConfigError, InputShapeError
from layerwise.models import build, get_config, list_presets
from layerwise.models.convert import gpt_state_dict_from_hf, gpt_state_dict_to_hf
from layerwise.models.gpt import GPT, GPTConfig, apply_rope, generate, rope_cos_sin
from layerwise.roles import declared_kind, is_declared_block

TINY = dict(vocab_size=37, block_size=24, n_layer=2, n_head=4, n_embd=32)
LLAMA = dict(mlp="swiglu", norm="rmsnorm", pos_embedding="rope", attn_qkv="separate", attn_bias=False, mlp_bias=False)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def sharpened(config: GPTConfig, seed: int = 0) -> GPT:
    """A random model whose next-token distributions are far from uniform."""
    torch.manual_seed(seed)
    model = GPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0 if p.dim() > 1 else 1.0)
    return model


@pytest.mark.parametrize(
    "fields, field",
    [
        (dict(n_embd=30, n_head=4), "n_embd"),
        (dict(n_kv_head=3), "n_kv_head"),
        (dict(n_kv_head=0), "n_kv_head"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(n_layer=0), "n_layer"),
        (dict(mlp="relu"), "mlp"),
        (dict(norm="batchnorm"), "norm"),
        (dict(pos_embedding="alibi"), "pos_embedding"),
        (dict(attn_qkv="packed"), "attn_qkv"),
        (dict(dropout=1.0), "dropout"),
        (dict(norm_eps=0.0), "norm_eps"),
        (dict(pos_embedding="rope", head_dim=7), "head_dim"),
        (dict(rope_scaling="yarn"), "rope_scaling"),
        (dict(rope_scaling="llama3", rope_high_freq_factor=0.5), "rope_high_freq_factor"),
    ],
)
def test_config_validation_names_field(fields, field):
    with pytest.raises(ConfigError, match=rf"^GPTConfig\.{field}: expected ") as err:
        GPTConfig(**{**TINY, **fields})
    assert "\n" not in str(err.value)


def test_derived_sizes_and_serialisation(tmp_path):
    cfg = GPTConfig(**TINY, n_kv_head=2, **LLAMA)
    assert (cfg.kv_heads, cfg.head_size, cfg.ffn_size) == (2, 8, 128)
    assert GPTConfig(**TINY, head_dim=16).head_size == 16
    for suffix in (".json", ".toml"):
        path = cfg.save(tmp_path / f"gpt{suffix}")
        assert get_config(str(path)) == cfg
    # n_kv_head=None follows n_head through overrides instead of freezing a number
    assert GPTConfig(**TINY).replace(n_head=8).kv_heads == 8


def test_preset_counts_by_formula():
    # GPT-2 small by the per-layer formulas: embeddings V*d + T*d, per layer
    # 2 LayerNorms 4d, qkv 3d^2+3d, out d^2+d, MLP 8d^2+5d; final LayerNorm 2d; tied head 0.
    V, T, d, L = 50257, 1024, 768, 12
    per_layer = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (8 * d * d + 5 * d)
    assert n_params(build("gpt2", device="meta")) == V * d + T * d + L * per_layer + 2 * d == 124_439_808
    # Llama 2 7B: no biases, RMSNorm d, q,k,v,o 4d^2, SwiGLU 3*d*f, untied head V*d.
    V, d, f, L = 32000, 4096, 11008, 32
    assert n_params(build("llama-2-7b", device="meta")) == 2 * V * d + L * (2 * d + 4 * d * d + 3 * d * f) + d
    for preset in list_presets("gpt"):
        if preset.reference_params is not None:
            assert n_params(build(preset.name, device="meta")) == preset.reference_params, preset.name


@pytest.mark.parametrize("name", ["gpt-nano", "llama-nano", "smollm2-135m"])
def test_roles_blocks_and_tied_head(name):
    model = build(name, device="meta")
    cfg = model.config
    kinds = {n: declared_kind(m) for n, m in model.named_modules() if declared_kind(m)}
    expected = {"transformer.wte": "embedding", "lm_head": "head"}
    if cfg.pos_embedding == "learned":
        expected["transformer.wpe"] = "embedding"
    for i in range(cfg.n_layer):
        expected[f"transformer.h.{i}.attn"] = "attention"
        expected[f"transformer.h.{i}.mlp"] = "mlp"
    assert kinds == expected
    blocks = [n for n, m in model.named_modules() if is_declared_block(m)]
    assert blocks == [f"transformer.h.{i}" for i in range(cfg.n_layer)]
    norm_cls = nn.RMSNorm if cfg.norm == "rmsnorm" else nn.LayerNorm
    assert sum(isinstance(m, norm_cls) for m in model.modules()) == 2 * cfg.n_layer + 1
    assert (model.lm_head.weight is model.transformer.wte.weight) == cfg.tie_embeddings


def test_tie_survives_materialising_from_meta():
    model = build("gpt-nano", device="meta").to_empty(device="cpu")
    assert model.lm_head.weight is model.transformer.wte.weight
    assert n_params(model) == n_params(build("gpt-nano", device="meta"))


def test_example_inputs_and_forward_on_meta():
    model = build("llama-3-8b", device="meta")
    (idx,) = model.example_inputs(batch_size=2)
    assert idx.shape == (2, 128) and idx.dtype == torch.long and idx.is_meta
    logits, loss = model(idx)
    assert logits.shape == (2, 128, 128256) and loss is None
    (idx,) = build("gpt-nano", device="meta").example_inputs(seq_len=5)
    assert idx.shape == (1, 5)
    assert build("gpt-nano", device="meta").example_inputs()[0].shape == (1, 64)  # block_size < 128


def naive_attention(x, attn, cfg, rope):
    """Causal softmax attention head by head, from the definition (Vaswani et al. 2017)."""
    B, T, _ = x.shape
    hs, nh, nkv = cfg.head_size, cfg.n_head, cfg.kv_heads
    q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
    outs = []
    for h in range(nh):
        g = h // (nh // nkv)  # the key/value head this query head shares
        qh, kh, vh = q[..., h * hs : (h + 1) * hs], k[..., g * hs : (g + 1) * hs], v[..., g * hs : (g + 1) * hs]
        if rope is not None:
            qh, kh = apply_rope(qh, *rope), apply_rope(kh, *rope)
        scores = qh @ kh.transpose(-1, -2) / math.sqrt(hs)
        scores = scores.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
        outs.append(scores.softmax(-1) @ vh)
    return attn.c_proj(torch.cat(outs, dim=-1))


@pytest.mark.parametrize("kv", [4, 2, 1])
@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_attention_matches_definition(kv, pos):
    cfg = GPTConfig(**{**TINY, "n_kv_head": kv, "pos_embedding": pos, "attn_qkv": "separate"})
    torch.manual_seed(0)
    attn = GPT(cfg).transformer.h[0].attn
    x = torch.randn(2, 9, cfg.n_embd)
    rope = rope_cos_sin(cfg, 0, 9, x.device, x.dtype) if pos == "rope" else None
    torch.testing.assert_close(attn(x, rope, None, 0), naive_attention(x, attn, cfg, rope), atol=1e-5, rtol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    cfg = GPTConfig(**TINY, **LLAMA)
    torch.manual_seed(0)
    q, k = torch.randn(cfg.head_size), torch.randn(cfg.head_size)
    cos, sin = rope_cos_sin(cfg, 0, 20, torch.device("cpu"), torch.float32)

    def score(m, n):
        return apply_rope(q, cos[m], sin[m]) @ apply_rope(k, cos[n], sin[n])

    assert torch.allclose(score(3, 1), score(15, 13), atol=1e-5)
    assert torch.allclose(score(0, 0), q @ k, atol=1e-5)  # position 0 is the identity rotation
    assert not torch.allclose(score(3, 1), score(3, 2), atol=1e-3)


@pytest.mark.parametrize("style", [{}, {**LLAMA, "n_kv_head": 2}, {**LLAMA, "attn_qkv": "fused", "n_kv_head": 1}])
def test_kv_cache_matches_full_forward(style):
    model = sharpened(GPTConfig(**TINY, **style))
    idx = torch.randint(0, TINY["vocab_size"], (2, 20))
    full = model(idx).logits
    cache = model.make_cache(batch_size=2)
    parts = [model(idx[:, :6], cache=cache).logits]  # prefill
    parts += [model(idx[:, t : t + 1], cache=cache).logits for t in range(6, 10)]  # one token at a time
    parts.append(model(idx[:, 10:20], cache=cache).logits)  # a chunk after cached positions
    assert cache.pos == 20
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-4, rtol=1e-4)


def test_fused_and_separate_qkv_compute_the_same_function():
    separate = sharpened(GPTConfig(**TINY, **{**LLAMA, "n_kv_head": 2}))
    fused_cfg = separate.config.replace(attn_qkv="fused")
    fused = GPT(fused_cfg).eval()
    hf = gpt_state_dict_to_hf(separate.state_dict(), separate.config)
    fused.load_state_dict(gpt_state_dict_from_hf(hf, fused_cfg, "llama"))
    assert n_params(fused) == n_params(separate)
    idx = torch.randint(0, TINY["vocab_size"], (2, 12))
    torch.testing.assert_close(fused(idx).logits, separate(idx).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("style", [{}, LLAMA])
def test_loss_is_next_token_cross_entropy_and_trains(style):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY, **style))
    idx = torch.randint(0, TINY["vocab_size"], (4, 16))
    targets = idx.roll(-1, dims=1)
    targets[:, -1] = -100  # ignored position
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(TINY["vocab_size"])) < 0.3  # near uniform at initialisation
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        _, loss = model(idx, targets)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5  # memorised: far below ln(37) = 3.6


def test_input_errors():
    model = build("gpt-nano")
    with pytest.raises(InputShapeError, match="exceed block_size 64"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(InputShapeError, match="integer token ids"):
        model(torch.zeros(1, 8))
    with pytest.raises(InputShapeError, match="targets shape"):
        model(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 7, dtype=torch.long))
    cache = model.make_cache(1, max_len=4)
    with pytest.raises(InputShapeError, match="max_len 4"):
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache)


# ---------------------------------------------------------------- generation


@pytest.mark.parametrize("style", [{}, {**LLAMA, "n_kv_head": 1}])
@pytest.mark.parametrize("prompt_len, new", [(5, 12), (20, 10), (30, 3)])  # the last two outgrow block_size 24
def test_cached_greedy_generation_equals_uncached(style, prompt_len, new):
    model = sharpened(GPTConfig(**TINY, **style))
    idx = torch.randint(0, TINY["vocab_size"], (3, prompt_len))
    cached = generate(model, idx, new, greedy=True)
    uncached = generate(model, idx, new, greedy=True, use_cache=False)
    assert cached.shape == (3, prompt_len + new)
    assert torch.equal(cached[:, :prompt_len], idx)
    assert torch.equal(cached, uncached)
    # greedy by hand: the argmax of the full forward at every step
    seq = idx
    for _ in range(new):
        seq = torch.cat((seq, model(seq[:, -TINY["block_size"] :]).logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(cached, seq)


def allowed_top_p(probs: torch.Tensor, p: float) -> set[int]:
    """The smallest set of most likely tokens whose mass reaches p."""
    order = probs.argsort(descending=True).tolist()
    chosen, mass = set(), 0.0
    for t in order:
        chosen.add(t)
        mass += probs[t].item()
        if mass >= p:
            break
    return chosen


def test_top_k_and_top_p_only_pick_allowed_tokens():
    model = sharpened(GPTConfig(**TINY, **LLAMA))
    prompt = torch.randint(0, TINY["vocab_size"], (1, 6))
    logits = model(prompt).logits[0, -1]
    batch = prompt.expand(400, -1)
    gen = torch.Generator().manual_seed(0)
    top3 = set(logits.topk(3).indices.tolist())
    picked = set(generate(model, batch, 1, top_k=3, generator=gen)[:, -1].tolist())
    assert picked <= top3 and len(picked) > 1
    for temperature, p in ((1.0, 0.5), (2.0, 0.8)):
        allowed = allowed_top_p((logits / temperature).softmax(-1), p)
        assert len(allowed) < TINY["vocab_size"]
        picked = set(generate(model, batch, 1, temperature=temperature, top_p=p, generator=gen)[:, -1].tolist())
        assert picked <= allowed
    greedy = generate(model, prompt, 4, greedy=True)
    assert torch.equal(generate(model, prompt, 4, top_k=1, generator=gen), greedy)
    a = generate(model, batch[:8], 5, generator=torch.Generator().manual_seed(1))
    b = generate(model, batch[:8], 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_stop_tokens_stop_generation():
    model = sharpened(GPTConfig(**TINY))
    prompt = torch.randint(0, TINY["vocab_size"], (2, 4))
    free = generate(model, prompt, 15, greedy=True)
    stop = free[0, 4 + 2].item()  # the third new token of row 0
    first = [next((j for j in range(4, 19) if free[r, j] == stop), None) for r in range(2)]
    out = generate(model, prompt, 15, greedy=True, stop_tokens=[stop])
    assert out.shape[1] == 1 + max(f if f is not None else 18 for f in first)
    assert torch.equal(out[0, : first[0] + 1], free[0, : first[0] + 1])
    assert (out[0, first[0] :] == stop).all()  # a stopped row repeats its stop token
    single = generate(model, prompt[:1], 15, greedy=True, stop_tokens=[stop])
    assert torch.equal(single[0], free[0, : first[0] + 1])


def test_generate_restores_mode_and_checks_arguments():
    model = build("gpt-nano").train()
    idx = torch.zeros(1, 3, dtype=torch.long)
    generate(model, idx, 2)
    assert model.training
    for kwargs, field in (
        (dict(temperature=0.0), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_p=1.5), "top_p"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
    ):
        with pytest.raises(ConfigError, match=f"^generate: {field}: expected"):
            generate(model, idx, **{"max_new_tokens": 2, **kwargs})
    assert generate(model, idx, 0).shape == (1, 3)
    assert generate(model, idx, 3, greedy=True, temperature=0.0).shape == (1, 6)  # greedy ignores temperature


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_classifier_drops_trailing_padding_with_the_same_logits_and_gradients(style):
    # Columns after every row's last real token are dropped before the blocks; with causal
    # attention and last-token pooling the logits and gradients must equal the full width's.
    from layerwise.models.gpt import _trim_padding

    over = {} if style == "gpt2" else {"pos_embedding": "rope", "norm": "rmsnorm", "mlp": "swiglu"}
    torch.manual_seed(0)
    m = build("gpt-nano", head="classification", num_labels=3, **over)
    B, T = 4, 24
    ids = torch.randint(0, m.config.vocab_size, (B, T))
    lens = torch.tensor([5, 11, 3, 9])
    mask = (torch.arange(T)[None] < lens[:, None]).long()
    t, k = _trim_padding(ids, mask)
    assert t.shape == (B, 11) and k.shape == (B, 11)
    y = torch.tensor([0, 2, 1, 2])
    out = m(ids, y, attention_mask=mask)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    m.zero_grad()
    full = m.run_stages((m._embed(ids), mask), 1, len(m.stage_names()))  # stage 0 done by hand: no trim
    # the untrimmed reference: run every block at full width
    x = m._embed(ids)
    for i, block in enumerate(m.transformer.h):
        x = block(x, m._rope(0, T, x), None, i)
    last = lens - 1
    ref = m.score(m.transformer.ln_f(x[torch.arange(B), last]))
    torch.testing.assert_close(out.logits, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full[0], ref, atol=1e-5, rtol=1e-5)
    torch.nn.functional.cross_entropy(ref, y).backward()
    for n, p in m.named_parameters():
        if n in grads:
            torch.testing.assert_close(grads[n], p.grad, atol=1e-6, rtol=1e-4, msg=n)


def _padded_reference(m, ids, mask):
    """Every block at full width, the last real token pooled (the computation before unpadding)."""
    x = m._embed(ids)
    for i, block in enumerate(m.transformer.h):
        x = block(x, m._rope(0, ids.shape[1], x), None, i)
    last = (mask.sum(dim=1) - 1).clamp(min=0)
    return m.score(m.transformer.ln_f(x[torch.arange(ids.shape[0]), last]))


@pytest.mark.parametrize("over", [{}, {"pos_embedding": "rope", "norm": "rmsnorm", "mlp": "swiglu", "n_head": 4, "n_kv_head": 2,
                                       "attn_qkv": "separate", "attn_bias": False}])
def test_classifier_unpadded_stages_split_anywhere(over):
    # A right-padded batch runs on its real tokens; any split of the stages (what the
    # frozen-prefix cache does) gives the logits of one call and of the padded computation.
    from layerwise.models.gpt import _right_padded_tokens

    torch.manual_seed(1)
    m = build("gpt-nano", head="classification", num_labels=3, **over).eval()
    ids = torch.randint(0, m.config.vocab_size, (3, 16))
    mask = (torch.arange(16)[None] < torch.tensor([[16], [7], [1]])).long()
    assert _right_padded_tokens(mask) is not None
    ref = _padded_reference(m, ids, mask)
    n = len(m.stage_names())
    with torch.no_grad():
        whole = m(ids, attention_mask=mask).logits
        torch.testing.assert_close(whole, ref, atol=1e-5, rtol=1e-5)
        for k in range(1, n):
            mid = m.run_stages(m.initial_state(ids, mask), 0, k)
            torch.testing.assert_close(m.run_stages(mid, k, n)[0], ref, atol=1e-5, rtol=1e-5, msg=f"split at {k}")


def test_classifier_left_padding_and_empty_rows_run_padded():
    from layerwise.models.gpt import _right_padded_tokens

    torch.manual_seed(2)
    m = build("gpt-nano", head="classification", num_labels=2).eval()
    ids = torch.randint(0, m.config.vocab_size, (2, 8))
    left = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8])
    empty = torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0], [0] * 8])
    for mask in (left, empty):
        assert _right_padded_tokens(mask) is None
    with torch.no_grad():  # left padding: the padded computation, pads attended as before
        torch.testing.assert_close(m(ids, attention_mask=left).logits, _padded_reference(m, ids, left))
