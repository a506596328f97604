"""`layerwise demo`: the main job end to end (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path


def run(args) -> int:
    from layerwise.commands._training import Progress
    from layerwise.jobs.demo import run_demo

    progress = Progress(enabled=not args.no_progress)
    try:
        run_demo(out_dir=Path(args.out), quick=args.quick, emit=lambda s: print(s, flush=True), progress=progress,
                 overwrite=args.overwrite)
    finally:
        progress.close()
    return 0


def register(sub) -> None:
    d = sub.add_parser("demo", help="the main job end to end on built-in data (writes RUN_DIR/report.html)")
    d.add_argument("--out", "--out-dir", dest="out", default="runs/demo",
                   help="run directory (default runs/demo; a previous demo there is replaced)")
    d.add_argument("--overwrite", action="store_true", help="replace a run there that is not a demo")
    d.add_argument("--quick", action="store_true", help="a one-minute version")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=run)
