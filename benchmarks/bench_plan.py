"""Planning speed: ``plan`` of a Llama-3.1-405B-shaped config built on the meta device.

Target: under 5 s per plan (a forward, loss and backward of 126 blocks on fake
tensors, plus the FLOP analysis), measured in a fresh subprocess so the numbers are
this job's own. Also reports the peak RSS: nothing of the 405B weights is allocated.

Run: .venv/bin/python benchmarks/bench_plan.py [--seq-len 2048] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

TARGET_S = 5.0

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
from layerwise.models import build
from layerwise.analysis.plan import plan
t_import = time.perf_counter()
model = build("llama-3.1-405b", device="meta")
t_build = time.perf_counter()
seq_len, strategy, precision = int(sys.argv[1]), sys.argv[2], sys.argv[3]
p = plan(model, strategy=None if strategy == "none" else strategy, precision=precision, batch_size=1, seq_len=seq_len)
t_end = time.perf_counter()
print(json.dumps({
    "params": p.params, "trainable": p.trainable, "peak_gib": p.peak_bytes / 2**30, "peak_phase": p.peak_phase,
    "import_s": t_import - t0, "build_s": t_build - t_import, "plan_s": t_end - t_build,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def bench(seq_len: int, strategy: str, precision: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(seq_len), strategy, precision],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ok = True
    for strategy, precision in (("none", "bf16-mixed"), ("lora:16", "bf16-true")):
        runs = [bench(args.seq_len, strategy, precision) for _ in range(args.rounds)]
        times = [r["plan_s"] for r in runs]
        r = runs[0]
        med = statistics.median(times)
        ok &= med < TARGET_S
        print(f"llama-3.1-405b  strategy={strategy:8s} {precision:10s} batch 1 × seq {args.seq_len}: "
              f"plan {med:.2f} s (median of {len(times)}: {', '.join(f'{t:.2f}' for t in times)}; target < {TARGET_S:g} s) "
              f"| build {r['build_s']:.2f} s | import {r['import_s']:.2f} s | peak RSS {max(x['peak_rss_mb'] for x in runs):.0f} MB "
              f"| params {r['params']:,}, trainable {r['trainable']:,} | planned peak {r['peak_gib']:,.1f} GiB "
              f"({r['peak_phase']})")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
