"""Baby character-level GPT on shakespeare-1m: layerwise's Trainer against a plain
nanoGPT-style loop, same model class, data, shape and hyper-parameters.

Shape and hyper-parameters are nanoGPT's CPU "baby GPT" (its README:
``config/train_shakespeare_char.py --device=cpu --compile=False --block_size=64
--batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000
--dropout=0.0``): AdamW lr 1e-3, betas (0.9, 0.99), weight decay 0.1, 100 warmup steps,
cosine to 1e-4, gradient clipping at 1.0.

The reference loop below is written the way nanoGPT's train.py works (random windows
from a global generator, its own warmup/cosine formula, weight decay on every >= 2-D
parameter, embeddings included) and knows nothing of layerwise.train. Both models are
evaluated by the same function on the whole validation split (the last 10% of the
text). The Trainer also runs in bf16 (autocast) to check the loss is not worse.

Run: .venv/bin/python benchmarks/bench_baby_gpt.py [--steps 2000] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

BATCH, BLOCK = 12, 64
LR, MIN_LR, WARMUP = 1e-3, 1e-4, 100
BETAS, WEIGHT_DECAY, CLIP = (0.9, 0.99), 0.1, 1.0


def load_data(cache_dir: str | None = None):
    from layerwise.data import TokenStream, load_dataset, split
    from layerwise.data.tokenizers import CharTokenizer

    corpus = load_dataset("shakespeare-1m")
    parts = split(corpus, val=0.1, test=0.0)
    tok = CharTokenizer.from_text(corpus.text)
    return tok, TokenStream.from_corpus(parts.train, tok, cache_dir), TokenStream.from_corpus(parts.val, tok, cache_dir)


def baby_model(vocab_size: int, seed: int = 0):
    from layerwise.models import build

    torch.manual_seed(seed)
    return build("gpt-baby-char", vocab_size=vocab_size, block_size=BLOCK, dropout=0.0)


def reference_loop(model, train_tokens, steps: int, seed: int = 0, batches=None) -> list[float]:
    """A minimal nanoGPT-style training loop; returns the loss of every step.

    batches: optional function step -> (x, y) to feed exactly the batches another loop saw
    (default: nanoGPT's sampling from the global generator).
    """
    data = torch.from_numpy(train_tokens.astype("int64"))
    torch.manual_seed(seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR, betas=BETAS, fused=True,
    )

    def get_lr(it: int) -> float:  # nanoGPT's schedule
        if it < WARMUP:
            return LR * (it + 1) / (WARMUP + 1)
        ratio = (it - WARMUP) / (steps - WARMUP)
        return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)

    losses = []
    model.train()
    for it in range(steps):
        for g in opt.param_groups:
            g["lr"] = get_lr(it)
        if batches is not None:
            x, y = batches(it)
        else:
            ix = torch.randint(len(data) - BLOCK, (BATCH,))
            x = torch.stack([data[i : i + BLOCK] for i in ix])
            y = torch.stack([data[i + 1 : i + 1 + BLOCK] for i in ix])
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def val_loss(model, stream, batch_size: int = 64) -> float:
    """Mean next-token cross-entropy over every non-overlapping window of the split."""
    model.eval()
    total, count = 0.0, 0
    for x, y in stream.iter_sequential(batch_size, BLOCK):
        total += model(x, y).loss.item() * y.numel()
        count += y.numel()
    model.train()
    return total / count


def trainer_run(model, train_stream, val_stream, steps: int, seed: int = 0, precision: str = "fp32", out_dir: str | None = None):
    from layerwise.train import LanguageModelTask, TrainConfig, train

    cfg = TrainConfig(
        steps=steps, batch_size=BATCH, lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY, clip_grad_norm=CLIP,
        schedule="cosine", warmup_steps=min(WARMUP, steps), min_lr=MIN_LR, eval_every=max(steps // 4, 1),
        eval_steps=20, log_every=50, precision=precision, seed=seed, out_dir=out_dir,
    )
    return train(model, LanguageModelTask(BLOCK), train_stream, val_stream, cfg)


def sample(model, tok, n: int = 400, seed: int = 0) -> str:
    from layerwise.models.gpt import generate

    x = torch.tensor([tok.encode("\n")])
    g = torch.Generator().manual_seed(seed)
    return tok.decode(generate(model, x, n, temperature=0.8, generator=g)[0].tolist())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="one row set per seed (init and data order)")
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--out", default=None, help="run directory for the first seed's fp32 Trainer run")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from layerwise.train import TokenBatches

    tok, train_stream, val_stream = load_data()
    print(f"shakespeare-1m: {len(train_stream):,} train / {len(val_stream):,} val characters, vocab {tok.vocab_size}; "
          f"{args.steps} steps, batch {BATCH} x {BLOCK}, torch threads {torch.get_num_threads()}")
    rows: list[tuple[int, str, float, float]] = []  # seed, run, val loss, seconds
    ours = None
    for seed in args.seeds:
        m = baby_model(tok.vocab_size, seed)
        t = time.perf_counter()
        reference_loop(m, train_stream.tokens, args.steps, seed)
        rows.append((seed, "plain loop, its own sampling", val_loss(m, val_stream), time.perf_counter() - t))

        if seed == args.seeds[0]:  # on the same batches the two loops agree; once is enough
            m = baby_model(tok.vocab_size, seed)
            same = TokenBatches(train_stream, BATCH, BLOCK, seed=seed)  # the batches the Trainer draws
            t = time.perf_counter()
            reference_loop(m, train_stream.tokens, args.steps, seed, batches=same.batch)
            rows.append((seed, "plain loop, the Trainer's batches", val_loss(m, val_stream), time.perf_counter() - t))

        model = baby_model(tok.vocab_size, seed)
        t = time.perf_counter()
        res = trainer_run(model, train_stream, val_stream, args.steps, seed, out_dir=args.out if seed == args.seeds[0] else None)
        rows.append((seed, "layerwise Trainer fp32", val_loss(model, val_stream), time.perf_counter() - t))
        if ours is None:
            ours, ours_res = model, res

        if not args.no_bf16 and seed == args.seeds[0]:
            b = baby_model(tok.vocab_size, seed)
            t = time.perf_counter()
            trainer_run(b, train_stream, val_stream, args.steps, seed, precision="bf16")
            rows.append((seed, "layerwise Trainer bf16 autocast", val_loss(b, val_stream), time.perf_counter() - t))

    print(f"\n{'seed':>4s}  {'run':34s} {'val loss':>9s} {'seconds':>8s}")
    for seed, name, vl, sec in rows:
        print(f"{seed:4d}  {name:34s} {vl:9.4f} {sec:8.1f}")
    names = list(dict.fromkeys(r[1] for r in rows))
    if len(args.seeds) > 1:
        print("\nmean over seeds (± standard error of the mean):")
        for n in names:
            v = [r[2] for r in rows if r[1] == n]
            se = f" ± {statistics.stdev(v) / math.sqrt(len(v)):.4f}" if len(v) > 1 else "         "
            print(f"      {n:34s} {statistics.mean(v):9.4f}{se}  ({len(v)} run{'s' if len(v) > 1 else ''})")
        ours_v = {r[0]: r[2] for r in rows if r[1] == "layerwise Trainer fp32"}
        ref_v = {r[0]: r[2] for r in rows if r[1] == "plain loop, its own sampling"}
        d = [ours_v[k] - ref_v[k] for k in ours_v]  # same seed: same initial weights
        print(f"      Trainer − plain loop (own sampling), paired by seed: {statistics.mean(d):+.4f} ± "
              f"{statistics.stdev(d) / math.sqrt(len(d)):.4f}; Trainer lower in {sum(x < 0 for x in d)} of {len(d)} seeds")
    mfu = sorted(r["mfu"] for r in ours_res.history if r.get("mfu"))
    print(f"\nTrainer fp32 MFU (median of log windows, vs the measured matmul peak {ours_res.peak_flops / 1e9:.0f} GFLOP/s): "
          f"{100 * mfu[len(mfu) // 2]:.1f}%")
    print(f"\nsample from the Trainer's model (seed {args.seeds[0]}, temperature 0.8):\n" + sample(ours, tok, seed=args.seeds[0]))


if __name__ == "__main__":
    main()
