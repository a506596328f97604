"""`layerwise generate`: sample text from a language-model checkpoint."""

from __future__ import annotations

import sys

from layerwise.commands import nonnegative_int, positive_float, positive_int, unit_interval


def run(args) -> int:
    from layerwise.jobs.training import generate_text

    if args.greedy and (args.top_k is not None or args.top_p is not None or args.temperature is not None):
        flag = "--top-k" if args.top_k is not None else "--top-p" if args.top_p is not None else "--temperature"
        raise_conflict(flag)
    texts = generate_text(
        args.ckpt,
        prompt=args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=0.8 if args.temperature is None else args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        num_samples=args.num_samples,
        seed=args.seed,
        device=args.device,
        greedy=args.greedy,
        emit=lambda note: print(f"note: {note}", file=sys.stderr),
    )
    for i, t in enumerate(texts):
        if len(texts) > 1:
            sys.stdout.write(f"--- sample {i + 1}\n")
        sys.stdout.write(t + ("" if t.endswith("\n") else "\n"))
    return 0


def raise_conflict(flag: str) -> None:
    from layerwise.errors import ConfigError

    raise ConfigError(f"{flag} contradicts --greedy: greedy decoding takes the most likely token and does not sample")


def register(sub) -> None:
    p = sub.add_parser("generate", help="sample text from a language-model checkpoint")
    p.add_argument("--ckpt", required=True, help="run directory (its best checkpoint) or a checkpoint directory")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=nonnegative_int, default=200, help="tokens to generate after the prompt")
    p.add_argument("--temperature", type=positive_float, default=None,
                   help="sampling temperature: lower is more conservative (default: 0.8)")
    p.add_argument("--greedy", action="store_true", help="take the most likely token at every step instead of sampling")
    p.add_argument("--top-k", type=positive_int, default=None, help="sample from the K most likely tokens only")
    p.add_argument("--top-p", type=unit_interval, default=None, help="sample from the smallest set of tokens with probability >= P")
    p.add_argument("--num-samples", type=positive_int, default=1, help="how many continuations")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the sampling")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    p.set_defaults(func=run)
