"""The training-memory planner: components against formulas and references we did not
write (accelerate's Adam rule, litgpt's LoRA count, the model's own KV cache), strategy
awareness, and one-line errors. Measured checks are in test_plan_measure.py."""

import json

import pytest
import torch

from layerwise.analysis import analyze
from layerwise.analysis.memory import SavedTensors, storage_key, trace_step
from layerwise.cli import main
from layerwise.errors import ConfigError, InputShapeError, UnknownNameError
from layerwise.finetune import apply_strategy
from layerwise.jobs.plan import compare_strategies, plan, plan_inference
from layerwise.models import build
from layerwise.vocab import OPTIMIZERS


def test_llama2_7b_lora_qv_bf16():
    """LoRA r=8 on q and v of Llama-2-7B: 32 layers × 2 projections × 8·(4096 + 4096) = 4,194,304."""
    m = build("llama-2-7b", device="meta")
    p = plan(m, strategy="lora:8", precision="bf16-true", batch_size=1, seq_len=512)
    assert p.trainable == 4_194_304
    assert p.params == 6_738_415_616 + 4_194_304
    assert p.weight_bytes == 2 * p.params and p.weights_by_dtype == {"bfloat16": 2 * p.params}
    assert p.gradient_bytes == 2 * 4_194_304  # bf16 gradients, trainable only
    # AdamW: two bf16 moments (zeros_like(param)); the Trainer's fused AdamW keeps each tensor's
    # 0-dim fp32 step on the device too (torch.optim.adam: fused => step on p.device): 128 LoRA tensors
    assert p.optimizer_state_bytes == 2 * 2 * 4_194_304 + 4 * 128 and p.optimizer_impl == "fused"
    assert p.master_weight_bytes == 0
    # frozen bf16 weights need no cast: no autocast copies; the model is unchanged
    assert p.weight_copy_bytes == 0
    assert all(q.requires_grad for q in m.parameters())
    assert p.peak_bytes == sum(b for _, b in p.peak_breakdown())
    # bf16-mixed keeps fp32 weights: autocast's bf16 copies of the frozen weights are saved
    # for the backward of every LoRA'd layer's input, so the activations grow by ~2 bytes/param
    mixed = plan(m, strategy="lora:8", precision="bf16-mixed", batch_size=1, seq_len=512)
    assert mixed.weight_bytes == 4 * mixed.params
    assert mixed.weight_copy_bytes > 1.9 * 6_738_415_616


def test_gpt2_small_against_accelerate_adam_rule():
    """accelerate's estimate-memory: Adam training in fp32 = 4 × the model's bytes, no activations."""
    accelerate = pytest.importorskip("accelerate")
    from accelerate.commands.estimate import estimate_training_usage
    from accelerate.utils import calculate_maximum_sizes

    m = build("gpt2", device="meta")
    total, _ = calculate_maximum_sizes(m)
    assert total == 124_439_808 * 4, accelerate.__version__  # tied head counted once, as we do
    accel = max(estimate_training_usage(total, "float32").values())
    assert accel == 4 * total
    p = plan(m, batch_size=4, seq_len=512, device="cuda")
    # our persistent parts reproduce accelerate's rule exactly (plus the 0-dim fp32 step that the
    # Trainer's fused AdamW keeps on the device for each of the 148 parameter tensors) ...
    tensors = len(list(m.parameters()))
    assert p.optimizer_impl == "fused" and tensors == 148
    assert p.weight_bytes + p.gradient_bytes + p.optimizer_state_bytes == accel + 4 * tensors
    # ... and the activations it leaves out more than double the step at this batch
    assert p.activation_bytes + p.loss_bytes > 0.9 * accel
    assert p.peak_bytes > 2 * accel and p.peak_phase == "backward"


