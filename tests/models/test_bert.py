"""BERT family: counts against transformers, logit parity with transformers on random
weights (through the converter users run), strict loading, roles, validation."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import transformers
from torch import nn

from layerwise.errors import ConfigError, InputShapeError, LoadError
from layerwise.models import build, get_config, get_preset, list_presets
from layerwise.models.bert import Bert, BertConfig, mean_pool
from layerwise.models.bert_convert import (
    bert_config_from_hf,
    bert_config_to_hf,
    bert_state_dict_from_hf,
    bert_state_dict_to_hf,
    load_hf_bert,
)
from layerwise.roles import declared_kind, is_declared_block

HF_CLASSES = {
    "none": transformers.BertModel,
    "sequence_classification": transformers.BertForSequenceClassification,
    "token_classification": transformers.BertForTokenClassification,
    "masked_lm": transformers.BertForMaskedLM,
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied Parameter once


def hf_config_for(cfg: BertConfig, **extra) -> transformers.BertConfig:
    """The transformers config for the same architecture, written out field by field."""
    return transformers.BertConfig(
        vocab_size=cfg.vocab_size,
        max_position_embeddings=cfg.max_position,
        type_vocab_size=cfg.type_vocab_size,
        hidden_size=cfg.hidden,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        intermediate_size=cfg.intermediate,
        num_labels=cfg.num_labels,
        **extra,
    )


# ---------------------------------------------------------------- parameter counts


@pytest.mark.parametrize(
    "name, expected",
    [
        ("bert-base", 109_482_240),
        ("bert-large", 335_141_888),
        ("minilm-l6", 22_713_216),
        ("bert-tiny", 4_385_920),
    ],
)
def test_preset_counts_match_transformers(name, expected):
    model = build(name, device="meta")
    assert get_preset(name).reference_params == expected
    assert n_params(model) == expected
    with torch.device("meta"):
        reference = transformers.BertModel(hf_config_for(model.config))
    assert reference.num_parameters() == expected


@pytest.mark.parametrize(
    "head, overrides",
    [
        ("sequence_classification", dict(num_labels=3)),
        ("token_classification", dict(num_labels=9, pooler=False)),
        ("masked_lm", dict(pooler=False)),
    ],
)
def test_head_counts_match_transformers(head, overrides):
    model = build("bert-base", device="meta", head=head, **overrides)
    with torch.device("meta"):
        reference = HF_CLASSES[head](hf_config_for(model.config))
    # transformers counts the tied decoder weight once, as we do
    assert n_params(model) == reference.num_parameters()


def test_every_bert_preset_builds_on_meta_with_its_reference_count():
    presets = list_presets("bert")
    assert {"bert-base", "bert-large", "minilm-l6", "bert-tiny"} <= {p.name for p in presets}
    for p in presets:
        model = build(p.name, device="meta")
        if p.reference_params is not None:
            assert n_params(model) == p.reference_params, p.name


def test_masked_lm_decoder_is_the_word_embedding():
    model = build("bert-tiny", head="masked_lm", pooler=False)
    assert model.head.decoder.weight is model.embeddings.word.weight
    names = [n for n, _ in model.named_parameters()]
    assert "embeddings.word.weight" in names and "head.decoder.weight" not in names
    # still tied after a dtype change
    model = model.to(torch.float64)
    assert model.head.decoder.weight is model.embeddings.word.weight


# ---------------------------------------------------------------- roles and inputs


def test_roles_and_blocks():
    model = build("bert-tiny", device="meta", n_layer=3, head="sequence_classification", num_labels=4)
    assert declared_kind(model.embeddings) == "embedding"
    assert declared_kind(model.embeddings.norm) == "norm"
    for layer in model.layers:
        assert is_declared_block(layer)
        assert declared_kind(layer.attention) == "attention"
        assert declared_kind(layer.mlp) == "mlp"
        assert declared_kind(layer.attention_norm) == "norm"
        assert declared_kind(layer.mlp_norm) == "norm"
    assert declared_kind(model.pooler) == "mlp"
    assert declared_kind(model.head) == "head"
    assert sum(is_declared_block(m) for m in model.modules()) == 3
    # the attention container holds exactly the four projections: q, k, v and the output dense
    linears = [m for m in model.layers[0].attention.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 4


def test_example_inputs_on_meta_and_outputs():
    model = build("bert-base", device="meta")
    (ids,) = model.example_inputs()
    assert ids.shape == (1, 128) and ids.dtype == torch.long and ids.device.type == "meta"
    hidden, pooled = model(*model.example_inputs(batch_size=2, seq_len=16))
    assert hidden.shape == (2, 16, 768) and pooled.shape == (2, 768)
    short = build("bert-tiny", device="meta", max_position=40)
    assert short.example_inputs(3)[0].shape == (3, 40)


@pytest.mark.parametrize(
    "head, overrides, shape",
    [
        ("sequence_classification", dict(num_labels=3), (2, 3)),
        ("sequence_classification", dict(num_labels=3, classifier_pooling="mean", pooler=False), (2, 3)),
        ("token_classification", dict(num_labels=5, pooler=False), (2, 7, 5)),
        ("masked_lm", dict(pooler=False), (2, 7, 30522)),
    ],
)
def test_head_output_shapes(head, overrides, shape):
    model = build("bert-tiny", device="meta", head=head, **overrides)
    assert model(*model.example_inputs(2, 7)).shape == shape


def test_no_pooler_returns_none():
    model = build("bert-tiny", device="meta", pooler=False)
    hidden, pooled = model(*model.example_inputs(2, 5))
    assert hidden.shape == (2, 5, 128) and pooled is None


def test_input_errors_are_one_line():
    model = build("bert-tiny", device="meta", max_position=16)
    ids = torch.zeros(2, 17, dtype=torch.long, device="meta")
    with pytest.raises(InputShapeError, match="max_position=16") as e:
        model(ids)
    assert "\n" not in str(e.value)
    ids = torch.zeros(2, 8, dtype=torch.long, device="meta")
    with pytest.raises(InputShapeError, match="attention_mask shape"):
        model(ids, torch.ones(2, 9, dtype=torch.long, device="meta"))
    with pytest.raises(InputShapeError, match="integer token ids"):
        model(torch.zeros(2, 8, device="meta"))
    with pytest.raises(InputShapeError, match=r"\(batch, seq_len\)"):
        model(torch.zeros(8, dtype=torch.long, device="meta"))


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(n_head=5), "hidden"),
        (dict(n_layer=0), "n_layer"),
        (dict(vocab_size=-1), "vocab_size"),
        (dict(dropout=1.0), "dropout"),
        (dict(attention_dropout=-0.1), "attention_dropout"),
        (dict(activation="swish"), "activation"),
        (dict(head="qa"), "head"),
        (dict(num_labels=0, head="sequence_classification"), "num_labels"),
        (dict(classifier_pooling="max"), "classifier_pooling"),
        (dict(head="masked_lm"), "pooler"),
        (dict(head="sequence_classification", classifier_pooling="mean"), "pooler"),
        (dict(head="sequence_classification", pooler=False), "pooler"),
        (dict(pad_token_id=30522), "pad_token_id"),
        (dict(pooler=1), "pooler"),
    ],
)
def test_config_validation(overrides, field):
    with pytest.raises(ConfigError, match=rf"^BertConfig\.{field}: expected ") as e:
        get_config("bert-tiny", **overrides)
    assert "\n" not in str(e.value)


def test_config_round_trips_through_dict_and_hf():
    cfg = get_config("bert-tiny", head="token_classification", num_labels=7, pooler=False, activation="gelu_tanh")
    assert BertConfig.from_dict(cfg.to_dict()) == cfg
    assert bert_config_from_hf(bert_config_to_hf(cfg), head="token_classification") == cfg
    # a default transformers BertConfig is BERT-Base
    assert bert_config_from_hf(transformers.BertConfig().to_dict()) == get_config("bert-base")


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(position_embedding_type="relative_key"), "position_embedding_type"),
        (dict(is_decoder=True), "is_decoder"),
        (dict(hidden_act="quick_gelu"), "hidden_act"),
        (dict(model_type="roberta"), "model_type"),
    ],
)
def test_unsupported_hf_configs_are_refused(change, match):
    d = {**transformers.BertConfig().to_dict(), **change}
    with pytest.raises(ConfigError, match=match):
        bert_config_from_hf(d)


# ---------------------------------------------------------------- parity with transformers

TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
)


def make_hf(head: str, attn: str, num_labels: int = 3, **knobs) -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(**{**TINY, **knobs}, num_labels=num_labels)
    model = HF_CLASSES[head](cfg).eval()
    model.set_attn_implementation(attn)
    with torch.no_grad():  # non-default biases and norms, so a mapping mix-up cannot hide
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def batch(vocab: int = 99, type_vocab: int = 2):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab, (3, 11), generator=g)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 2:] = 0
    ids[mask == 0] = 0
    types = torch.randint(0, type_vocab, (3, 11), generator=g)
    return ids, mask, types


def assert_same(hf_model, ours, head, ids, mask, types):
    with torch.no_grad():
        ref = hf_model(input_ids=ids, attention_mask=mask, token_type_ids=types)
        out = ours(ids, mask, types)
    tol = dict(atol=1e-5, rtol=1e-5)
    if head == "none":
        torch.testing.assert_close(out[0], ref.last_hidden_state, **tol)
        torch.testing.assert_close(out[1], ref.pooler_output, **tol)
    else:
        torch.testing.assert_close(out, ref.logits, **tol)


@pytest.mark.parametrize("head", list(HF_CLASSES))
@pytest.mark.parametrize(
    "attn, knobs",
    [
        ("sdpa", dict(num_hidden_layers=2, hidden_act="gelu")),
        ("eager", dict(num_hidden_layers=3, hidden_act="gelu_new", type_vocab_size=3)),
        ("eager", dict(num_hidden_layers=1, hidden_act="relu", layer_norm_eps=1e-5)),
    ],
)
def test_logits_match_transformers(head, attn, knobs):
    hf_model = make_hf(head, attn, **knobs)
    ours = load_hf_bert(hf_model.config.to_dict(), hf_model.state_dict(), head=head).eval()
    ids, mask, types = batch(type_vocab=knobs.get("type_vocab_size", 2))
    assert_same(hf_model, ours, head, ids, mask, types)  # with padding
    assert_same(hf_model, ours, head, ids[:1], None, None)  # no mask, default token types
    assert n_params(ours) == hf_model.num_parameters()


def test_mean_pooled_classifier_matches_transformers_hidden_states():
    hf_model = make_hf("none", "sdpa")
    ours = load_hf_bert(
        hf_model.config.to_dict(),
        hf_model.state_dict(),
        head="sequence_classification",
        classifier_pooling="mean",
        init_head=True,
        discard=("pooler.",),
    ).eval()
    ids, mask, types = batch()
    with torch.no_grad():
        hidden = hf_model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        m = mask[..., None].float()
        expected = ours.head.classifier((hidden * m).sum(1) / m.sum(1))
        torch.testing.assert_close(ours(ids, mask, types), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mean_pool(hidden, mask), (hidden * m).sum(1) / m.sum(1))


@pytest.mark.parametrize("head", list(HF_CLASSES))
def test_our_weights_load_into_transformers(head):
    overrides = dict(num_labels=4) if "classification" in head else {}
    pooler = head in ("none", "sequence_classification")
    torch.manual_seed(2)
    ours = build("bert-tiny", vocab_size=99, max_position=64, head=head, pooler=pooler, **overrides).eval()
    hf_model = HF_CLASSES[head](transformers.BertConfig(**bert_config_to_hf(ours.config))).eval()
    result = hf_model.load_state_dict(bert_state_dict_to_hf(ours.state_dict(), ours.config), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert_same(hf_model, ours, head, *batch())


# ---------------------------------------------------------------- strict loading


@pytest.fixture(scope="module")
def hf_bare():
    model = make_hf("none", "sdpa")
    return model.config.to_dict(), model.state_dict()


def test_missing_unexpected_and_misshaped_keys_are_listed(hf_bare):
    config, sd = hf_bare
    sd = dict(sd)
    del sd["encoder.layer.1.attention.self.key.bias"]
    sd["encoder.layer.0.mystery.weight"] = torch.zeros(3)
    sd["pooler.dense.weight"] = sd["pooler.dense.weight"][:, :16]
    with pytest.raises(LoadError) as e:
        load_hf_bert(config, sd, source="ckpt.safetensors")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("ckpt.safetensors: ")
    assert "missing 1: encoder.layer.1.attention.self.key.bias" in msg
    assert "unexpected 1: encoder.layer.0.mystery.weight" in msg
    assert "wrong shape 1: pooler.dense.weight (32, 16) != (32, 32)" in msg


def test_wrong_architecture_is_refused(hf_bare):
    config, sd = hf_bare
    with pytest.raises(LoadError, match=r"missing \d+: encoder\.layer\.2\."):
        load_hf_bert({**config, "num_hidden_layers": 3}, sd)
    with pytest.raises(LoadError, match="wrong shape"):
        load_hf_bert({**config, "vocab_size": 100}, sd)


def test_fresh_head_only_when_asked(hf_bare):
    config, sd = hf_bare
    with pytest.raises(LoadError, match="missing 2: classifier.weight, classifier.bias.*init_head=True"):
        load_hf_bert(config, sd, head="sequence_classification", num_labels=5)
    model = load_hf_bert(config, sd, head="sequence_classification", num_labels=5, init_head=True)
    torch.testing.assert_close(model.embeddings.word.weight, sd["embeddings.word_embeddings.weight"])
    torch.testing.assert_close(model.pooler.dense.weight, sd["pooler.dense.weight"])
    # a partly present head is never accepted
    partial = {**sd, "classifier.weight": torch.zeros(5, 32)}
    with pytest.raises(LoadError, match="missing 1: classifier.bias"):
        load_hf_bert(config, partial, head="sequence_classification", num_labels=5, init_head=True)


def test_pretraining_checkpoint_needs_explicit_discard():
    torch.manual_seed(0)
    pre = transformers.BertForPreTraining(transformers.BertConfig(**TINY)).eval()
    config, sd = pre.config.to_dict(), pre.state_dict()
    with pytest.raises(LoadError, match=r"unexpected 9: cls\.predictions\.bias, .*discard="):
        load_hf_bert(config, sd)
    bare = load_hf_bert(config, sd, discard=("cls.",)).eval()
    mlm = load_hf_bert(config, sd, head="masked_lm", discard=("cls.seq_relationship.", "pooler.")).eval()
    ids, mask, types = batch()
    with torch.no_grad():
        ref = pre(input_ids=ids, attention_mask=mask, token_type_ids=types)
        torch.testing.assert_close(mlm(ids, mask, types), ref.prediction_logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            bare(ids, mask, types)[1], pre.bert(ids, mask, types).pooler_output, atol=1e-5, rtol=1e-5
        )


def test_untied_decoder_is_refused():
    hf_model = make_hf("masked_lm", "sdpa")
    sd = {k: v.clone() for k, v in hf_model.state_dict().items()}
    sd["cls.predictions.decoder.weight"] += 1.0
    with pytest.raises(LoadError, match="not tied"):
        load_hf_bert(hf_model.config.to_dict(), sd, head="masked_lm")


def test_prefixed_and_legacy_names_are_accepted(hf_bare):
    config, sd = hf_bare
    legacy = {}
    for k, v in sd.items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        legacy["bert." + k] = v
    legacy["bert.embeddings.position_ids"] = torch.arange(64)[None]  # stored by older files
    converted = bert_state_dict_from_hf(legacy, bert_config_from_hf(config))
    plain = bert_state_dict_from_hf(sd, bert_config_from_hf(config))
    assert converted.keys() == plain.keys()
    for k in plain:
        assert converted[k] is plain[k]
    dup = {**sd, "bert.pooler.dense.bias": sd["pooler.dense.bias"]}
    with pytest.raises(LoadError, match="given twice"):
        bert_state_dict_from_hf(dup, bert_config_from_hf(config))


def test_failed_load_raises_before_building(hf_bare, monkeypatch):
    # The whole checkpoint is checked before a model exists, so nothing is half-loaded.
    import layerwise.models.registry as registry

    config, sd = hf_bare
    built = []
    real_build = registry.build
    monkeypatch.setattr(registry, "build", lambda *a, **k: built.append(1) or real_build(*a, **k))
    bad = {k: v for k, v in sd.items() if k != "embeddings.LayerNorm.bias"}
    with pytest.raises(LoadError):
        load_hf_bert(config, bad)
    assert built == []
    assert isinstance(load_hf_bert(config, sd), Bert) and built == [1]


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padded_batch_skips_padding_with_the_same_logits_and_gradients(pooling):
    # A padded batch runs on its real tokens only (Bert._pooled_unpadded). Logits and every
    # gradient must be those of the padded computation: checked against our own padded
    # path and, for CLS pooling, against transformers' gradients (dropout off, train mode).
    hf_model = make_hf("sequence_classification", "sdpa")
    ours = load_hf_bert(hf_model.config.to_dict(), hf_model.state_dict(), head="sequence_classification",
                        classifier_pooling=pooling, dropout=0.0, attention_dropout=0.0,
                        discard=("pooler.",) if pooling == "mean" else ()).train()
    ids, mask, types = batch()
    assert ours._tokens(mask) is not None and ours._tokens(torch.ones_like(mask)) is None
    out = ours(ids, mask, types)
    out.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in ours.named_parameters()}
    ours.zero_grad()
    hidden = ours.encode(ids, mask, types)  # every position, padding included
    padded = ours.head(ours.pooler(hidden) if pooling == "cls" else mean_pool(hidden, mask))
    padded.square().sum().backward()
    torch.testing.assert_close(out, padded, atol=1e-6, rtol=1e-5)
    scale = max(g.abs().max().item() for g in grads.values())
    for n, p in ours.named_parameters():  # key biases get ~0 gradient (softmax is shift-invariant)
        torch.testing.assert_close(grads[n], p.grad, atol=1e-6 * scale, rtol=1e-4, msg=n)
    if pooling == "cls":
        hf_model.config.hidden_dropout_prob = hf_model.config.attention_probs_dropout_prob = 0.0
        for m in hf_model.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
            if hasattr(m, "dropout_prob"):
                m.dropout_prob = 0.0
        hf_model.train()
        hf_model.zero_grad()
        ref = hf_model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        ref.square().sum().backward()
        hf_grads = bert_state_dict_to_hf(grads, ours.config)
        for name, p in hf_model.named_parameters():
            torch.testing.assert_close(hf_grads[name], p.grad, atol=1e-5 * scale, rtol=1e-4, msg=name)


def test_classifier_with_a_mask_runs_on_meta():
    # the padding check must not read values: the analysis builds models on meta
    m = build("minilm-l6", device="meta", head="sequence_classification", num_labels=2)
    ids = torch.zeros(2, 8, dtype=torch.long, device="meta")
    for mask in (torch.ones_like(ids), torch.zeros_like(ids)):
        assert m(ids, attention_mask=mask).shape == (2, 2)
