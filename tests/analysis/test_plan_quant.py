"""Quantised frozen bases (QLoRA, int8): the stored bytes against bitsandbytes' own tensors, the
qlora strategy, and the plan against published QLoRA memory figures whose settings are stated
(litgpt's resource tables; Dettmers et al. 2023)."""

import pytest
import torch

from layerwise.finetune import apply_strategy
from layerwise.jobs.plan import plan
from layerwise.models import build
from layerwise.vocab import QUANTIZATIONS

bnb = pytest.importorskip("bitsandbytes")


def bnb_stored_bytes(weight: torch.Tensor, fmt: str, double_quant: bool) -> int:
    """Bytes bitsandbytes keeps for ``weight`` once quantised: the packed codes and every tensor of
    its quantisation state (absmax, offset, the code tables; int8: the row scales SCB)."""
    if fmt == "int8":
        p = bnb.nn.Int8Params(weight.clone(), requires_grad=False, has_fp16_weights=False).to("cpu")
        return p.untyped_storage().nbytes() + p.SCB.untyped_storage().nbytes()
    p = bnb.nn.Params4bit(weight.clone(), requires_grad=False, quant_type=fmt, compress_statistics=double_quant,
                          blocksize=64).to("cpu")
    st = p.quant_state
    tensors = [p, st.absmax, st.code]
    if double_quant:
        tensors += [st.offset, st.state2.absmax, st.state2.code]
    return sum(t.untyped_storage().nbytes() for t in tensors)


@pytest.mark.parametrize("shape", [(96, 80), (48, 48), (1024, 4096), (4096, 1000), (7, 5)])
@pytest.mark.parametrize("fmt,double_quant", [("nf4", True), ("nf4", False), ("fp4", True), ("int8", False)])
def test_stored_bytes_equal_bitsandbytes(shape, fmt, double_quant):
    torch.manual_seed(0)
    w = torch.randn(*shape)
    assert QUANTIZATIONS[fmt].stored_bytes(shape, double_quant) == bnb_stored_bytes(w, fmt, double_quant)


def test_double_quantisation_bits_per_parameter_as_in_the_paper():
    """QLoRA §3: double quantisation takes the absmax from 32/64 = 0.5 to 8/64 + 32/(64·256) = 0.127
    bits per parameter (plus the packed 4 bits); a 4096×4096 weight shows it."""
    n = 4096 * 4096
    assert 8 * QUANTIZATIONS["nf4"].stored_bytes((4096, 4096), True) / n == pytest.approx(4 + 0.127, abs=0.001)
    assert 8 * QUANTIZATIONS["nf4"].stored_bytes((4096, 4096), False) / n == pytest.approx(4.5, abs=0.001)


def test_qlora_strategy_applies_lora_and_records_the_nf4_base_on_cpu():
    """Applied on the CPU, qlora:R wraps every Linear of the blocks in LoRA (QLoRA's targets) and
    records nf4 as the base's planned storage; the weights themselves are not quantised."""
    m = build("gpt-nano")
    before = {n: p.dtype for n, p in m.named_parameters()}
    rec = apply_strategy(m, "qlora:4")
    assert rec.base_dtype == "nf4" and any("keep their dtype" in n for n in rec.notes)
    assert sorted({t.rsplit(".", 1)[-1] for t in rec.lora_targets}) == ["c_attn", "c_fc", "c_proj"]
    assert len(rec.lora_targets) == 4 * 3  # four Linears per block, three blocks; not the head
    assert all(p.dtype == before.get(n, p.dtype) for n, p in m.named_parameters())
    lora = build("gpt-nano")
    assert apply_strategy(lora, "lora:4").base_dtype is None


def test_plan_qlora_states_the_logical_count_and_the_stored_bytes():
    """PEFT users ask why 4-bit models show half their parameters (bitsandbytes packs two codes per
    uint8 element): the plan keeps the logical count and gives the stored bytes per layer."""
    m = build("llama-2-7b", device="meta")
    p = plan(m, strategy="qlora:16", batch_size=1, seq_len=256)
    assert p.trainable == 32 * 16 * (2 * (4096 + 4096) + 2 * (4096 + 4096) + 3 * (4096 + 11008))
    assert p.params == 6_738_415_616 + p.trainable  # the logical count, not halved
    assert (p.precision, p.optimizer, p.base_dtype) == ("bf16-true", "paged-adamw", "nf4")
    linear = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    assert p.quantized_params == linear and len(p.quantized_layers) == 32 * 7
    q = QUANTIZATIONS["nf4"]
    assert p.weights_by_dtype["nf4"] == 32 * (4 * q.stored_bytes((4096, 4096)) + 2 * q.stored_bytes((11008, 4096))
                                              + q.stored_bytes((4096, 11008)))
    # embedding, head, norms and the LoRA factors stay bf16
    assert p.weights_by_dtype["bfloat16"] == 2 * (p.params - linear)
    # paged AdamW keeps 32-bit moments of the bf16 LoRA factors (its step count is a Python int)
    assert p.optimizer_state_bytes == 2 * 4 * p.trainable


