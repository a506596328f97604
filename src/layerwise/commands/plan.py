"""`layerwise plan`: memory and compute of one training step, per fine-tuning strategy.

    layerwise plan TARGET --strategy lora:16 --optimizer adamw --precision bf16-mixed --batch 8 --seq-len 2048
    layerwise plan TARGET --compare-strategies --plot plan.png
    layerwise plan TARGET --inference --context 8192
    layerwise plan TARGET --measure            # run a real step and report the estimate's error
"""

from __future__ import annotations

import sys
from pathlib import Path

from layerwise.commands import positive_float, positive_int


def run(args) -> int:
    import dataclasses
    import json

    import torch

    from layerwise.report.plan import comparison_table, compute_table, inference_table, measurement_table, plan_table, plot_plans, render
    from layerwise.analysis.plan import COMPARE_STRATEGIES, compare_strategies, measure, plan, plan_inference
    from layerwise.errors import LayerwiseError
    from layerwise.targets import parse_shape, resolve

    from layerwise.io import PLOT_SUFFIXES, TEXT_SUFFIXES, check_output_file

    if args.output:  # every output is checked before any work is done
        check_output_file(args.output, TEXT_SUFFIXES, "--output")
    if args.plot:
        check_output_file(args.plot, PLOT_SUFFIXES, "--plot")
    target = resolve(args.target, device="meta")
    model = target.model
    shape = parse_shape(args.input_shape) if args.input_shape else None
    if shape is None and not hasattr(model, "example_inputs") and target.source == "hf-config":
        shape = [args.batch, args.seq_len or 128]
    device = args.device
    if args.measure and args.master_weights:
        raise LayerwiseError("--measure runs torch's own optimizers, which keep no fp32 master copy; drop --master-weights")
    if args.measure:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cuda" and not torch.cuda.is_available():
            raise LayerwiseError("--measure --device cuda: CUDA is not available here; use --device cpu")
    device = device or "cuda"
    common = dict(optimizer=args.optimizer, precision=args.precision, batch_size=args.batch, seq_len=args.seq_len,
                  input_shape=shape, grad_checkpointing=args.grad_checkpointing, name=target.name)
    docs: dict = {}
    tables = []
    plans = []
    notes_extra: list[str] = []
    if args.inference:
        inf = plan_inference(model, precision=args.precision, batch_size=args.batch,
                             context=args.context or args.seq_len or 2048, name=target.name)
        docs["inference"] = inf
        tables.append(inference_table(inf))
    elif args.compare_strategies is not None:
        names = [s for s in args.compare_strategies.split(",") if s] if args.compare_strategies else list(COMPARE_STRATEGIES)
        skipped: dict[str, str] = {}
        plans = compare_strategies(model, names, skipped=skipped, tflops=args.tflops, device=device,
                                   master_weights=args.master_weights, **common)
        docs["plans"] = plans
        tables.append(comparison_table(plans))
        notes_extra = [f"skipped {k}: {v}" for k, v in skipped.items()]
    elif args.measure:
        m = measure(model, strategy=args.strategy, device=device, **common)
        plans = [m.plan]
        docs["measurement"] = m
        tables += [plan_table(m.plan), measurement_table(m)]
    else:
        p = plan(model, strategy=args.strategy, tflops=args.tflops, device=device,
                 master_weights=args.master_weights, **common)
        plans = [p]
        docs["plan"] = p
        tables += [plan_table(p), compute_table(p)]
    if args.format == "json":
        out = {}
        for k, v in docs.items():
            if isinstance(v, list):
                out[k] = [x.to_dict() for x in v]
            else:
                out[k] = v.to_dict() if hasattr(v, "to_dict") else dataclasses.asdict(v)
        text = json.dumps(out, indent=2) + "\n"
    else:
        text = render(tables)
        for note in notes_extra + (plans[0].notes if plans else []):
            text += f"note: {note}\n"
    if args.output:
        from layerwise.io import atomic_write_text

        atomic_write_text(Path(args.output), text)
    else:
        sys.stdout.write(text)
    if args.plot:
        if not plans:
            raise LayerwiseError("--plot draws training plans; it does not apply to --inference")
        plot_plans(plans, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def register(sub) -> None:
    s = sub.add_parser("plan", help="memory and compute of a training step per fine-tuning strategy (--measure checks it)")
    s.add_argument("target", metavar="TARGET",
                   help="preset name, layerwise config (.json/.toml), Hugging Face config.json, or package.module:factory")
    s.add_argument("--strategy", default=None,
                   help="fine-tuning strategy: full, head, top-K, bitfit, lora:R[:ALPHA], adapter:SIZE, … joined with +")
    s.add_argument("--optimizer", default="adamw",
                   help="adamw, adam, sgd, sgd-momentum, adagrad, rmsprop, rmsprop-momentum (default adamw)")
    s.add_argument("--precision", default="fp32", help="fp32, bf16-mixed, fp16-mixed, bf16-true, fp16-true (default fp32)")
    s.add_argument("--batch", "--batch-size", dest="batch", type=positive_int, default=1, help="batch size")
    s.add_argument("--seq-len", type=positive_int, default=None, help="sequence length for sequence models")
    s.add_argument("--input-shape", help="input shape instead of batch/seq-len, e.g. 8,3,224,224")
    s.add_argument("--grad-checkpointing", action="store_true", help="recompute each block in the backward")
    s.add_argument("--master-weights", action="store_true", help="with bf16-true/fp16-true: fp32 master weights and optimizer state")
    s.add_argument("--device", choices=["cuda", "cpu"], default=None,
                   help="where the step runs: torch's optimizers are foreach on cuda (default), per tensor on cpu")
    s.add_argument("--tflops", type=positive_float, default=None, help="achieved TFLOP/s, for the time per step")
    s.add_argument("--compare-strategies", nargs="?", const="", default=None, metavar="LIST",
                   help="plan several strategies side by side (default: full,head,top-2,bitfit,lora:8,lora:16,adapter:64)")
    s.add_argument("--inference", action="store_true", help="plan inference instead: weights + KV cache")
    s.add_argument("--context", type=positive_int, default=None, help="with --inference: positions in the KV cache (default: --seq-len or 2048)")
    s.add_argument("--measure", action="store_true",
                   help="also run one real step (on --device, default cuda if available else cpu) and report the error")
    s.add_argument("--format", choices=["table", "json"], default="table")
    s.add_argument("--plot", metavar="FILE.png", help="stacked bar chart of what is live at the peak")
    s.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE instead of the terminal")
    s.set_defaults(func=run)
