"""Planning speed: ``layerwise plan llama-3.1-405b`` (126 blocks, built on the meta device).

Two measurements, each in fresh subprocesses so the numbers are this job's own:

1. the command as a user runs it, ``layerwise plan llama-3.1-405b --format json``: wall time
   and peak RSS (target: under 3 s wall);
2. the planner side by side with its own peer, the whole trace of all 126 blocks
   (``extrapolate=False``), which the extrapolation from 2, 3 and 4 traced blocks replaces:
   plan time of each and the ratio, and that both plans agree to the byte.

Run: .venv/bin/python benchmarks/bench_plan.py [--rounds 3] [--seq-len 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

TARGET_S = 3.0

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
from layerwise.models import build
from layerwise.jobs.plan import plan
t_import = time.perf_counter()
model = build("llama-3.1-405b", device="meta")
t_build = time.perf_counter()
seq_len, strategy, precision = int(sys.argv[1]), sys.argv[2], sys.argv[3]
out = {}
for extrapolate in (True, False):
    t = time.perf_counter()
    p = plan(model, strategy=None if strategy == "none" else strategy, precision=precision, batch_size=1,
             seq_len=seq_len, extrapolate=extrapolate)
    out["extrapolated" if extrapolate else "whole"] = {"seconds": time.perf_counter() - t, "peak": p.peak_bytes,
                                                       "flops": p.flops_per_step}
out.update(import_s=t_import - t0, build_s=t_build - t_import,
           peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps(out))
"""


def cli_wall() -> tuple[float, float]:
    t = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "layerwise", "plan", "llama-3.1-405b",
                           "--format", "json"], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    json.loads(proc.stdout)
    return wall, int(proc.stderr.strip().splitlines()[-1]) / 1024


def side_by_side(seq_len: int, strategy: str, precision: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(seq_len), strategy, precision],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    walls = [cli_wall() for _ in range(args.rounds)]
    med = statistics.median(w for w, _ in walls)
    print(f"layerwise plan llama-3.1-405b --format json: {med:.2f} s wall (median of {args.rounds}: "
          f"{', '.join(f'{w:.2f}' for w, _ in walls)}; target < {TARGET_S:g} s), peak RSS {max(r for _, r in walls):.0f} MB")
    ok = med < TARGET_S
    for strategy, precision in (("none", "bf16-mixed"), ("lora:16", "bf16-true")):
        r = side_by_side(args.seq_len, strategy, precision)
        e, w = r["extrapolated"], r["whole"]
        same = e["peak"] == w["peak"] and e["flops"] == w["flops"]
        ok &= same
        print(f"  {strategy:8s} {precision:10s} batch 1 × {args.seq_len}: extrapolated {e['seconds']:.2f} s, whole trace "
              f"{w['seconds']:.2f} s ({w['seconds'] / e['seconds']:.1f}× slower); same peak and FLOPs: {same} "
              f"(peak {e['peak'] / 2**30:,.1f} GiB); build {r['build_s']:.2f} s, import {r['import_s']:.2f} s")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
