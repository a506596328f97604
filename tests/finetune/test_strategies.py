"""What each strategy trains, layer by layer, and its bad-input errors."""

import pytest
import torch

from layerwise.analysis import analyze
from layerwise.errors import ConfigError, LayerwiseError, UnknownNameError
from layerwise.finetune import apply_strategy, parse_strategy
from layerwise.finetune.checkpoint import base_digest, finetuned_names, head_names, merged_state_dict
from layerwise.models import build

ALL = ["full", "head", "top-1", "top-2", "bitfit", "lora:4", "adapter:16", "lora:4+norms+head"]


def bert_cls(device="cpu"):
    torch.manual_seed(0)
    return build("bert-tiny", device=device, head="sequence_classification", num_labels=2)


@pytest.mark.parametrize("spec", ALL)
def test_records_agree_with_the_analysis_and_share_one_denominator(spec):
    base = bert_cls("meta")
    base_total = sum(p.numel() for p in base.parameters())
    m = bert_cls("meta")
    rec = apply_strategy(m, spec)
    a = analyze(m)
    assert rec.total_base == base_total
    assert rec.trainable == a.totals.trainable
    assert rec.total == a.totals.params == base_total + rec.added
    assert rec.trainable_share == rec.trainable / base_total
    assert sum(k.trainable for k in a.by_kind) == rec.trainable


@pytest.mark.parametrize("spec", ["lora:4", "adapter:16", "norms", "train:norm+freeze:embedding"])
def test_a_new_head_trains_with_every_strategy_and_the_record_says_so(spec):
    plain, fresh = bert_cls("meta"), bert_cls("meta")
    without = apply_strategy(plain, spec)
    rec = apply_strategy(fresh, spec, new_head=True)
    head = sum(p.numel() for p in fresh.head.parameters())
    assert analyze(plain).kind("head").trainable == 0
    a = analyze(fresh)
    assert a.kind("head").trainable == a.kind("head").params == head > 0
    assert rec.trainable == without.trainable + head == a.totals.trainable
    assert any(s.startswith(f"the new head trains too (head: {head:,} parameters)") for s in rec.steps)


def test_a_new_head_is_frozen_only_when_the_spec_says_so():
    m = bert_cls("meta")
    rec = apply_strategy(m, "lora:4+freeze:head", new_head=True)
    assert analyze(m).kind("head").trainable == 0 and rec.trainable == rec.added
    head_rec = apply_strategy(bert_cls("meta"), "head", new_head=True)  # trains it already: no extra step
    assert not any("new head" in s for s in head_rec.steps)


def test_what_each_strategy_trains():
    kinds = {}
    for spec in ALL:
        m = bert_cls("meta")
        apply_strategy(m, spec)
        kinds[spec] = {k.kind for k in analyze(m, trace_forward=False).by_kind if k.trainable}
    assert kinds["head"] == {"head"}
    assert kinds["lora:4"] == {"adapter"}
    assert kinds["adapter:16"] == {"adapter"}
    assert kinds["lora:4+norms+head"] == {"adapter", "norm", "head"}
    assert "embedding" not in kinds["top-2"] and {"attention", "mlp", "norm", "head"} <= kinds["top-2"]
    assert "embedding" in kinds["full"]


def test_top_k_trains_exactly_the_last_blocks():
    m = build("gpt-nano", device="meta")
    rec = apply_strategy(m, "top-1")
    a = analyze(m)
    n = len(rec.trained_blocks)
    assert n == 1
    blocks = [r for r in a.rows if r.is_block]
    assert [r.status for r in blocks] == ["frozen"] * (len(blocks) - 1) + ["trainable"]
    assert a.row("transformer.ln_f").status == "trainable"  # the final norm feeds the head
    # the tied head: training it trains the embedding; the record says so
    assert any("tied" in note for note in rec.notes)


