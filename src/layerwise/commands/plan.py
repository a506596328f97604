"""`layerwise plan`: memory and compute of one training step, per fine-tuning strategy.

    layerwise plan TARGET --strategy lora:16 --optimizer adamw --precision bf16-mixed --batch 8 --seq-len 2048
    layerwise plan TARGET --strategy qlora:16                # nf4 base + LoRA in bf16 + paged AdamW
    layerwise plan TARGET --strategy lora:16 --base-dtype int8
    layerwise plan TARGET --devices 8 --shard fsdp            # per-device memory
    layerwise plan TARGET --budget 24GiB [--devices N]        # will it fit? one recommendation
    layerwise plan TARGET --compare-strategies --plot plan.png
    layerwise plan TARGET --inference --context 8192
    layerwise plan TARGET --measure            # run a real step and report the estimate's error
"""

from __future__ import annotations

import sys
from pathlib import Path


def _int_flag(flag: str, value, minimum: int = 1):
    from layerwise.errors import ConfigError

    if value is None:
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag}: expected an integer >= {minimum}, got {value!r}") from None
    if str(n) != str(value).strip() or n < minimum:
        raise ConfigError(f"{flag}: expected an integer >= {minimum}, got {value!r}")
    return n


def _float_flag(flag: str, value, low: float | None = None, high: float | None = None, open_low: bool = True):
    import math

    from layerwise.errors import ConfigError

    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    bad = not math.isfinite(x) or (low is not None and (x <= low if open_low else x < low)) or (
        high is not None and x >= high)
    if bad:
        rng = f"a number {'>' if open_low else '>='} {low:g}" if low is not None else "a number"
        if high is not None:
            rng += f" and < {high:g}"
        raise ConfigError(f"{flag}: expected {rng}, got {value!r}")
    return x


