"""`layerwise demo`: the main job end to end."""

from __future__ import annotations

from pathlib import Path

def run(args) -> int:
    from layerwise.demo import run_demo

    written = run_demo(out_dir=Path(args.out), quick=args.quick, emit=lambda s: print(s, flush=True))
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def register(sub) -> None:
    d = sub.add_parser("demo", help="the main job end to end on built-in data")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--quick", action="store_true", help="a one-minute version")
    d.set_defaults(func=run)
