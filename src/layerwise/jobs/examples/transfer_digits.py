"""Transfer learning for image classification: the seed CNN pretrained on 5,000 MNIST digits,
fine-tuned on scikit-learn's 8×8 digits (resized to MNIST's 28×28 layout) with 5, 10, 20
and 50 labelled images per class, against the same CNN trained from scratch on the same images."""

from __future__ import annotations

from layerwise.jobs.examples import Example, Option, Target


def run(ctx):
    from layerwise.jobs.examples import ExampleOutput
    from layerwise.jobs.examples._common import train_config
    from layerwise.jobs.transfer import transfer_study
    from layerwise.report.example_plots import plot_transfer
    from layerwise.report.html import Section

    o = ctx.options
    ks = tuple(int(x) for x in str(o["labels_per_class"]).split(",") if x.strip())
    seeds = tuple(range(o["seeds"])) if not ctx.quick else tuple(range(min(2, o["seeds"])))
    pre = train_config(ctx, {"epochs": 8, "batch_size": 64, "lr": 2e-3, "schedule": "cosine", "log_every": 20,
                             "keep_last": 1, "num_threads": 1}, {"epochs": 1})
    ft = train_config(ctx, {"steps": 150, "batch_size": 32, "lr": 5e-4, "optimizer": "adamw", "log_every": 25,
                            "keep_last": 1, "num_threads": 1}, {"steps": 20, "log_every": 10})
    study = transfer_study(ctx.out_dir, pre, ft, ks, seeds, strategy=o["strategy"], scratch_lr=o["scratch_lr"],
                           resume=ctx.resume, callback=ctx.callback, emit=ctx.emit)
    out = ctx.out_dir
    plot_transfer(study.rows, out / "transfer-accuracy.png",
                  title=f"digits with few labels: MNIST-pretrained ({o['strategy']}) vs from scratch, {len(seeds)} seeds")
    lines = ["| labels per class | transfer (mean ± sd) | scratch (mean ± sd) | gain |", "|---:|---:|---:|---:|"]
    for k in ks:
        t = next(r for r in study.rows if r["method"] == "transfer" and r["labels_per_class"] == k)
        s = next(r for r in study.rows if r["method"] == "scratch" and r["labels_per_class"] == k)
        lines.append(f"| {k} | {t['mean']:.4f} ± {t['sd']:.4f} | {s['mean']:.4f} ± {s['sd']:.4f} | {study.gains[k]:+.4f} |")
    table = "\n".join(lines)
    ctx.emit(table)
    metrics = {f"transfer_gain_{k}": study.gains[k] for k in ks}
    for k in ks:
        metrics[f"transfer_acc_{k}"] = next(r["mean"] for r in study.rows if r["method"] == "transfer" and r["labels_per_class"] == k)
        metrics[f"scratch_acc_{k}"] = next(r["mean"] for r in study.rows if r["method"] == "scratch" and r["labels_per_class"] == k)
    metrics["pretrain_accuracy"] = study.pretrain.get("accuracy")
    md = (f"`seed-cnn-mnist` pretrained on mnist-5k (test accuracy {study.pretrain.get('accuracy', float('nan')):.4f}), "
          f"then for each labelled set: fine-tuned with strategy `{o['strategy']}` (lr {ft.lr:g}) or trained from "
          f"scratch (lr {o['scratch_lr'] or ft.lr:g}), {ft.steps} steps of {ft.batch_size} each, seeds "
          f"{', '.join(map(str, seeds))}; test accuracy on {study.test_images} held-out digits.\n\n{table}\n")
    return ExampleOutput(metrics, {"rows": study.rows, "runs": study.runs, "pretrain": study.pretrain},
                         [Section("Transfer learning with few labels", markdown=md, images=[out / "transfer-accuracy.png"],
                                  data={"rows": study.rows})])


EXAMPLE = Example(
    name="transfer-digits", shows="transfer learning for image classification",
    data="pretrain mnist-5k; fine-tune digits (8×8 → 28×28) with 5/10/20/50 labels per class",
    model="seed-cnn-mnist (121,930 parameters)", minutes=4.0,
    targets=(Target("transfer_gain_5", ">", 0.0), Target("transfer_gain_10", ">", 0.0)), run=run,
    options=(Option("--labels-per-class", str, "5,10,20,50", "labelled digits per class, comma-separated"),
             Option("--seeds", int, 3, "seeds per size (the labelled draw and the initialisation)"),
             Option("--strategy", str, "full", "fine-tuning strategy of the pretrained CNN (full, head, top-1, ...)"),
             Option("--scratch-lr", float, 2e-3, "learning rate when training from scratch")),
)
