"""Attention probabilities in inspection mode equal transformers' ``output_attentions=True``
(eager attention) for the same random weights; the default forward stays on SDPA."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

transformers = pytest.importorskip("transformers")

from layerwise.errors import ConfigError  # noqa: E402
from layerwise.models import build  # noqa: E402
from layerwise.models.bert_convert import load_hf_bert  # noqa: E402
from layerwise.models.convert import load_hf_gpt  # noqa: E402
from layerwise.models.ops import attention_modules, record_attention  # noqa: E402

VOCAB = 61


def _randomise(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_scale = p.dim() == 1 and name.endswith("weight") and ("ln" in name or "norm" in name.lower())
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if is_scale else 0.0))
    return model


def _check(ours: list[torch.Tensor], theirs: tuple[torch.Tensor, ...], mask: torch.Tensor | None = None):
    assert len(ours) == len(theirs) >= 2
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        assert float((a - b).abs().max()) < 1e-5
        rows = a.sum(-1)  # every query's row of probabilities sums to 1
        torch.testing.assert_close(rows, torch.ones_like(rows), atol=1e-5, rtol=0)
        assert float(a.max()) > 0.2  # not near-uniform: a mix-up of heads or positions would show
        if mask is not None:  # padded keys get no attention
            assert float(a.masked_select(~mask.bool()[:, None, None, :].expand_as(a)).abs().max()) < 1e-6


@pytest.mark.parametrize("model_type, extra", [
    ("gpt2", dict(n_positions=40, n_embd=32, n_layer=2, n_head=4)),
    ("llama", dict(max_position_embeddings=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5)),
])
def test_gpt_attention_maps_equal_transformers(model_type, extra):
    cfg = transformers.AutoConfig.for_model(model_type, vocab_size=VOCAB, attn_implementation="eager", **extra)
    cls = transformers.GPT2LMHeadModel if model_type == "gpt2" else transformers.LlamaForCausalLM
    hf = _randomise(cls(cfg).eval())
    ours = load_hf_gpt(hf.config.to_dict(), hf.state_dict())
    idx = torch.randint(0, VOCAB, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(idx, output_attentions=True)
        with record_attention(ours) as maps:
            out = ours(idx)
    torch.testing.assert_close(out.logits, ref.logits, atol=2e-5, rtol=2e-5)
    got = [calls[0] for calls in maps.values()]
    _check(got, ref.attentions)
    assert float(got[0].triu(1).abs().max()) == 0.0  # causal: nothing above the diagonal


def test_bert_attention_maps_equal_transformers():
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64)
    hf = transformers.BertModel(cfg).eval()
    hf.set_attn_implementation("eager")  # transformers returns the weights from its eager path only
    _randomise(hf)
    ours = load_hf_bert(hf.config.to_dict(), hf.state_dict()).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 99, (3, 11), generator=g)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, output_attentions=True)
        with record_attention(ours) as maps:
            hidden, _ = ours(ids, mask)
    torch.testing.assert_close(hidden, ref.last_hidden_state, atol=1e-5, rtol=1e-5)
    _check([calls[0] for calls in maps.values()], ref.attentions, mask)


def test_default_forward_stays_on_sdpa_and_modules_are_restored(monkeypatch):
    model = build("gpt-nano").eval()
    idx = torch.randint(0, 256, (1, 9))
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        before = model(idx).logits
        assert len(calls) == 3  # one fused call per layer
        with record_attention(model) as maps:
            during = model(idx).logits
        assert len(calls) == 3  # the explicit path does not call SDPA
        after = model(idx).logits
    assert len(calls) == 6
    torch.testing.assert_close(during, before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    assert [len(v) for v in maps.values()] == [1, 1, 1]
    assert all(not m.keep_attention and m.attention_probs is None for _, m in attention_modules(model))


def test_recording_survives_an_error_inside_the_block():
    model = build("bert-tiny", vocab_size=50)
    with pytest.raises(RuntimeError):
        with record_attention(model):
            raise RuntimeError("boom")
    assert not any(m.keep_attention for _, m in attention_modules(model))


def test_a_cnn_has_no_attention_layers():
    with pytest.raises(ConfigError, match="no attention layers in this model"):
        record_attention(build("seed-cnn-mnist"))
