"""Training-step speed: layerwise's GPT against transformers' GPT2LMHeadModel, same shape.

Both models: GPT-2 architecture (learned positions, LayerNorm, tanh-GELU MLP, tied head),
no dropout, a 65-token character vocabulary, AdamW with torch's fused kernel. One step =
forward with targets, backward, optimizer step. The two models are timed alternately in
one process (order swapped every round) so machine noise hits both alike. On a shared
CPU a timed block can be many times slower when another process takes a core (OpenMP
threads then wait for each other), so the *best* block of each is what the ratio and MFU
use (as ``timeit`` does); the median is printed beside it.

MFU: training FLOPs of one step from ``layerwise.analysis.analyze`` (2 FLOPs per MAC,
forward + backward, attention counted dense) divided by the step time and by the matmul
peak *measured in this run* (best square ``torch.mm``, fp32 and bf16).

Shapes: the baby GPT (4 layers, 4 heads, 128 wide, context 64, batch 12) and
6 layers x 6 heads x 384 wide, context 256, batch 8; bf16 autocast against fp32 at the
larger shape.

Run: .venv/bin/python benchmarks/bench_train_gpt.py [--rounds 7] [--steps 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch

VOCAB = 65
SHAPES = {
    "baby 4x4x128, T=64, B=12": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block": 64, "batch": 12},
    "6x6x384, T=256, B=8": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block": 256, "batch": 8},
}


def ours(s: dict):
    from layerwise.models import build

    torch.manual_seed(0)
    return build("gpt-nano", vocab_size=VOCAB, block_size=s["block"], n_layer=s["n_layer"], n_head=s["n_head"],
                 n_embd=s["n_embd"], mlp="gelu_tanh", dropout=0.0)


def theirs(s: dict):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=s["block"], n_embd=s["n_embd"], n_layer=s["n_layer"], n_head=s["n_head"],
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="sdpa")
    return GPT2LMHeadModel(cfg)


def make_step(model, x, y, hf: bool, bf16: bool = False):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    model.train()

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=x, labels=x).loss if hf else model(x, y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def time_steps(step, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t) / n


def alternate(steps: dict, rounds: int, n: int) -> dict[str, tuple[float, float]]:
    """(best, median) seconds per step of each named step function, timed in alternation."""
    for f in steps.values():
        f()  # warm up: allocations, oneDNN primitives
        f()
    times: dict[str, list[float]] = {k: [] for k in steps}
    names = list(steps)
    for r in range(rounds):
        for k in names if r % 2 == 0 else reversed(names):
            times[k].append(time_steps(steps[k], n))
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5, help="steps per timed block")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    from layerwise.analysis import analyze
    from layerwise.train.perf import matmul_peak_flops

    peak32 = matmul_peak_flops("cpu", torch.float32, size=1024, repeats=10)
    peak16 = matmul_peak_flops("cpu", torch.bfloat16, size=1024, repeats=10)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"measured matmul peak (1024^3 torch.mm): fp32 {peak32 / 1e9:.0f} GFLOP/s, bf16 {peak16 / 1e9:.0f} GFLOP/s\n")
    for name, s in SHAPES.items():
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, VOCAB, (s["batch"], s["block"]), generator=g)
        y = torch.randint(0, VOCAB, (s["batch"], s["block"]), generator=g)
        a, b = ours(s), theirs(s)
        na = sum(p.numel() for p in a.parameters())
        nb = sum(p.numel() for p in b.parameters())
        assert na == nb, (na, nb)
        flops = analyze(a, inputs=(x,)).totals.flops_train
        steps = {"layerwise fp32": make_step(a, x, y, hf=False), "transformers fp32": make_step(b, x, y, hf=True)}
        big = s["n_embd"] == 384
        if big:
            steps["layerwise bf16"] = make_step(ours(s), x, y, hf=False, bf16=True)
        med = alternate(steps, args.rounds, args.steps)
        print(f"{name}: {na:,} parameters, {flops / 1e9:.2f} GFLOP per training step")
        for k, (t, m) in med.items():
            peak = peak16 if "bf16" in k else peak32
            print(f"  {k:18s} best {1000 * t:7.1f} ms/step (median {1000 * m:7.1f})  {s['batch'] * s['block'] / t:8,.0f} tokens/s"
                  f"   MFU {100 * flops / t / peak:5.1f}% of the {'bf16' if 'bf16' in k else 'fp32'} peak")
        best = {k: v[0] for k, v in med.items()}
        print(f"  speed-up over transformers (fp32): {best['transformers fp32'] / best['layerwise fp32']:.2f}x")
        if big:
            print(f"  bf16 speed-up over our fp32:       {best['layerwise fp32'] / best['layerwise bf16']:.2f}x"
                  f" (bf16 step at {100 * flops / best['layerwise bf16'] / peak32:.0f}% of the fp32 peak)")
        print()


if __name__ == "__main__":
    main()
