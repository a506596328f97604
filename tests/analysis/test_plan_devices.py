"""The planner on many devices: per-device model states against DeepSpeed's published
estimators, and per-process memory against real 2-process gloo runs (FSDP2 and DDP, the
Trainer's own wrapping), measured with torch.profiler on each process's CPU allocator."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from layerwise.jobs.plan import plan
from layerwise.models import build

WORKER = Path(__file__).with_name("fsdp_memory_worker.py")


# DeepSpeed's estimators, re-derived from their published text (deepspeed/runtime/zero/stage_1_and_2.py
# and stage3.py; documented at https://deepspeed.readthedocs.io/en/latest/memory.html), for mixed
# precision Adam without offload:
#   estimate_zero2_model_states_mem_needs(total_params, num_gpus_per_node, num_nodes, cpu_offload=False):
#       gpu_mem = 4 * total_params + int(16 * total_params / total_gpus)
#   estimate_zero3_model_states_mem_needs(total_params, largest_layer_params, ..., cpu_offload=False):
#       largest_layer_memory = 4 * largest_layer_params
#       gpu_mem = largest_layer_memory + int(18 * total_params / total_gpus)
# where largest_layer_params is the most parameters one module owns itself (parameters(recurse=False)).
def deepspeed_zero2_gpu(total_params: int, gpus: int) -> int:
    return 4 * total_params + int(16 * total_params / gpus)


def deepspeed_zero3_gpu(total_params: int, largest_layer_params: int, gpus: int) -> int:
    return 4 * largest_layer_params + int(18 * total_params / gpus)


def model_states(p) -> int:
    """Weights + gradients + fp32 master + optimizer state + the fp32 gradients made for the step
    (the optimizer-step transient under master weights); ZeRO-3's gathered largest layer too."""
    return (p.weight_bytes + p.gradient_bytes + p.master_weight_bytes + p.optimizer_state_bytes
            + p.optimizer_step_transient_bytes + (p.comm_buffer_bytes if p.shard == "zero3" else 0))


@pytest.mark.parametrize("gpus", [2, 8])
def test_model_states_against_deepspeed_estimators(gpus):
    """bf16 weights and gradients, fp32 master weights and AdamW moments (DeepSpeed's mixed precision):

    - zero1 reproduces estimate_zero2_model_states_mem_needs exactly: full 16-bit weights and
      gradients (4Ψ), fp32 master weights, momentum, variance and gradients partitioned (16Ψ/N).
      DeepSpeed has one estimator for stages 1 and 2, and it keeps the full 16-bit gradients;
    - zero2 partitions the 16-bit gradients too, 2Ψ(N-1)/N less (Rajbhandari et al. 2020, ZeRO,
      §5.2: P_os+g = 2Ψ + (2 + K)Ψ/N);
    - zero3 reproduces estimate_zero3_model_states_mem_needs's terms: 18Ψ/N (16-bit parameters and
      the fp32 states) plus the largest layer gathered with its gradients (4 × its parameters),
      and keeps the 16-bit gradient partition (2Ψ/N) the estimate leaves out.
    """
    m = build("gpt2", device="meta")
    psi = sum(q.numel() for q in {id(q): q for q in m.parameters()}.values())
    largest = max(sum(q.numel() for q in mod.parameters(recurse=False)) for mod in m.modules())
    assert psi == 124_439_808 and largest == 50257 * 768  # the tied embedding / LM head
    tensors = len(list(m.parameters()))

    def states(shard):
        p = plan(m, precision="bf16-true", master_weights=True, batch_size=1, seq_len=32, devices=gpus, shard=shard)
        steps = 4 * tensors  # fused AdamW keeps a 0-dim fp32 step per tensor on the device
        return model_states(p) - steps, p

    z1, p1 = states("zero1")
    # per-tensor rounding of the partitions: at most one element per tensor and state
    slack = 16 * tensors
    assert abs(z1 - deepspeed_zero2_gpu(psi, gpus)) <= slack
    z2, _ = states("zero2")
    assert abs(z2 - (deepspeed_zero2_gpu(psi, gpus) - 2 * psi * (gpus - 1) // gpus)) <= slack
    z3, p3 = states("zero3")
    assert p3.comm_buffer_bytes == 4 * largest
    assert abs(z3 - (deepspeed_zero3_gpu(psi, largest, gpus) + 2 * psi // gpus)) <= slack
    ddp = plan(m, precision="bf16-true", master_weights=True, batch_size=1, seq_len=32, devices=gpus)
    assert ddp.weight_bytes == 2 * psi and ddp.master_weight_bytes == 4 * psi and ddp.comm_buffer_bytes == 2 * psi
    assert p1.weight_bytes == 2 * psi and p3.weight_bytes == -(-2 * psi // gpus)


def _launch(tmp_path, parallel, preset, batch, seq, strategy=None):
    out = tmp_path / f"{parallel}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           str(WORKER), str(out), parallel, preset, str(batch), str(seq)] + ([strategy] if strategy else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(Path(f"{out}.{r}").read_text()) for r in (0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("parallel,strategy", [("fsdp", None), ("fsdp", "lora:8"), ("ddp", None)])
def test_per_process_memory_against_a_real_2_process_run(tmp_path, parallel, strategy):
    """The per-device plan against each process of a real 2-process gloo run: the Trainer's wrapping
    (FSDP2 fully_shard per block, then the root; or DDP) and its optimizer (make_optimizer: for-loop
    AdamW on FSDP2's DTensors, fused under DDP), one step measured after three warm-up steps.

    FSDP2 frees a block's all-gathered parameters when its gloo work completes, so between runs a
    process's peak can hold one block's parameters more (gpt-nano: 113,088 bytes, 3%)."""
    runs = _launch(tmp_path, parallel, "gpt-nano", 4, 64, strategy)
    p = plan(build("gpt-nano", device="meta"), strategy=strategy, batch_size=4, seq_len=64, device="cpu", devices=2,
             shard=parallel)
    for r in runs:
        assert p.weight_bytes == r["weights"] and p.optimizer_state_bytes == r["optimizer_state"]
        for phase in ("forward_peak", "backward_peak"):
            est, meas = getattr(p, phase + "_bytes"), r[phase]
            assert abs(est - meas) / meas < 0.05, (phase, est, meas)
        assert abs(p.peak_bytes - r["peak"]) / r["peak"] < 0.10, (p.peak_bytes, r["peak"])
    if parallel == "ddp":
        assert runs[0]["ddp_buckets"] == p.comm_buffer_bytes  # DDP's buckets: one copy of every gradient
    else:
        single = plan(build("gpt-nano", device="meta"), strategy=strategy, batch_size=4, seq_len=64, device="cpu")
        assert p.peak_bytes < single.peak_bytes  # sharding saves memory per device
