"""Run by tests/train/test_distributed.py under torchrun (or alone): train a tiny GPT and
write the logged losses to argv[1]. argv[2]: "ddp" or "fsdp"; argv[3]: run directory or "-";
argv[4]: optimizer steps (default 8); argv[5]: "resume" to continue the run directory."""

import json
import os
import sys

import numpy as np
import torch

from layerwise.data import TokenStream
from layerwise.models import build
from layerwise.train import LanguageModelTask, TrainConfig, train

out, parallel, run_dir = sys.argv[1], sys.argv[2], sys.argv[3]
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 8
resume = len(sys.argv) > 5 and sys.argv[5] == "resume"
rng = np.random.default_rng(0)
tokens = TokenStream((np.cumsum(rng.choice([1, 1, 2], 6000)) % 32).astype(np.uint16))
val = TokenStream((np.cumsum(rng.choice([1, 1, 2], 1000)) % 32).astype(np.uint16))
torch.manual_seed(0)
model = build("gpt-nano", vocab_size=32, block_size=16)
cfg = TrainConfig(
    steps=steps, batch_size=8, grad_accum=2, lr=3e-3, clip_grad_norm=1.0, weight_decay=0.1, log_every=1,
    eval_every=4, parallel=parallel, num_threads=1, out_dir=None if run_dir == "-" else run_dir, checkpoint_every=4,
)
res = train(model, LanguageModelTask(16), tokens, val, cfg, resume=resume)
# the threads still running in this process after train() (Linux names them in /proc)
threads = [open(f"/proc/self/task/{t}/comm").read().strip() for t in sorted(os.listdir("/proc/self/task"))]
if os.environ.get("RANK", "0") == "0":
    with open(out, "w") as f:
        json.dump({"losses": res.losses, "val": [r["loss"] for r in res.evals], "threads": threads}, f)
