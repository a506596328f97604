"""Run by tests/analysis/test_plan_devices.py under torchrun (2 CPU processes, gloo): one training
step of a model wrapped as the Trainer wraps it for ``parallel="fsdp"`` (FSDP2 ``fully_shard`` per
block, then the root) with the Trainer's optimizer, measured per process with torch.profiler on the
CPU allocator. argv: out.json parallel(fsdp|ddp) preset batch-per-process seq-len [strategy]."""

import gc
import json
import sys

import torch

from layerwise.analysis.memory import default_loss, storage_bytes
from layerwise.finetune import apply_strategy
from layerwise.jobs.plan import profiler_phases
from layerwise.models import build
from layerwise.train import distributed as D
from layerwise.train.optim import make_optimizer

out, parallel, preset, batch, seq = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
strategy = sys.argv[6] if len(sys.argv) > 6 else None
torch.set_num_threads(1)
info = D.init_distributed("cpu")
torch.manual_seed(0)
model = build(preset)
if strategy:
    apply_strategy(model, strategy)
base = model
from torch.profiler import ProfilerActivity, profile

model = D.wrap(model, info, parallel, torch.device("cpu"))
opt = make_optimizer(model if parallel == "fsdp" else base, "adamw", lr=1e-4)
(ids,) = base.example_inputs(batch_size=batch, seq_len=seq)


def local(t):
    return t.to_local() if hasattr(t, "to_local") else t


def step(marks: bool) -> None:
    import contextlib

    from torch.profiler import record_function

    def span(name):
        return record_function(f"layerwise::{name}") if marks else contextlib.nullcontext()

    with span("forward"):
        logits = model(ids).logits
        with span("loss"):
            loss = default_loss(logits)
    with span("backward"):
        loss.backward()
    del logits, loss
    with span("step"):
        opt.step()
    opt.zero_grad(set_to_none=True)


# three warm-up steps (the optimizer state; DDP rebuilds its buckets once, in the second forward),
# profiled with the measured third so that every free in it is of a block the profiler saw allocated
with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
    for _ in range(3):
        step(False)
    gc.collect()
    state = [local(v) for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    params = [local(p) for p in model.parameters()]
    persistent = storage_bytes(params + [local(b) for b in model.buffers()] + state + [ids])
    buckets = 0
    if parallel == "ddp":  # DDP's gradient buckets: flat tensors its Reducer keeps, sizes as DDP reports them
        buckets = sum(int(b) for b in model._get_ddp_logging_data()["bucket_sizes"].split(", "))
        persistent += buckets
    step(True)
live = profiler_phases(prof)
doc = {"rank": info.rank, "parallel": parallel, "persistent": persistent, "ddp_buckets": buckets, "weights": storage_bytes(params),
       "optimizer_state": storage_bytes(state), "forward_peak": persistent + live["forward_peak"],
       "backward_peak": persistent + live["backward_peak"], "step_peak": persistent + live["step_peak"]}
doc["peak"] = max(doc["forward_peak"], doc["backward_peak"], doc["step_peak"])
with open(f"{out}.{info.rank}", "w") as f:
    json.dump(doc, f)
D.close(info)
