"""`layerwise export RUN --to merged|hf|peft [--out-dir DIR]`: a run's model for other tools."""

from __future__ import annotations


def run(args) -> int:
    from layerwise.jobs.export import export_run

    out = args.out_dir or f"{str(args.run).rstrip('/')}-{args.to}"
    path = export_run(args.run, args.to, out, overwrite=args.overwrite)
    hints = {"merged": "layerwise eval/predict/summary can read it",
             "hf": "transformers' AutoModelFor...from_pretrained(DIR) loads it",
             "peft": "peft.PeftModel.from_pretrained(AutoModelFor...from_pretrained(DIR/base), DIR) loads it"}
    print(f"exported to {path} ({hints[args.to]})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="export a run: LoRA merged into the weights, a transformers directory, or a PEFT adapter")
    p.add_argument("run", metavar="RUN", help="run directory (its best checkpoint) or checkpoint directory")
    p.add_argument("--to", required=True, choices=["merged", "hf", "peft"], help="what to write")
    p.add_argument("--out-dir", "--out", dest="out_dir", default=None, help="where (default RUN-TO next to the run)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous export in --out-dir")
    p.set_defaults(func=run)
