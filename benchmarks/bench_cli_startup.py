"""CLI start-up: `layerwise --help` (and one subcommand's --help) against the floor of a bare
`python -c pass` and the cost of `import torch`, each in a fresh process, alternating.

Target: `layerwise --help` under 0.5 s. Argument parsing must not import torch: every
command module imports heavy things inside its ``run``.

Run: .venv/bin/python benchmarks/bench_cli_startup.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "layerwise --help": [sys.executable, "-m", "layerwise", "--help"],
    "layerwise train --help": [sys.executable, "-m", "layerwise", "train", "--help"],
    "layerwise --version": [sys.executable, "-m", "layerwise", "--version"],
}


def once(cmd: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    times: dict[str, list[float]] = {k: [] for k in CASES}
    for _ in range(args.repeats):  # alternate, so machine load hits every case alike
        for name, cmd in CASES.items():
            times[name].append(once(cmd))
    torch_s = statistics.median(times["python -c 'import torch'"])
    print(f"{'command':<28} {'median s':>9} {'min s':>7} {'/ import torch':>15}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<28} {med:9.3f} {min(ts):7.3f} {med / torch_s:15.2f}")
    help_s = statistics.median(times["layerwise --help"])
    print(f"layerwise --help: {help_s:.3f} s median over {args.repeats} runs "
          f"({'under' if help_s < 0.5 else 'OVER'} the 0.5 s target)")


if __name__ == "__main__":
    main()