# litgpt's resource tables (tutorials/resource-tables.md, 10/20/2023, commit 8641822, A100-SXM4-40GB,
# PyTorch 2.1, bitsandbytes 0.41.1, --precision bf16-true, finetune/lora.py on Alpaca: LoRA r=8, α=16,
# dropout 0.05 on q and v, micro-batch 1, longest example 1,304 tokens): Max GPU RAM in GB.
LITGPT = {("7b", None): 21.30, ("7b", "nf4"): 14.14, ("7b", "nf4-dq"): 13.84,
          ("13b", None): 38.12, ("13b", "nf4"): 23.14, ("13b", "nf4-dq"): 22.55}


@pytest.mark.parametrize("size,quant", list(LITGPT))
def test_against_litgpt_qlora_resource_table(size, quant):
    """Within 10% of litgpt's measured figures with litgpt's settings: its bitsandbytes plugin
    converts every Linear (the LM head too), bitsandbytes 0.41's MatMul4Bit saves each layer's
    input for the backward (``ctx.tensors = (A, B)``), and quantised runs step bnb's PagedAdamW."""
    m = build("llama-2-7b", device="meta") if size == "7b" else build(
        "llama-2-7b", device="meta", n_layer=40, n_head=40, n_embd=5120, intermediate_size=13824)
    kw = {}
    if quant:
        kw = dict(base_dtype="nf4", double_quant=quant == "nf4-dq", quantize_head=True, quant_saves_input=True,
                  optimizer="paged-adamw")
    p = plan(m, strategy="lora:8", precision="bf16-true", batch_size=1, seq_len=1304,
             strategy_options={"lora_dropout": 0.05, "lora_targets": ["q_proj", "v_proj"]}, **kw)
    assert p.trainable == {"7b": 4_194_304, "13b": 6_553_600}[size]
    assert p.peak_bytes == pytest.approx(LITGPT[size, quant] * 1e9, rel=0.10)
    if quant == "nf4-dq":  # double quantisation saves what litgpt measured it to save (0.30 and 0.59 GB)
        nodq = plan(m, strategy="lora:8", precision="bf16-true", batch_size=1, seq_len=1304,
                    strategy_options={"lora_dropout": 0.05, "lora_targets": ["q_proj", "v_proj"]},
                    **{**kw, "double_quant": False})
        measured = (LITGPT[size, "nf4"] - LITGPT[size, "nf4-dq"]) * 1e9
        assert nodq.peak_bytes - p.peak_bytes == pytest.approx(measured, rel=0.10)


def test_guanaco_65b_fits_one_48gb_gpu_and_16_bit_finetuning_does_not():
    """Dettmers et al. 2023 (QLoRA), abstract: finetuning a 65B model on a single 48GB GPU, against
    more than 780 GB for regular 16-bit finetuning. Settings of artidoro/qlora's
    scripts/finetune_guanaco_65b.sh: LoRA r=64, α=16, dropout 0.05 on all linear layers, nf4 with
    double quantisation, bf16, paged AdamW, gradient checkpointing, batch 4, 16 + 512 tokens."""
    m = build("llama-2-7b", device="meta", n_layer=80, n_head=64, n_embd=8192, intermediate_size=22016,
              block_size=2048)
    assert sum(q.numel() for q in m.parameters()) == 65_285_660_672  # LLaMA-65B
    q = plan(m, strategy="qlora:64:16", batch_size=4, seq_len=528, grad_checkpointing=True,
             strategy_options={"lora_dropout": 0.05})
    assert q.peak_bytes < 48e9
    full = plan(m, strategy="full", precision="bf16-true", master_weights=True, batch_size=1, seq_len=528,
                grad_checkpointing=True)
    assert full.weight_bytes + full.gradient_bytes + full.optimizer_state_bytes > 780e9
