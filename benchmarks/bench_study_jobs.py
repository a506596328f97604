"""Which way of using the cores runs a depth study faster on this machine: one process
with every core's thread, one process with one thread, or one process per core?

The same sweep (the MLP family's default grid at depths 1, 4 and 16, one seed, 300 steps:
24 runs) runs once per setting, the settings interleaved over ``--rounds`` rounds, each
into its own run directory; the script prints the wall time of each and the ratios to
the issue's first guess (``--jobs 1`` with every core). The runs with one thread per process
are checked to give the same numbers (parallel workers change the speed, not the results);
another thread count splits the matrix sums differently, so the last digits move. Say whether the machine was loaded: other processes on 2 shared cores change
everything here.

Run: .venv/bin/python benchmarks/bench_study_jobs.py [--rounds 2] [--steps 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    from layerwise.jobs.studies.depth import depth_spec, run_depth_study
    from layerwise.jobs.studies.sweep import cores

    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--depths", default="1,4,16")
    args = p.parse_args()
    n = cores()
    settings = {f"--jobs 1 --threads {n} (every core)": (1, n),
                "--jobs 1 --threads 1": (1, 1),
                f"--jobs {n} --threads 1 (one process per core)": (n, 1)}
    spec = depth_spec("mlp", depths=[int(d) for d in args.depths.split(",")], seeds=1, steps=args.steps)
    times: dict[str, list[float]] = {k: [] for k in settings}
    losses = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, (jobs, threads) in settings.items():
                out = Path(tmp) / f"{r}-{jobs}-{threads}"
                t = time.perf_counter()
                doc = run_depth_study(out, spec, jobs=jobs, threads=threads)
                times[name].append(time.perf_counter() - t)
                losses[name] = [(x["train"] or {}).get("loss") for x in doc["runs"]]
                print(f"round {r + 1}: {name}: {times[name][-1]:.1f} s", flush=True)
    ref = next(iter(settings))
    print(f"\n{len(spec.depths) * 8} runs of {args.steps} steps; {n} cores; load average {os.getloadavg()[0]:.1f} at the end")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:52s} median {med:7.1f} s   {statistics.median(times[ref]) / med:5.2f}x the speed of every core in one process")
    one = [k for k, (_, t) in settings.items() if t == 1]
    same = all(losses[k] == losses[one[0]] for k in one)
    diff = max(abs(a - b) / abs(b) for a, b in zip(losses[ref], losses[one[0]]) if a is not None and b is not None)
    print(f"identical final losses in the one-thread settings (one process or {n}): {same}; "
          f"{n} threads against one: largest relative difference {diff:.2e} (the threads split the sums differently)")


if __name__ == "__main__":
    main()