def run(args) -> int:
    import dataclasses
    import json

    import torch

    from layerwise.errors import ConfigError, LayerwiseError
    from layerwise.jobs.plan import (
        COMPARE_STRATEGIES,
        compare_strategies,
        is_gan,
        measure,
        plan,
        plan_gan,
        plan_inference,
    )
    from layerwise.report.plan import (
        activation_formula_table,
        comparison_table,
        compute_table,
        fit_table,
        inference_table,
        measurement_table,
        plan_table,
        plot_plans,
        quantized_table,
        render,
    )
    from layerwise.targets import parse_shape, resolve
    from layerwise.vocab import optimizer_spec, precision_spec, quant_spec

    # every flag is checked before the model is built
    devices = _int_flag("--devices", args.devices) or 1
    batch = _int_flag("--batch", args.batch)
    seq_len = _int_flag("--seq-len", args.seq_len)
    context = _int_flag("--context", args.context)
    tflops = _float_flag("--tflops", args.tflops, low=0)
    momentum = _float_flag("--momentum", args.momentum, low=0, high=1, open_low=False)
    if args.optimizer is not None:
        optimizer_spec(args.optimizer)
    if args.precision is not None:
        precision_spec(args.precision)
    if args.base_dtype is not None:
        quant_spec(args.base_dtype)
    from layerwise.analysis.plan import SHARDING

    if args.shard not in SHARDING:
        from layerwise.errors import UnknownNameError, suggest

        raise UnknownNameError(f"unknown --shard {args.shard!r}; expected one of {', '.join(SHARDING)}{suggest(args.shard, SHARDING)}")
    if args.shard != "ddp" and devices == 1:
        raise ConfigError(f"--shard {args.shard}: shards over --devices N (N >= 2); got --devices 1")
    budget = None
    if args.budget is not None:
        from layerwise.jobs.fit import parse_bytes

        budget = parse_bytes(args.budget)
    modes = [m for m, on in (("--inference", args.inference), ("--compare-strategies", args.compare_strategies is not None),
                             ("--measure", args.measure), ("--budget", budget is not None)) if on]
    if len(modes) > 1:
        raise ConfigError(f"{' and '.join(modes)}: choose one")
    if args.context is not None and not args.inference:
        raise ConfigError("--context sizes the KV cache of --inference; for training use --seq-len")
    if args.inference and (args.strategy or args.base_dtype or devices > 1):
        raise ConfigError("--inference plans weights and the KV cache; --strategy, --base-dtype and --devices plan training")
    if args.measure and args.master_weights:
        raise LayerwiseError("--measure runs torch's own optimizers, which keep no fp32 master copy; drop --master-weights")
    if args.measure and (devices > 1 or args.base_dtype):
        raise ConfigError("--measure runs one real step on this machine: without --devices and --base-dtype")
    if args.plot and args.inference:
        raise LayerwiseError("--plot draws training plans; it does not apply to --inference")
    if args.plot and not str(args.plot).lower().endswith(".png"):
        raise ConfigError(f"--plot {args.plot}: expected a .png file name")
    for flag, path in (("--plot", args.plot), ("--output", args.output)):
        if path and not Path(path).resolve().parent.is_dir():
            raise ConfigError(f"{flag} {path}: the directory {Path(path).resolve().parent} does not exist")

    from layerwise.io import PLOT_SUFFIXES, TEXT_SUFFIXES, check_output_file

    if args.output:  # every output is checked before any work is done
        check_output_file(args.output, TEXT_SUFFIXES, "--output")
    if args.plot:
        check_output_file(args.plot, PLOT_SUFFIXES, "--plot")
    target = resolve(args.target, device="meta")
    model = target.model
    shape = parse_shape(args.input_shape) if args.input_shape else None
    if shape is None and not hasattr(model, "example_inputs") and target.source == "hf-config":
        shape = [batch or 1, seq_len or 128]
    device = args.device
    if args.measure:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cuda" and not torch.cuda.is_available():
            raise LayerwiseError("--measure --device cuda: CUDA is not available here; use --device cpu")
    device = device or "cuda"
    common = dict(optimizer=args.optimizer, precision=args.precision, batch_size=batch or 1, seq_len=seq_len,
                  input_shape=shape, grad_checkpointing=args.grad_checkpointing, name=target.name,
                  momentum=momentum if momentum is not None else 0.9)
    planning = dict(tflops=tflops, device=device, master_weights=args.master_weights, base_dtype=args.base_dtype,
                    double_quant=not args.no_double_quant, devices=devices, shard=args.shard,
                    optimizer_impl=args.optimizer_impl)
    docs: dict = {}
    tables = []
    plans = []
    notes_extra: list[str] = []
    if args.inference:
        prec = args.precision or "bf16-true"
        inf = plan_inference(model, precision=prec, batch_size=batch or 1,
                             context=context or seq_len or 2048, name=target.name)
        docs["inference"] = inf
        tables.append(inference_table(inf))
    elif budget is not None:
        from layerwise.jobs.fit import FIT_PRECISIONS, FIT_STRATEGIES, fit

        strategies = _list(args.fit_strategies) if args.fit_strategies else list(FIT_STRATEGIES)
        precisions = _list(args.fit_precisions) if args.fit_precisions else (
            [args.precision] if args.precision else list(FIT_PRECISIONS))
        for prec in precisions:
            precision_spec(prec)
        report = fit(model, budget, strategies=strategies, precisions=precisions, batch_size=batch or 1, seq_len=seq_len,
                     input_shape=shape, grad_checkpointing=False, name=target.name, progress=_progress(args),
                     **{k: v for k, v in planning.items() if k not in ("base_dtype", "double_quant")},
                     **({"optimizer": args.optimizer} if args.optimizer else {}))
        docs["fit"] = report
        tables.append(fit_table(report))
        notes_extra = [f"recommended: {report.recommended.strategy} in {report.recommended.precision}"
                       + f" — {report.why}" if report.recommended else f"recommended: none — {report.why}"]
        notes_extra += [f"skipped {k}: {v}" for k, v in report.skipped.items()]
    elif args.compare_strategies is not None:
        names = _list(args.compare_strategies) if args.compare_strategies else list(COMPARE_STRATEGIES)
        skipped: dict[str, str] = {}
        plans = compare_strategies(model, names, skipped=skipped, **planning, **common)
        docs["plans"] = plans
        tables.append(comparison_table(plans))
        notes_extra = [f"skipped {k}: {v}" for k, v in skipped.items()]
    elif args.measure:
        kw = {k: v for k, v in common.items() if v is not None}
        m = measure(model, strategy=args.strategy, device=device, **{**kw, "optimizer": args.optimizer or "adamw",
                                                                    "precision": args.precision or "fp32"})
        plans = [m.plan]
        docs["measurement"] = m
        tables += [plan_table(m.plan), measurement_table(m)]
    elif is_gan(model) and args.strategy is None:
        g = plan_gan(model, **planning, **common)
        docs["gan"] = g
        plans = [g.discriminator, g.generator]
        tables += [plan_table(g.discriminator), plan_table(g.generator)]
        notes_extra = [f"GAN step peak: {g.peak_bytes:,} bytes ({g.peak_bytes / 2**20:,.2f} MiB) in the {g.peak_step} "
                       "step, with the other network's optimizer state"]
    else:
        p = plan(model, strategy=args.strategy, activation_formula=True, **planning, **common)
        plans = [p]
        docs["plan"] = p
        tables += [plan_table(p), compute_table(p)]
        if p.quantized_layers:
            tables.append(quantized_table(p))
        if p.activation_formula:
            tables.append(activation_formula_table(p.activation_formula))
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
            raise LayerwiseError("--plot draws training plans; use it with a single plan or --compare-strategies")
        plot_plans(plans, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def _list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _progress(args):
    """A rich progress bar on stderr for the configurations of --budget (off with --format json piped)."""
    if args.format == "json" or not sys.stderr.isatty():
        return None
    from rich.progress import Progress

    bar = Progress(transient=True)
    state: dict = {}

    def update(done: int, total: int, label: str) -> None:
        if "task" not in state:
            bar.start()
            state["task"] = bar.add_task("planning", total=total)
        bar.update(state["task"], completed=done, description=f"planned {label}")
        if done >= total:
            bar.stop()

    return update


def register(sub) -> None:
    from layerwise.vocab import IMPLEMENTATIONS, OPTIMIZERS, PRECISIONS, QUANTIZATIONS

    s = sub.add_parser("plan", help="memory and compute of a training step per fine-tuning strategy (--measure checks it)")
    s.add_argument("target", metavar="TARGET",
                   help="preset name, layerwise config (.json/.toml), Hugging Face config.json, or package.module:factory")
    s.add_argument("--strategy", default=None,
                   help="fine-tuning strategy: full, head, top-K, bitfit, lora:R[:ALPHA], qlora:R[:ALPHA], adapter:SIZE, … "
                        "joined with +")
    s.add_argument("--optimizer", default=None,
                   help=f"{', '.join(OPTIMIZERS)} (default adamw; paged-adamw for qlora)")
    s.add_argument("--momentum", default=None, metavar="M",
                   help="momentum of sgd and rmsprop, as the Trainer's --momentum (default 0.9)")
    s.add_argument("--optimizer-impl", default="auto", metavar="IMPL",
                   help=f"{', '.join(IMPLEMENTATIONS)}: the update's implementation (auto: the Trainer's choice, "
                        "fused where torch has it, else foreach)")
    s.add_argument("--precision", default=None,
                   help=f"{', '.join(PRECISIONS)} (default fp32; bf16-true for qlora)")
    s.add_argument("--base-dtype", default=None, metavar="DTYPE",
                   help=f"store the frozen Linear weights as {', '.join(QUANTIZATIONS)} (bitsandbytes); with lora, head, top-K")
    s.add_argument("--no-double-quant", action="store_true", help="4-bit base without bitsandbytes' double quantisation")
    s.add_argument("--batch", "--batch-size", dest="batch", default=None, help="batch size per device (default 1)")
    s.add_argument("--seq-len", default=None, help="sequence length for sequence models")
    s.add_argument("--input-shape", help="input shape instead of batch/seq-len, e.g. 8,3,224,224")
    s.add_argument("--grad-checkpointing", action="store_true", help="recompute each block in the backward")
    s.add_argument("--master-weights", action="store_true", help="with bf16-true/fp16-true: fp32 master weights and optimizer state")
    s.add_argument("--device", choices=["cuda", "cpu"], default=None,
                   help="where the step runs: kernels, the optimizer's implementation, LSTM path (default cuda)")
    s.add_argument("--devices", default=None, metavar="N", help="data parallel over N devices: every byte per device")
    s.add_argument("--shard", default="ddp", metavar="SCHEME",
                   help="with --devices: ddp (replicated), zero1, zero2, zero3 (DeepSpeed) or fsdp (FSDP2 per block)")
    s.add_argument("--tflops", default=None, help="achieved TFLOP/s per device, for the time per step")
    s.add_argument("--budget", default=None, metavar="SIZE",
                   help="will it fit in SIZE per device (24GiB, 80GB)? every strategy and precision, the largest batch "
                        "and sequence length, checkpointing, one recommendation")
    s.add_argument("--fit-strategies", default=None, metavar="LIST",
                   help="with --budget: strategies to try (default full,top-2,lora:16,qlora:16,head)")
    s.add_argument("--fit-precisions", default=None, metavar="LIST",
                   help="with --budget: precisions to try (default bf16-mixed,bf16-true,fp32)")
    s.add_argument("--compare-strategies", nargs="?", const="", default=None, metavar="LIST",
                   help="plan several strategies side by side (default: full,head,top-2,bitfit,lora:8,lora:16,adapter:64)")
    s.add_argument("--inference", action="store_true", help="plan inference instead: weights + KV cache")
    s.add_argument("--context", default=None, help="with --inference: positions in the KV cache (default: --seq-len or 2048)")
    s.add_argument("--measure", action="store_true",
                   help="also run one real step (on --device, default cuda if available else cpu) and report the error")
    s.add_argument("--format", choices=["table", "json"], default="table")
    s.add_argument("--plot", metavar="FILE.png", help="stacked bar chart of what is live at the peak")
    s.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE instead of the terminal")
    s.set_defaults(func=run)
