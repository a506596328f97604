"""LoRA against PEFT on the same Hugging Face model: trainable counts, outputs at
initialisation and after merging, and the merge rule W' = W + (α/r)·B·A."""

import copy

import pytest
import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

from layerwise.analysis import analyze
from layerwise.finetune import LoRALinear, apply_strategy, lora_modules, merge_lora, unmerge_lora
from layerwise.models.bert_convert import load_hf_bert


def tiny_bert():
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                    intermediate_size=128, vocab_size=100, num_labels=2)).eval()


def peft_bert(hf, r=8, alpha=16):
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=["query", "value"], task_type=TaskType.SEQ_CLS, lora_dropout=0.0)
    return get_peft_model(copy.deepcopy(hf), cfg).eval()


def randomise_lora_b(peft_model):
    # PEFT starts B at zero like us; random B makes the comparison mean something
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def copy_lora_from_peft(peft_model, ours, prefix_map):
    """PEFT's lora_A/lora_B.default.weight -> our lora_a/lora_b.weight."""
    src = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    mods = lora_modules(ours)
    assert mods
    for name, mod in mods.items():
        key = prefix_map(name)
        with torch.no_grad():
            mod.lora_a.weight.copy_(src[f"{key}.lora_A.default.weight"])
            mod.lora_b.weight.copy_(src[f"{key}.lora_B.default.weight"])


def test_trainable_count_equals_peft_and_peft_duplicates_the_classifier():
    """PEFT's sequence-classification task trains the new classifier with LoRA (its
    modules_to_save); so does our LoRA on a model whose head is new (the fine-tuning jobs
    say so with new_head=True), and "+head" says it explicitly."""
    hf = tiny_bert()
    base_total = sum(p.numel() for p in hf.parameters())
    pm = peft_bert(hf)
    assert {n.split(".")[-1] for n, _ in pm.named_modules() if type(_).__name__ == "ModulesToSaveWrapper"} == {"classifier"}
    peft_trainable, peft_all = pm.get_nb_trainable_parameters()
    peft_names = {n.replace("base_model.model.", "").replace(".modules_to_save.default", "").replace(".default", "")
                  for n, p in pm.named_parameters() if p.requires_grad}
    ours = copy.deepcopy(hf)
    rec = apply_strategy(ours, "lora:8:16", lora_targets=["query", "value"], new_head=True)
    ours_names = {n.replace("lora_a", "lora_A").replace("lora_b", "lora_B") for n, p in ours.named_parameters() if p.requires_grad}
    assert ours_names == peft_names  # the same tensors train: LoRA factors of query and value, and the classifier
    assert any("the new head trains too (classifier: 130 parameters)" in s for s in rec.steps)
    explicit = apply_strategy(copy.deepcopy(hf), "lora:8:16+head", lora_targets=["query", "value"])
    assert explicit.trainable == rec.trainable
    frozen_head = apply_strategy(copy.deepcopy(hf), "lora:8:16", lora_targets=["query", "value"])  # the spec alone
    lora = 2 * 2 * (8 * 64 + 64 * 8)
    classifier = 64 * 2 + 2
    assert frozen_head.trainable == lora
    assert rec.trainable == peft_trainable == lora + classifier
    # PEFT's "all params" counts the classifier twice: modules_to_save keeps the original
    # and a trainable copy. Our denominator is the base model, each tensor once.
    assert peft_all == base_total + lora + classifier
    assert rec.total == base_total + lora and rec.total_base == base_total
    a = analyze(ours, input_shape=(1, 8))
    assert a.totals.trainable == rec.trainable
    assert a.kind("adapter").params == lora and a.kind("head").trainable == classifier


def test_outputs_match_peft_at_init_and_after_merge_on_our_converted_bert():
    hf = tiny_bert()
    pm = peft_bert(hf)
    x = torch.randint(0, 100, (3, 10))
    mask = torch.ones_like(x)
    mask[1, 7:] = 0
    ours = load_hf_bert(hf.config.to_dict(), hf.state_dict(), head="sequence_classification", num_labels=2).eval()
    apply_strategy(ours, "lora:8:16+head", lora_targets=["query", "value"])
    with torch.no_grad():
        torch.testing.assert_close(ours(x, attention_mask=mask), pm(input_ids=x, attention_mask=mask).logits, rtol=1e-5, atol=1e-5)
    randomise_lora_b(pm)
    copy_lora_from_peft(pm, ours, lambda n: "base_model.model.bert.encoder.layer." + n[len("layers."):].replace("attention.", "attention.self."))
    with torch.no_grad():
        want = pm(input_ids=x, attention_mask=mask).logits
        got = ours(x, attention_mask=mask)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(want, hf(input_ids=x, attention_mask=mask).logits, atol=1e-4)  # LoRA changed something
        merged_peft = pm.merge_and_unload()
        merge_lora(ours)
        torch.testing.assert_close(ours(x, attention_mask=mask), merged_peft(input_ids=x, attention_mask=mask).logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x, attention_mask=mask), got, rtol=1e-5, atol=1e-5)


def test_merge_rule_idempotence_and_unmerge():
    torch.manual_seed(0)
    base = torch.nn.Linear(16, 12)
    w0 = base.weight.detach().clone()
    lora = LoRALinear.from_linear(base, rank=4, alpha=8)
    with torch.no_grad():
        lora.lora_b.weight.normal_()
    x = torch.randn(5, 16)
    y = lora(x)
    lora.merge()
    w1 = lora.weight.detach().clone()
    torch.testing.assert_close(w1, w0 + (8 / 4) * lora.lora_b.weight @ lora.lora_a.weight)
    torch.testing.assert_close(lora(x), y, rtol=1e-5, atol=1e-5)
    lora.merge()  # twice: nothing changes
    assert torch.equal(lora.weight, w1)
    lora.unmerge()
    torch.testing.assert_close(lora.weight, w0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lora(x), y, rtol=1e-5, atol=1e-5)


def test_llama_lora_q_v_matches_peft_count_and_outputs():
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=128)).eval()
    pm = get_peft_model(copy.deepcopy(hf), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                       task_type=TaskType.CAUSAL_LM, lora_dropout=0.0)).eval()
    ours = copy.deepcopy(hf)
    rec = apply_strategy(ours, "lora:4:8", lora_targets=["q_proj", "v_proj"])
    assert rec.trainable == pm.get_nb_trainable_parameters()[0] == 2 * (4 * 64 + 64 * 4 + 4 * 64 + 32 * 4)
    randomise_lora_b(pm)
    copy_lora_from_peft(pm, ours, lambda n: "base_model.model." + n)
    x = torch.randint(0, 128, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, pm(x).logits, rtol=1e-5, atol=1e-5)
        unmerge_lora(ours)  # not merged: a no-op
        torch.testing.assert_close(ours(x).logits, pm(x).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset,expected", [("llama-2-7b", 4_194_304)])
def test_published_lora_count_on_meta(preset, expected):
    """Llama-2-7B, LoRA r=8 on q and v: 32 layers × 2 × (8·4096 + 4096·8) = 4,194,304
    (the figure PEFT prints for this setup)."""
    from layerwise.models import build

    rec = apply_strategy(build(preset, device="meta"), "lora:8", lora_targets=["q_proj", "v_proj"])
    assert rec.trainable == expected