def test_top_k_on_albert_trains_the_one_shared_layer_and_the_head_and_says_so():
    """ALBERT applies one layer 12 times: those are its 12 blocks (the data flow says so; the
    module tree holds one layer), so top-2 trains that layer and the classifier."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.AlbertConfig(hidden_size=32, num_hidden_layers=12, num_attention_heads=4, intermediate_size=64,
                                    embedding_size=16, vocab_size=100, num_labels=3)
    m = transformers.AlbertForSequenceClassification(cfg)
    rec = apply_strategy(m, "top-2")
    layer = m.albert.encoder.albert_layer_groups[0].albert_layers[0]
    expected = sum(p.numel() for p in layer.parameters()) + sum(p.numel() for p in m.classifier.parameters())
    assert rec.trainable == expected == m.num_parameters(only_trainable=True)
    assert rec.trained_blocks == ["albert.encoder.albert_layer_groups.0.albert_layers.0"]
    assert "last 2 of 12 blocks train" in rec.steps[-1]
    assert any("is one module applied as 12 of the 12 blocks" in n for n in rec.notes)
    a = analyze(m, input_shape=(1, 8))
    assert a.depth.block_depth == a.depth.blocks == 12 and a.depth.block_modules == 1
    assert any("12 of the blocks are applications of one module" in n for n in a.notes)
    with pytest.raises(ConfigError, match="top-13: the model has only 12 blocks"):
        apply_strategy(transformers.AlbertForSequenceClassification(cfg), "top-13")


def test_bitfit_trains_biases_and_head_only():
    m = bert_cls()
    apply_strategy(m, "bitfit")
    for n, p in m.named_parameters():
        assert p.requires_grad == (n.endswith(".bias") or n.startswith("classifier") or n.startswith("head")), n


def test_lora_and_adapters_start_as_the_base_model_and_keep_base_names():
    m = bert_cls().eval()
    x = torch.randint(0, 100, (2, 12))
    want = m(x)
    base_keys = set(m.state_dict())
    for spec in ("lora:4", "adapter:8"):
        m2 = bert_cls().eval()
        apply_strategy(m2, spec)
        with torch.no_grad():
            torch.testing.assert_close(m2(x), want)
        assert base_keys <= set(m2.state_dict())  # base checkpoints load without remapping
        missing, unexpected = m2.load_state_dict(m.state_dict(), strict=False)
        assert not unexpected and all(("lora_" in k or ".adapter." in k) for k in missing)


def test_adapters_add_two_weight_layers_per_adapter_and_lora_adds_none():
    base = analyze(bert_cls("meta")).depth.weight_depth
    m = bert_cls("meta")
    apply_strategy(m, "lora:4")
    assert analyze(m).depth.weight_depth == base  # LoRA runs parallel to W
    m = bert_cls("meta")
    rec = apply_strategy(m, "adapter:8")
    n_blocks = 2
    assert len(rec.adapter_targets) == 2 * n_blocks
    assert analyze(m).depth.weight_depth == base + 2 * 2 * n_blocks


def test_merged_export_equals_the_lora_model_and_has_base_names():
    m = bert_cls()
    apply_strategy(m, "lora:4+head")
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    x = torch.randint(0, 100, (2, 12))
    m.eval()
    want = m(x)
    saved = finetuned_names(m)
    assert all("lora_" in n or n.startswith("head.") for n in saved)  # only what differs from the base
    merged = merged_state_dict(m)
    plain = bert_cls().eval()
    plain.load_state_dict(merged)  # base names, strict
    with torch.no_grad():
        torch.testing.assert_close(plain(x), want, rtol=1e-5, atol=1e-5)


def test_base_digest_changes_with_any_base_tensor_but_not_with_the_head():
    a, b = bert_cls(), bert_cls()
    b.load_state_dict(a.state_dict())
    heads = head_names(a)
    assert base_digest(a, exclude=heads) == base_digest(b, exclude=heads)
    with torch.no_grad():
        b.head.classifier.weight.add_(1.0)
    assert base_digest(a, exclude=heads) == base_digest(b, exclude=heads)
    with torch.no_grad():
        b.embeddings.word.weight[0, 0] += 1e-3
    assert base_digest(a, exclude=heads) != base_digest(b, exclude=heads)


@pytest.mark.parametrize(
    "spec,cls,message",
    [
        ("sideways", UnknownNameError, "unknown strategy 'sideways'; expected one of full, head, top-K"),
        ("top-9", ConfigError, "top-9: the model has only 2 blocks"),
        ("lora:0", ConfigError, "LoRA rank must be > 0"),
        ("lora:-2", ConfigError, "LoRA rank must be > 0"),
        ("adapter:x", ConfigError, "adapter size must be an integer"),
        ("freeze:nothing_here", ConfigError, "no layer of kind 'nothing_here'"),
    ],
)
def test_bad_strategies_are_one_line_errors(spec, cls, message):
    with pytest.raises(cls) as e:
        apply_strategy(bert_cls("meta"), spec)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, LayerwiseError)


def test_lora_targets_that_match_nothing_list_the_candidates():
    with pytest.raises(ConfigError) as e:
        apply_strategy(bert_cls("meta"), "lora:4", lora_targets=["q_proj"])
    msg = str(e.value)
    assert "match no Linear layer" in msg and "query" in msg and "value" in msg and "down" in msg


def test_lora_targets_by_kind_and_glob():
    m = bert_cls("meta")
    rec = apply_strategy(m, "lora:2", lora_targets=["mlp"])
    # the pooler is declared an MLP layer (pretrained with the encoder), so it is a target too
    assert rec.lora_targets == ["layers.0.mlp.up", "layers.0.mlp.down", "layers.1.mlp.up", "layers.1.mlp.down", "pooler.dense"]
    m = bert_cls("meta")
    rec = apply_strategy(m, "lora:2", lora_targets=["layers.1.attention.*"])
    assert rec.lora_targets == [f"layers.1.attention.{n}" for n in ("query", "key", "value", "out")]
    m = bert_cls("meta")
    rec = apply_strategy(m, "lora:2", lora_targets=["all-linear"])
    assert not any(t.startswith("head") or t.startswith("classifier") for t in rec.lora_targets)


def test_parse_strategy_composes():
    assert [str(s) for s in parse_strategy("lora:8:16+norms+head")] == ["lora:8:16.0", "train:norm", "head"]
    assert [str(s) for s in parse_strategy("top-2")] == ["top:2"]


ITEMS = ["full", "head", "top-1", "bitfit", "lora:4", "adapter:8", "norms", "freeze:embedding", "train:embedding",
         "freeze:head", "train:head", "freeze:adapter", "train:adapter", "freeze:attention", "train:mlp", "freeze:*.bias"]


def test_every_pair_of_strategy_items_applies_or_explains_itself():
    """Each pair either applies (the kinds recomputed after LoRA/adapters) or is refused with a
    one-line ConfigError naming the reason; never another exception."""
    from layerwise.errors import ConfigError
    from layerwise.models import build

    outcomes = {}
    for a in ITEMS:
        for b in ITEMS:
            spec = f"{a}+{b}"
            m = build("bert-tiny", head="sequence_classification", num_labels=2, device="meta")
            try:
                r = apply_strategy(m, spec)
            except ConfigError as e:
                assert "\n" not in str(e) and str(e), spec
                outcomes[spec] = str(e)
                continue
            unique = {id(p): p for p in m.parameters()}.values()
            assert r.trainable == sum(p.numel() for p in unique if p.requires_grad) > 0, spec
            assert r.total == r.total_base + r.added, spec
            outcomes[spec] = r.trainable
    assert len(outcomes) == len(ITEMS) ** 2
    # kinds are recomputed after a step that adds modules: the adapters just added are found
    assert "leaves nothing trainable" in outcomes["adapter:8+freeze:adapter"]
    assert "leaves nothing trainable" in outcomes["lora:4+freeze:adapter"]  # LoRA factors are of kind adapter
    assert isinstance(outcomes["adapter:8+train:head"], int)
    assert "no layer of kind 'adapter'" in outcomes["head+train:adapter"]
    assert "appears twice" in outcomes["lora:4+lora:4"]
    # later items win: freezing what an earlier item trained
    assert outcomes["full+freeze:embedding"] < outcomes["full+train:embedding"]
    assert outcomes["head+freeze:head"].endswith("leaves nothing trainable (every parameter ends frozen)")
