"""Analysis speed and memory.

1. ``analyze`` of a Llama-3.1-405B-shaped config built on the meta device:
   target under 3 s and under 500 MB peak RSS (measured in a fresh subprocess so
   the number is this job's own).
2. GPT-2 small: our full analysis (parameters, depth, FLOPs) next to torchinfo's
   ``summary`` on the same model in the same process, alternating, with the ratio.

Run: .venv/bin/python benchmarks/bench_analyze.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
from layerwise.models import build
from layerwise.analysis import analyze
t_import = time.perf_counter()
model = build("llama-3.1-405b", device="meta")
t_build = time.perf_counter()
a = analyze(model, seq_len=int(sys.argv[1]))
t_end = time.perf_counter()
print(json.dumps({
    "params": a.totals.params, "weight_depth": a.depth.weight_depth, "block_depth": a.depth.block_depth,
    "import_s": t_import - t0, "build_s": t_build - t_import, "analyze_s": t_end - t_build,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def bench_405b(seq_len: int = 2048) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(seq_len)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_gpt2_vs_torchinfo(rounds: int = 5) -> dict:
    import torch
    import torchinfo

    from layerwise.analysis import analyze
    from layerwise.models import build

    model = build("gpt2", device="cpu")
    x = torch.zeros(1, 128, dtype=torch.long)
    ours, theirs = [], []
    for _ in range(rounds):  # alternate so that machine noise hits both alike
        t = time.perf_counter()
        a = analyze(model, inputs=(x,))
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        s = torchinfo.summary(model, input_data=x, verbose=0, device="cpu")
        theirs.append(time.perf_counter() - t)
    return {
        "ours_s": statistics.median(ours),
        "torchinfo_s": statistics.median(theirs),
        "ratio_torchinfo_over_ours": statistics.median(theirs) / statistics.median(ours),
        "ours_params": a.totals.params,
        "torchinfo_params": s.total_params,
    }


def main() -> None:
    r = bench_405b()
    print(f"Llama-3.1-405B on meta: {r['params']:,} params, weight_depth {r['weight_depth']}, "
          f"block_depth {r['block_depth']}")
    print(f"  build {r['build_s']:.2f} s, analyze {r['analyze_s']:.2f} s (target < 3 s), "
          f"peak RSS {r['peak_rss_mb']:.0f} MB (target < 500 MB; includes torch itself)")
    g = bench_gpt2_vs_torchinfo()
    print(f"GPT-2 small, 1×128 tokens, CPU weights: layerwise {g['ours_s']:.3f} s, torchinfo {g['torchinfo_s']:.3f} s, "
          f"torchinfo/layerwise = {g['ratio_torchinfo_over_ours']:.2f}×")
    print(f"  parameters: layerwise {g['ours_params']:,} (tied head once), torchinfo {g['torchinfo_params']:,}")


if __name__ == "__main__":
    main()
