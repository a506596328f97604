"""Fine-tuning speed against the peers, measured side by side in one process.

1. LoRA (r=8 on query and value, batch 32 × 64 tokens) training steps of our
   minilm-l6 against transformers' BertForSequenceClassification + PEFT on the same
   packaged weights, alternating step by step. Target: ≥ 1.3× examples/s.
2. Head-only and top-2 fine-tuning over one epoch of sms-spam, with and without the
   frozen-prefix cache (the cache's own time included). Target: ≥ 3× for head-only.

Run: .venv/bin/python benchmarks/bench_finetune.py [--steps 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402


def lora_steps(steps: int, batch: int = 32, seq: int = 64) -> dict:
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import BertForSequenceClassification

    from layerwise.finetune import apply_strategy
    from layerwise.pretrained import load_minilm_l6, minilm_l6_files

    ours, _ = load_minilm_l6(head="sequence_classification", num_labels=2, classifier_pooling="mean")
    apply_strategy(ours, "lora:8:16", lora_targets=["query", "value"])
    hf = BertForSequenceClassification.from_pretrained(str(minilm_l6_files()["dir"]), num_labels=2)
    peft = get_peft_model(hf, LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"],
                                         task_type=TaskType.SEQ_CLS, lora_dropout=0.0))
    for m in (ours, peft):
        m.train()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1000, 20000, (batch, seq), generator=g)
    mask = torch.ones_like(x)
    y = torch.randint(0, 2, (batch,), generator=g)
    opt_o = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-3)
    opt_p = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=1e-3)

    def step_ours():
        loss = torch.nn.functional.cross_entropy(ours(x, attention_mask=mask), y)
        opt_o.zero_grad(set_to_none=True)
        loss.backward()
        opt_o.step()

    def step_peft():
        loss = peft(input_ids=x, attention_mask=mask, labels=y).loss
        opt_p.zero_grad(set_to_none=True)
        loss.backward()
        opt_p.step()

    for _ in range(2):  # warm up both
        step_ours()
        step_peft()
    t_o, t_p = [], []
    for _ in range(steps):
        t = time.perf_counter()
        step_ours()
        t_o.append(time.perf_counter() - t)
        t = time.perf_counter()
        step_peft()
        t_p.append(time.perf_counter() - t)
    o, p = statistics.median(t_o), statistics.median(t_p)
    return {"ours_ex_s": batch / o, "peft_ex_s": batch / p, "ratio": p / o,
            "trainable_ours": sum(q.numel() for q in ours.parameters() if q.requires_grad),
            "trainable_peft": peft.get_nb_trainable_parameters()[0]}


def cache_speedup(strategy: str, train_fraction: float) -> dict:
    from layerwise.finetune.run import default_lr, finetune
    from layerwise.train.config import TrainConfig

    out = {}
    for cache in (True, False):
        cfg = TrainConfig(epochs=1, batch_size=32, lr=default_lr(strategy), device="cpu", seed=0, log_every=1000)
        t = time.perf_counter()
        r = finetune("minilm-l6", "sms-spam", strategy, cfg, train_fraction=train_fraction, max_len=64,
                     cache="auto" if cache else False, val=0.0001, test=0.0001)
        out["cached" if cache else "uncached"] = {"seconds": time.perf_counter() - t, "train_s": r.train_seconds,
                                                  "cache": r.cache, "loss_first_last": (r.losses[0], r.losses[-1])}
    # the fixed cost (loading the model, tokenising) is the same in both; compare the training itself
    c = out["cached"]
    cached_s = c["train_s"] + (c["cache"]["seconds"] if c["cache"] else 0.0)
    out["speedup"] = out["uncached"]["train_s"] / cached_s
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--train-fraction", type=float, default=1.0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    r = lora_steps(args.steps)
    print(f"LoRA r=8 (q,v) minilm-l6, batch 32×64: layerwise {r['ours_ex_s']:.1f} ex/s, transformers+peft "
          f"{r['peft_ex_s']:.1f} ex/s → {r['ratio']:.2f}× (target ≥ 1.3×); trainable {r['trainable_ours']:,} vs "
          f"{r['trainable_peft']:,} (PEFT's includes the classifier it adds to modules_to_save)")
    for s in ("head", "top-2"):
        c = cache_speedup(s, args.train_fraction)
        print(f"{s}, one epoch: with the frozen-prefix cache {c['cached']['train_s']:.1f} s training + "
              f"{c['cached']['cache']['seconds']:.1f} s caching, without {c['uncached']['train_s']:.1f} s → "
              f"{c['speedup']:.1f}× (target ≥ 3× for head-only)")


if __name__ == "__main__":
    main()