@pytest.mark.parametrize(
    "optimizer,momentum,states",
    [("adamw", 0.9, 2), ("adam", 0.9, 2), ("sgd", 0.9, 1), ("sgd", 0.0, 0), ("adagrad", 0.9, 1), ("rmsprop", 0.9, 2),
     ("rmsprop", 0.0, 1)],
)
def test_optimizer_state_is_what_the_trainers_optimizer_allocates(optimizer, momentum, states):
    """The plan's optimizer state equals the state torch allocates for the optimizer the Trainer
    builds (make_optimizer: SGD and RMSprop with the Trainer's momentum, fused or foreach), after a step."""
    from layerwise.train.optim import make_optimizer

    m = build("gpt-nano", device="meta")
    p = plan(m, optimizer=optimizer, momentum=momentum, batch_size=2, device="cpu")
    n = sum(q.numel() for q in m.parameters())
    tensors = len(list(m.parameters()))
    step = 4 * tensors if OPTIMIZERS[optimizer].step_tensor else 0
    assert p.optimizer_state_bytes == states * 4 * n + step
    torch.manual_seed(0)
    real = build("gpt-nano")
    opt = make_optimizer(real, optimizer, lr=1e-3, momentum=momentum)
    for q in real.parameters():
        q.grad = torch.randn_like(q)
    opt.step()
    state = [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    assert sum(t.untyped_storage().nbytes() for t in state) == p.optimizer_state_bytes
    assert p.optimizer_impl == ("foreach" if optimizer == "rmsprop" else "fused")


def test_master_weights_sixteen_bytes_per_param():
    """bf16 weights + bf16 grads + fp32 master + two fp32 Adam moments = 16 bytes per parameter."""
    m = build("gpt-nano", device="meta")
    p = plan(m, precision="bf16-true", master_weights=True, batch_size=2, optimizer_impl="foreach")
    n = p.params
    # foreach on CUDA: the 0-dim step tensors stay on the host, so the device holds exactly 16 bytes per parameter
    assert p.weight_bytes + p.gradient_bytes + p.master_weight_bytes + p.optimizer_state_bytes == 16 * n
    with pytest.raises(ConfigError, match="master copy"):
        plan(m, precision="bf16-mixed", master_weights=True)


def test_frozen_prefix_saves_nothing_for_weight_gradients():
    """Head-only BERT: only the head's input (and the loss) is saved; the encoder saves nothing."""
    m = build("bert-tiny", device="meta", head="sequence_classification", dropout=0.0, classifier_dropout=0.0)
    full = plan(m, batch_size=4, seq_len=64)
    head = plan(m, strategy="head", batch_size=4, seq_len=64)
    B, C, labels = 4, 128, 2
    # classifier Linear saves its input (B, C) fp32; cross-entropy saves log-softmax (B, labels)
    # and the targets (B,) int64 (the label count is tiny; allow the loss's own scalars)
    assert B * C * 4 <= head.saved_bytes <= B * C * 4 + B * labels * 4 + B * 8 + 64
    assert head.saved_bytes < full.saved_bytes / 100
    assert head.gradient_bytes == (C * labels + labels) * 4


def test_saved_bytes_dedupe_storages_like_a_real_cpu_run():
    """The fake trace's unique-storage count equals the same hooks on real CPU tensors."""
    torch.manual_seed(0)
    for name in ("gpt-nano", "llama-nano", "resnet-tiny"):
        real = build(name)
        apply_strategy(real, "lora:4" if "nano" in name else "top-2")
        inputs = real.example_inputs(batch_size=2)
        est = trace_step(real, inputs)
        state = list(real.parameters()) + list(real.buffers()) + list(inputs)
        hooks = SavedTensors({storage_key(t) for t in state})  # what existed before is not an activation
        with hooks.hooks():
            out = real(*inputs)
            logits = out[0] if isinstance(out, tuple) else out
            torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                              torch.zeros(logits.numel() // logits.shape[-1], dtype=torch.long))
        assert est.saved_bytes == hooks.bytes, name
        assert hooks.tensors > len(hooks.sizes)  # views and repeats were deduplicated


def test_gradient_checkpointing_trades_activations_for_flops():
    m = build("gpt-nano", device="meta")  # small vocabulary: the blocks' activations dominate
    base = plan(m, batch_size=8, seq_len=64)
    ckpt = plan(m, batch_size=8, seq_len=64, grad_checkpointing=True)
    # only each block's input (and the logits) stays; the rest is recomputed in the backward
    assert ckpt.activation_bytes < base.activation_bytes / 4
    assert ckpt.peak_bytes < base.peak_bytes
    a = analyze(m, input_shape=[8, 64])
    blocks_fwd = sum(r.flops_total for r in a.rows if r.is_block)
    assert ckpt.recompute_flops == blocks_fwd
    assert ckpt.flops_per_step == base.flops_per_step + blocks_fwd
    with pytest.raises(ConfigError, match="no repeated blocks"):
        plan(build("cnn-tiny", device="meta"), grad_checkpointing=True)


def test_flops_and_time_come_from_the_frozen_aware_analysis():
    m = build("gpt-nano", device="meta")
    p = plan(m, strategy="head", batch_size=2, seq_len=32, tflops=50)
    lora = build("gpt-nano", device="meta")
    apply_strategy(lora, "head")
    assert p.flops_per_step == analyze(lora, input_shape=[2, 32]).totals.flops_train
    assert p.seconds_per_step == pytest.approx(p.flops_per_step / 50e12)
    assert p.tokens_per_step == 64


def test_compare_strategies_side_by_side():
    m = build("gpt-nano", device="meta")
    plans = {p.strategy: p for p in compare_strategies(m, batch_size=4)}
    assert list(plans) == ["full", "head", "top-2", "bitfit", "lora:8", "lora:16", "adapter:64"]
    assert plans["full"].trainable == plans["full"].params
    assert plans["lora:16"].trainable == 2 * plans["lora:8"].trainable
    for s in ("head", "top-2", "bitfit", "lora:8", "adapter:64"):
        assert plans[s].optimizer_state_bytes < plans["full"].optimizer_state_bytes
        assert plans[s].flops_per_step < plans["full"].flops_per_step, s


@pytest.mark.parametrize("preset,batch,context", [("llama-3-8b", 2, 8192), ("gpt2", 3, 1024), ("smollm2-135m", 1, 4096)])
def test_kv_cache_matches_the_models_own_cache(preset, batch, context):
    """2 · n_layer · n_kv_head · head_dim · context · batch · bytes, GQA-aware, against GPT.make_cache."""
    m = build(preset, device="meta", dtype=torch.bfloat16)
    inf = plan_inference(m, precision="bf16-true", batch_size=batch, context=context)
    cache = m.make_cache(batch, context)
    real = sum(t.untyped_storage().nbytes() for t in cache.keys + cache.values)
    assert inf.kv_cache_bytes == real
    cfg = m.config
    assert inf.n_kv_head == cfg.kv_heads and inf.head_dim == cfg.head_size
    assert inf.weight_bytes == 2 * sum(p.numel() for p in m.parameters())
    if preset == "llama-3-8b":
        assert inf.kv_cache_bytes == 2 * 32 * 8 * 128 * 8192 * 2 * 2  # 8 kv heads, not 32: 4× smaller


def test_inference_of_an_encoder_has_no_kv_cache():
    inf = plan_inference(build("bert-tiny", device="meta"), precision="fp32", context=128)
    assert inf.kv_cache_bytes is None and inf.total_bytes == inf.weight_bytes


def test_bad_input_one_line_errors():
    m = build("gpt2", device="meta")
    with pytest.raises(InputShapeError, match=r"seq_len 2048 is longer than the model can take: GPTConfig.block_size = 1024"):
        plan(m, seq_len=2048)
    with pytest.raises(UnknownNameError, match="unknown optimizer 'adamx'; expected one of sgd, adagrad, rmsprop, adam, adamw"):
        plan(m, optimizer="adamx")
    with pytest.raises(UnknownNameError, match="unknown precision 'bf8'; expected one of fp32, bf16-mixed"):
        plan(m, precision="bf8")
    assert plan(m, precision="bf16").precision == "bf16-mixed"  # the Trainer's name for it: one vocabulary
    with pytest.raises(ConfigError, match="batch_size: expected an integer >= 1, got 0"):
        plan(m, batch_size=0)
    with pytest.raises(InputShapeError, match="context 5000 is longer"):
        plan_inference(m, context=5000)
    with pytest.raises(InputShapeError, match="does not fit"):  # a CNN given the wrong channels
        plan(build("cnn-tiny", device="meta"), input_shape=[2, 5, 16, 16])


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_table_json_and_plot(capsys, tmp_path):
    code, out, err = run(capsys, "plan", "gpt-nano", "--strategy", "lora:8", "--precision", "bf16-mixed",
                         "--batch", "4", "--seq-len", "32", "--tflops", "10")
    assert code == 0
    assert "peak (" in out and "optimizer state" in out and "Time per step at 10 TFLOP/s" in out
    code, out, _ = run(capsys, "plan", "gpt-nano", "--batch", "4", "--format", "json")
    doc = json.loads(out)["plan"]
    assert doc["peak_bytes"] == sum(doc["peak_breakdown"].values())
    assert doc["trainable"] == doc["params"]
    png = tmp_path / "plan.png"
    code, out, err = run(capsys, "plan", "gpt-nano", "--compare-strategies", "--batch", "4", "--plot", str(png))
    assert code == 0 and png.stat().st_size > 1000
    for s in ("full", "head", "top-2", "bitfit", "lora:8", "lora:16", "adapter:64"):
        assert s in out
    code, out, _ = run(capsys, "plan", "llama-3-70b", "--inference", "--context", "8192", "--precision", "bf16-true")
    assert code == 0 and "KV cache" in out and "8 kv heads" in out


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["--seq-len", "100"], "seq_len 100 is longer than the model can take: GPTConfig.block_size = 64"),
        (["--optimizer", "adamx"], "unknown optimizer 'adamx'; expected one of sgd, adagrad, rmsprop, adam, adamw"),
        (["--precision", "fp8"], "unknown precision 'fp8'; expected one of fp32, bf16-mixed, fp16-mixed, bf16-true"),
        (["--batch", "0"], "--batch: expected an integer >= 1, got '0'"),
        (["--budget", "abc"], "--budget 'abc': expected a size such as 24GiB"),
        (["--devices", "0"], "--devices: expected an integer >= 1, got '0'"),
        (["--devices", "two"], "--devices: expected an integer >= 1, got 'two'"),
        (["--devices", "2", "--shard", "nope"], "unknown --shard 'nope'; expected one of ddp, zero1, zero2, zero3, fsdp"),
        (["--shard", "fsdp"], "--shard fsdp: shards over --devices N"),
        (["--base-dtype", "x"], "unknown --base-dtype 'x'; expected one of nf4, fp4, int8"),
        (["--base-dtype", "nf4"], "--base-dtype nf4: no frozen Linear weight to store quantised"),
        (["--strategy", "lora:8", "--base-dtype", "nf4", "--precision", "bf16-mixed"], "use --precision bf16-true"),
        (["--tflops", "-1"], "--tflops: expected a number > 0"),
        (["--momentum", "1.5"], "--momentum: expected a number >= 0 and < 1"),
        (["--inference", "--context", "0"], "--context: expected an integer >= 1, got '0'"),
        (["--budget", "1GiB", "--measure"], "--measure and --budget: choose one"),
        (["--strategy", "lora:x"], "strategy 'lora:x': rank must be an integer"),
    ],
)
def test_cli_errors_exit_2_with_one_line(capsys, argv, expected):
    code, out, err = run(capsys, "plan", "gpt-nano", *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and expected in err


def test_llama2_7b_lora_against_litgpt_resource_table():
    """litgpt's resource tables (10/2023, A100-SXM4-40GB, bf16-true, LoRA r=8 α=16 dropout 0.05 on
    q and v, Alpaca's longest example 1,304 tokens): max_memory_allocated 21.30 GB at micro-batch 1,
    29.07 GB at 2, out of memory at 4."""
    m = build("llama-2-7b", device="meta")

    def peak(batch):
        return plan(m, strategy="lora:8", precision="bf16-true", batch_size=batch, seq_len=1304,
                    strategy_options={"lora_dropout": 0.05}).peak_bytes

    assert peak(1) == pytest.approx(21.30e9, rel=0.05)
    assert peak(2) == pytest.approx(29.07e9, rel=0.05)
    assert peak(4) > 40 * 2**30  # more than the whole card


@pytest.mark.parametrize("head", ["sequence_classification", "none"])
def test_bert_with_a_padded_mask_plans_under_fake_tensors(head):
    # the planner traces under FakeTensorMode: the models' padding checks must not read values,
    # so a padded mask plans like a full one (same shapes)
    m = build("bert-tiny", device="meta", head=head, num_labels=2)
    ids = torch.zeros(2, 16, dtype=torch.long)
    full = torch.ones_like(ids)
    padded = full.clone()
    padded[0, 10:] = 0
    assert plan(m, inputs=(ids, padded)).peak_bytes == plan(m, inputs=(ids, full)).peak_bytes > 0
    assert trace_step(m, (ids, padded)) is not None


def test_gpt_classifier_with_a_padded_mask_plans_under_fake_tensors():
    m = build("gpt-nano", device="meta", head="classification", num_labels=2)
    ids = torch.zeros(2, 16, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[:, 10:] = 0
    assert plan(m, inputs=(ids, None, None, mask)).peak_bytes == plan(m, inputs=(ids, None, None, torch.ones_like(ids))).peak_bytes


# ----------------------------------------------------------------------------- repeated blocks


@pytest.mark.parametrize("preset,overrides,kw", [
    ("gpt-micro", {"n_layer": 18}, dict(strategy="lora:8", batch_size=2, seq_len=32)),
    ("gpt-micro", {"n_layer": 18}, dict(strategy="top-2", precision="bf16-mixed", batch_size=2, seq_len=32)),
    ("gpt-micro", {"n_layer": 18}, dict(batch_size=2, seq_len=32, grad_checkpointing=True)),
    ("llama-nano", {"n_layer": 20}, dict(strategy="full", precision="bf16-true", batch_size=2, seq_len=32,
                                         devices=2, shard="fsdp")),
    ("llama-nano", {"n_layer": 20}, dict(strategy="qlora:4", batch_size=2, seq_len=32)),
    ("bert-tiny", {"n_layer": 17, "head": "sequence_classification"}, dict(strategy="head", batch_size=2, seq_len=32)),
])
def test_extrapolated_plan_equals_the_whole_trace(preset, overrides, kw):
    """With 16 or more identical blocks the plan traces 2, 3 and 4 of them and extrapolates: it is
    the whole trace to the byte (and the FLOPs to the FLOP)."""
    m = build(preset, device="meta", **overrides)
    fast = plan(m, **kw)
    whole = plan(m, extrapolate=False, **kw)
    assert fast.blocks_traced and fast.blocks_traced["traced"] == [2, 3, 4]
    for field in ("peak_bytes", "forward_peak_bytes", "backward_peak_bytes", "step_peak_bytes", "activation_bytes",
                  "saved_bytes", "loss_bytes", "gradient_bytes", "weight_copy_bytes", "comm_buffer_bytes",
                  "flops_per_step", "recompute_flops"):
        assert getattr(fast, field) == getattr(whole, field), field


def test_blocks_that_differ_are_not_extrapolated():
    """A block with its own settings breaks the run of identical blocks: the plan traces around it."""
    m = build("gpt-micro", device="meta", n_layer=18)
    m.transformer.h[9].attn.attn_dropout = 0.5  # one block unlike the others
    p = plan(m, batch_size=2, seq_len=32)
    assert p.blocks_traced is None  # the longest identical run (9 blocks) is too short to bother
    assert p.peak_bytes == plan(m, batch_size=2, seq_len=32, extrapolate=False).peak_bytes


# ----------------------------------------------------------------------------- oneDNN LSTM


@pytest.mark.parametrize("T,B,I,H,dtype", [(24, 8, 16, 16, torch.float32), (24, 8, 32, 16, torch.float32),
                                           (10, 4, 16, 32, torch.float32), (50, 8, 64, 64, torch.float32),
                                           (3, 2, 5, 7, torch.float32), (24, 8, 64, 128, torch.bfloat16),
                                           (7, 13, 33, 65, torch.bfloat16)])
def test_onednn_lstm_workspace_is_the_kernels(T, B, I, H, dtype):
    """The workspace rule gives the size of the tensor aten.mkldnn_rnn_layer returns (the kernel
    PyTorch's CPU LSTM runs in training), which fake tensors leave at 0."""
    from layerwise.analysis.memory import onednn_lstm_workspace_bytes

    lstm = torch.nn.LSTM(I, H).to(dtype)
    w = lstm._flat_weights
    h0 = torch.zeros(B, H, dtype=dtype)
    out = torch.ops.aten.mkldnn_rnn_layer(torch.randn(T, B, I, dtype=dtype), *w[:4], h0, h0, False, [], 2, H, 1, True,
                                          False, False, True)
    assert onednn_lstm_workspace_bytes(T, B, I, H, torch.empty((), dtype=dtype).element_size()) == out[3].numel()


def test_cpu_lstm_plan_is_the_onednn_step_not_the_native_one():
    """A default CPU training step of an LSTM runs oneDNN's kernel. The plan for the CPU traces that
    path; the native path (what a CUDA plan stands for) saves other tensors."""
    m = build("seed-lstm", device="meta")
    cpu = plan(m, batch_size=8, seq_len=40, device="cpu")
    cuda = plan(m, batch_size=8, seq_len=40, device="cuda")
    assert cpu.saved_bytes != cuda.saved_bytes


# ----------------------------------------------------------------------------- Korthikanti et al.


@pytest.mark.parametrize("preset,s,b,h,a", [("gpt2", 1024, 1, 768, 12), ("llama-2-7b", 2048, 1, 4096, 32)])
def test_activation_formula_next_to_the_trace(preset, s, b, h, a):
    """Korthikanti et al. 2022, eq. (1): sbh(34 + 5as/h) bytes per layer with 16-bit activations. With
    SDPA/flash attention no s×s tensor is kept, so the traced layer stays far below the formula's
    total; without the 5as²b term the two are of one size."""
    p = plan(build(preset, device="meta"), precision="bf16-true", batch_size=b, seq_len=s, activation_formula=True)
    (row,) = p.activation_formula
    assert row["formula_34sbh"] == 34 * s * b * h and row["formula_5as2b"] == 5 * a * s * s * b
    assert row["formula_bytes"] == s * b * h * (34 + 5 * a * s / h)
    traced = row["traced_per_layer_bytes"]
    assert traced < 0.6 * row["formula_bytes"]
    assert 0.5 * row["formula_34sbh"] < traced < 1.5 * row["formula_34sbh"]


def test_traced_per_layer_activations_are_what_a_real_layer_saves():
    """The per-layer figure is one block's saved tensors: the same hooks on real CPU tensors, with
    three blocks and with two, differ by it."""
    torch.manual_seed(0)

    def saved(n):
        real = build("gpt-nano", n_layer=n, dropout=0.0).to(torch.bfloat16)
        (ids,) = real.example_inputs(batch_size=2, seq_len=32)
        state = list(real.parameters()) + [ids]
        hooks = SavedTensors({storage_key(t) for t in state})
        with hooks.hooks():
            real(ids).logits.float().sum()
        return hooks.bytes

    p = plan(build("gpt-nano", device="meta", dropout=0.0), precision="bf16-true", batch_size=2, seq_len=32,
             activation_formula=True)
    assert p.activation_formula[0]["traced_per_layer_bytes"] == saved(3) - saved(2)


# ----------------------------------------------------------------------------- issue 11


def test_refuses_a_sequence_length_for_an_image_model_and_a_zero_context(capsys):
    code, out, err = run(capsys, "plan", "resnet50", "--seq-len", "128")
    assert code == 2 and "--seq-len 128: ResNet takes no sequence" in err and err.count("\n") == 1
    code, out, err = run(capsys, "plan", "gpt-nano", "--inference", "--context", "0")
    assert code == 2 and "--context: expected an integer >= 1, got '0'" in err


@pytest.mark.parametrize("preset", ["seq2seq-tiny", "seq2seq-gru-attn"])
def test_seq2seq_presets_plan(capsys, preset):
    code, out, err = run(capsys, "plan", preset, "--batch", "2", "--device", "cpu")
    assert code == 0 and "peak (" in out and err == ""


def test_gan_plan_shows_both_steps(capsys):
    code, out, err = run(capsys, "plan", "gan-mlp-mnist", "--batch", "4", "--format", "json")
    doc = json.loads(out)["gan"]
    d, g = doc["discriminator"], doc["generator"]
    assert d["trainable"] + g["trainable"] == d["params"] == 264_209  # each network trains in its own step
    assert doc["peak_bytes"] == max(d["peak_bytes"] + g["optimizer_state_bytes"], g["peak_bytes"] + d["optimizer_state_bytes"])


def test_demo_plan_table_labels_its_rows_and_names_the_model(tmp_path):
    from layerwise.jobs.demo import step_plan

    lines = []
    (section,) = step_plan(tmp_path, lines.append)
    text = section.preformatted
    assert text.startswith("llama-2-7b — set-ups side by side") and "GPT —" not in text
    assert "full, bf16-mixed" in text and "full, bf16-true, checkpointing" in text
    assert "Precision" in text and "Checkpointing" in text


# ----------------------------------------------------------------------------- will it fit?


def test_will_it_fit_answers_with_plans_and_a_measured_step():
    """For each strategy and precision: does it fit, the largest batch (that batch fits and one more
    does not, by plan), and the step at that batch really stays within the budget (measured, 10%)."""
    from layerwise.jobs.fit import fit
    from layerwise.jobs.plan import measure

    budget = 6 * 2**20
    m = build("gpt-nano", device="meta")
    r = fit(m, budget, strategies=["full", "lora:8"], precisions=["fp32"], seq_len=64, device="cpu")
    assert [(x.strategy, x.precision) for x in r.rows] == [("full", "fp32"), ("lora:8", "fp32")]
    for row in r.rows:
        assert row.fits and row.max_batch >= 1
        at = plan(m, strategy=row.strategy, batch_size=row.max_batch, seq_len=64, device="cpu")
        over = plan(m, strategy=row.strategy, batch_size=row.max_batch + 1, seq_len=64, device="cpu")
        assert at.peak_bytes <= budget < over.peak_bytes
        assert row.max_seq_len == 64  # the model's context: the whole of it fits at batch 1
    full, lora = r.rows
    assert lora.max_batch > full.max_batch
    assert r.recommended is full and "trains every parameter" in r.why
    measured = measure(m, strategy="full", batch_size=full.max_batch, seq_len=64, device="cpu")
    assert measured.peak_bytes < 1.10 * budget


def test_will_it_fit_needs_checkpointing_or_does_not_fit():
    from layerwise.jobs.fit import fit

    m = build("gpt2", device="meta")
    plain = plan(m, strategy="full", precision="bf16-mixed", seq_len=1024)
    ckpt = plan(m, strategy="full", precision="bf16-mixed", seq_len=1024, grad_checkpointing=True)
    budget = (plain.peak_bytes + ckpt.peak_bytes) // 2
    r = fit(m, budget, strategies=["full"], precisions=["bf16-mixed"], seq_len=1024)
    (row,) = r.rows
    assert row.fits and row.needs_checkpointing and row.peak_bytes == ckpt.peak_bytes
    assert "gradient checkpointing" in r.why
    none = fit(m, plan(m, strategy="head", precision="bf16-true", seq_len=1024, grad_checkpointing=True).peak_bytes // 2,
               strategies=["full", "head"], precisions=["bf16-true"], seq_len=1024)
    assert none.recommended is None and "nothing fits" in none.why
    assert all(not x.fits and x.max_batch == 0 for x in none.rows)


def test_cli_budget_table_json_and_recommendation(capsys):
    code, out, err = run(capsys, "plan", "gpt-micro", "--budget", "256MiB", "--seq-len", "64",
                         "--fit-strategies", "full,lora:8", "--fit-precisions", "fp32,bf16-true", "--tflops", "1")
    assert code == 0 and "will it fit in 0.25 GiB" in out and "recommended: full in bf16-true" in out
    code, out, err = run(capsys, "plan", "gpt-micro", "--budget", "256MiB", "--seq-len", "64",
                         "--fit-strategies", "full,lora:8", "--fit-precisions", "fp32", "--format", "json")
    doc = json.loads(out)["fit"]
    assert doc["budget_bytes"] == 256 * 2**20 and len(doc["rows"]) == 2 and doc["recommended"]["strategy"] == "full"
    for bad, msg in ((["--budget", "24XB"], "--budget '24XB': expected a size"),
                     (["--budget=-1GiB"], "--budget '-1GiB': expected a size"),
                     (["--budget", "1GiB", "--fit-strategies", "sideways"], "unknown strategy 'sideways'")):
        code, out, err = run(capsys, "plan", "gpt-micro", *bad)
        assert code == 2 and msg in err and err.count("\n") == 1, err
