"""`layerwise generate`: sample text from a language-model checkpoint."""

from __future__ import annotations

import sys


def run(args) -> int:
    from layerwise.jobs.training import generate_text

    texts = generate_text(
        args.ckpt,
        prompt=args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        num_samples=args.num_samples,
        seed=args.seed,
        device=args.device,
    )
    for i, t in enumerate(texts):
        if len(texts) > 1:
            sys.stdout.write(f"--- sample {i + 1}\n")
        sys.stdout.write(t + ("" if t.endswith("\n") else "\n"))
    return 0


def register(sub) -> None:
    p = sub.add_parser("generate", help="sample text from a language-model checkpoint")
    p.add_argument("--ckpt", required=True, help="run directory (its best checkpoint) or a checkpoint directory")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)
