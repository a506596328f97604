"""The planner against real CPU training steps: the tables of docs/plan.md.

For every model × strategy × precision of tests/analysis/test_plan_measure.py, and for the
optimizers the Trainer builds, one real step is measured (``layerwise.jobs.plan.measure``: the
profiler's CPU allocator events) and printed next to the plan, as markdown. LSTMs are also shown
planned the old way (PyTorch's native RNN path), against the oneDNN step a CPU really runs.

Run: .venv/bin/python benchmarks/plan_accuracy.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from layerwise.jobs.plan import measure, plan
from layerwise.models import build

MODELS = {
    "gpt-nano": ("gpt-nano", {}, 8, 64),
    "llama-nano": ("llama-nano", {}, 8, 64),
    "bert-tiny (classifier)": ("bert-tiny", {"head": "sequence_classification"}, 8, 64),
    "resnet-tiny": ("resnet-tiny", {}, 16, None),
    "cnn-tiny": ("cnn-tiny", {}, 32, None),
    "rnn-tiny (2-layer bidirectional LSTM)": ("rnn-tiny", {"cell": "lstm"}, 8, 24),
    "seed-lstm (2 LSTM layers of 128)": ("seed-lstm", {}, 8, 40),
}
CASES = [
    ("gpt-nano", "full"), ("gpt-nano", "lora:8"), ("gpt-nano", "head"), ("gpt-nano", "top-2"),
    ("llama-nano", "lora:16"), ("llama-nano", "top-1"),
    ("bert-tiny (classifier)", "full"), ("bert-tiny (classifier)", "lora:8"), ("bert-tiny (classifier)", "head"),
    ("bert-tiny (classifier)", "top-1"),
    ("resnet-tiny", "full"), ("resnet-tiny", "head"), ("resnet-tiny", "top-2"), ("cnn-tiny", "full"),
    ("cnn-tiny", "head"),
    ("rnn-tiny (2-layer bidirectional LSTM)", "full"), ("rnn-tiny (2-layer bidirectional LSTM)", "head"),
    ("rnn-tiny (2-layer bidirectional LSTM)", "full+freeze:embedding"),
    ("seed-lstm (2 LSTM layers of 128)", "full"), ("seed-lstm (2 LSTM layers of 128)", "head"),
]
PRECISIONS = ("fp32", "bf16-mixed", "bf16-true")


def pct(x: float) -> str:
    return f"{x:+.2f}%".replace("-", "−")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fp32 only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}\n")
    precisions = ("fp32",) if args.quick else PRECISIONS
    print("| model | strategy | " + " | ".join(precisions) + " |")
    print("|---|---|" + "---:|" * len(precisions))
    worst = 0.0
    for name, strategy in CASES:
        preset, kw, batch, seq = MODELS[name]
        errs = []
        for prec in precisions:
            r = measure(build(preset, device="meta", **kw), strategy=strategy, precision=prec, batch_size=batch,
                        seq_len=seq, device="cpu")
            errs.append(r.peak_error_pct)
        worst = max(worst, *(abs(e) for e in errs))
        print(f"| {name} | {strategy} | " + " | ".join(pct(e) for e in errs) + " |")
    print(f"\nlargest error {worst:.2f}%\n")

    print("| optimizer (as the Trainer builds it) | implementation | state bytes planned = measured | peak error |")
    print("|---|---|---|---:|")
    for opt, mom in (("sgd", 0.9), ("sgd", 0.0), ("adagrad", 0.9), ("rmsprop", 0.9), ("rmsprop", 0.0), ("adam", 0.9),
                     ("adamw", 0.9)):
        r = measure(build("gpt-nano", device="meta"), strategy="top-2", optimizer=opt, momentum=mom, batch_size=4,
                    device="cpu")
        rows = {n: (e, m) for n, e, m, _ in r.rows()}
        e, m = rows["optimizer state"]
        label = opt + (f", momentum {mom:g}" if opt in ("sgd", "rmsprop") else "")
        print(f"| {label} | {r.optimizer_impl} | {e:,} = {m:,}: {e == m} | {pct(r.peak_error_pct)} |")

    print("\n| LSTM step on the CPU (measured: oneDNN's kernel) | strategy | precision | plan: native path | "
          "plan: oneDNN path | measured peak |")
    print("|---|---|---|---:|---:|---:|")
    for name in ("seed-lstm (2 LSTM layers of 128)", "rnn-tiny (2-layer bidirectional LSTM)"):
        preset, kw, batch, seq = MODELS[name]
        for strategy in ("full", "head"):
            for prec in ("fp32", "bf16-true"):
                m = build(preset, device="meta", **kw)
                r = measure(m, strategy=strategy, precision=prec, batch_size=batch, seq_len=seq, device="cpu")
                native = plan(m, strategy=strategy, precision=prec, batch_size=batch, seq_len=seq, device="cpu",
                              rnn_path="native")
                err = 100 * (native.peak_bytes - r.peak_bytes) / r.peak_bytes
                print(f"| {name} | {strategy} | {prec} | {native.peak_bytes:,} ({pct(err)}) | "
                      f"{r.plan.peak_bytes:,} ({pct(r.peak_error_pct)}) | {r.peak_bytes:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
