"""Analysis speed and memory, side by side with the tools people would use instead.

1. The command a user runs, ``layerwise summary llama-3.1-405b --format json``, in a fresh
   process: wall time and peak RSS from ``/usr/bin/time -v`` (target: under 2 s and under
   500 MB), next to ``python -c "import torch"`` measured the same way, the floor no
   torch tool goes below on this machine.
2. Building the model on the meta device: layerwise's preset against transformers'
   ``LlamaForCausalLM`` from the same config (both skip weight initialisation on meta).
3. The analysis against torchinfo's ``summary`` on the same models and inputs, in one
   process, alternating rounds: layerwise ÷ torchinfo time (below 1 is faster).

Run: .venv/bin/python benchmarks/bench_analyze.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _timed_process(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one fresh process, from /usr/bin/time -v when present."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    gnu_time = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
    if gnu_time:
        r = subprocess.run([gnu_time, "-v", *argv], capture_output=True, text=True, env=env, check=True)
        wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", r.stderr)
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
        h, m, s = wall.groups()
        return int(h or 0) * 3600 + int(m) * 60 + float(s), int(rss.group(1)) / 1024
    t = time.perf_counter()
    subprocess.run(argv, capture_output=True, env=env, check=True)
    return time.perf_counter() - t, float("nan")


def bench_cli(rounds: int) -> dict:
    cli = [sys.executable, "-m", "layerwise", "summary", "llama-3.1-405b", "--format", "json"]
    floor = [sys.executable, "-c", "import torch"]
    ours, torch_only = [], []
    for _ in range(rounds):  # alternate so that machine noise hits both alike
        ours.append(_timed_process(cli))
        torch_only.append(_timed_process(floor))
    return {
        "wall_s": statistics.median(w for w, _ in ours),
        "peak_rss_mb": max(r for _, r in ours),
        "import_torch_s": statistics.median(w for w, _ in torch_only),
        "import_torch_rss_mb": max(r for _, r in torch_only),
    }


def bench_build(rounds: int) -> dict:
    import torch
    import transformers

    from layerwise.models import build, get_config

    cfg = get_config("llama-3.1-405b")
    hf_cfg = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_kv_head,
        max_position_embeddings=cfg.block_size, tie_word_embeddings=False)
    ours, theirs = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        m = build("llama-3.1-405b", device="meta")
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        with torch.device("meta"):
            h = transformers.LlamaForCausalLM(hf_cfg)
        theirs.append(time.perf_counter() - t)
    assert sum(p.numel() for p in m.parameters()) == h.num_parameters() == 405_853_388_800
    return {"layerwise_s": statistics.median(ours), "transformers_s": statistics.median(theirs)}


def bench_vs_torchinfo(rounds: int) -> list[dict]:
    import torch
    import torchinfo
    import transformers

    from layerwise.analysis import analyze
    from layerwise.models import build

    def meta_ids(n):
        return torch.zeros(1, n, dtype=torch.long, device="meta")

    with torch.device("meta"):
        hf_llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=8, vocab_size=128256))
    cases = [
        ("GPT-2 small (CPU weights, 1×128)", build("gpt2", device="cpu"), torch.zeros(1, 128, dtype=torch.long)),
        ("ResNet-50 (meta, 1×3×224×224)", build("resnet50", device="meta"), torch.zeros(1, 3, 224, 224, device="meta")),
        ("Llama-3-8B preset (meta, 1×128)", build("llama-3-8b", device="meta"), meta_ids(128)),
        ("transformers Llama-3-8B (meta, 1×128)", hf_llama, meta_ids(128)),
        ("Llama-3.1-405B preset (meta, 1×128)", build("llama-3.1-405b", device="meta"), meta_ids(128)),
    ]
    out = []
    for label, model, x in cases:
        dev = x.device.type
        analyze(model, inputs=(x,))  # first calls import and cache what both tools share
        torchinfo.summary(model, input_data=x, verbose=0, device=dev)
        ours, theirs = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            a = analyze(model, inputs=(x,))
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            s = torchinfo.summary(model, input_data=x, verbose=0, device=dev)
            theirs.append(time.perf_counter() - t)
        out.append({"model": label, "layerwise_s": statistics.median(ours), "torchinfo_s": statistics.median(theirs),
                    "ratio": statistics.median(ours) / statistics.median(theirs),
                    "layerwise_params": a.totals.params, "torchinfo_params": s.total_params})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    c = bench_cli(args.rounds)
    print("`layerwise summary llama-3.1-405b --format json`, fresh process (median of "
          f"{args.rounds}): {c['wall_s']:.2f} s wall, peak RSS {c['peak_rss_mb']:.0f} MB "
          "(targets: < 2 s, < 500 MB)")
    print(f"  floor, `python -c 'import torch'`: {c['import_torch_s']:.2f} s, {c['import_torch_rss_mb']:.0f} MB")
    b = bench_build(args.rounds)
    print(f"Build Llama-3.1-405B on meta: layerwise {b['layerwise_s']:.3f} s, transformers LlamaForCausalLM "
          f"{b['transformers_s']:.3f} s, layerwise/transformers = {b['layerwise_s'] / b['transformers_s']:.2f}×")
    print("Analysis vs torchinfo.summary, same model and input (median of rounds):")
    for r in bench_vs_torchinfo(args.rounds):
        print(f"  {r['model']}: layerwise {r['layerwise_s']:.3f} s, torchinfo {r['torchinfo_s']:.3f} s, "
              f"layerwise/torchinfo = {r['ratio']:.2f}× (params {r['layerwise_params']:,} vs torchinfo "
              f"{r['torchinfo_params']:,})")


if __name__ == "__main__":
    main()
