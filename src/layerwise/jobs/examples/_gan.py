"""What the two GAN examples share: the scoring classifier (trained once, cached), the GAN
job with a sample grid at every epoch, the losses plot and the report."""

from __future__ import annotations


def run_gan_example(ctx, model: str, data: str, metric: str, full: dict, quick: dict, scorer_epochs: tuple[int, int],
                    title: str, task_options: dict | None = None, model_overrides: dict | None = None):
    from layerwise.jobs.agents import train_gan
    from layerwise.jobs.examples import ExampleOutput
    from layerwise.jobs.examples._common import train_config
    from layerwise.jobs.scoring import image_scorer
    from layerwise.report.example_plots import plot_gan_losses, plot_image_grid
    from layerwise.report.html import Section

    threads = ctx.train.get("num_threads") or 1
    epochs = scorer_epochs[1] if ctx.quick else scorer_epochs[0]
    ctx.emit(f"the scoring classifier: {epochs} epochs on real {data} (trained once, then cached)")
    scorer = image_scorer(data, epochs=epochs, metric=metric, callback=ctx.callback, num_threads=threads)
    ctx.emit(f"scoring classifier: test accuracy {scorer.accuracy:.4f}; real test images score {scorer.reference:.3f} "
             f"({scorer.run_dir})")
    cfg = train_config(ctx, full, quick)
    out = ctx.out_dir
    r = train_gan(cfg, model, data, scorer=scorer, task_options=task_options, model_overrides=model_overrides,
                  grids=out / "samples", resume=ctx.resume, callback=ctx.callback, run=ctx.run)
    m = r.metrics
    ctx.emit(f"best checkpoint: {metric} {m[metric]:.3f} (real test images {scorer.reference:.3f}), "
             f"{m['classes']} of 10 classes among 1,000 samples")
    plot_image_grid(r.samples[:100], out / "samples-final.png",
                    title=f"100 of the best checkpoint's 1,000 samples: {metric} {m[metric]:.2f}")
    plot_gan_losses(r.result.history, r.result.evals, metric, scorer.reference, out / "gan-losses.png",
                    title=f"{model} on {data}: both networks' losses and the score")
    grids = sorted((out / "samples").glob("*.png"))
    picked = list(dict.fromkeys([grids[0], grids[len(grids) // 2], grids[-1]])) if grids else []
    metrics = {metric: m[metric], f"real_{metric}": scorer.reference, "classes": m["classes"],
               "scorer_accuracy": scorer.accuracy, "steps": r.result.steps}
    best_step = (r.result.best or {}).get("step")
    md = (f"`{model}` trained {r.result.steps:,} steps ({r.result.seconds:.0f} s) on the {data} training split, one "
          f"discriminator and one generator update per step. Score: the Inception Score of 1,000 samples by a CNN "
          f"trained on real {data} (test accuracy {scorer.accuracy:.4f}); the real test images score "
          f"**{scorer.reference:.2f}**, the best checkpoint (step {best_step}) **{m[metric]:.2f}**, with "
          f"{m['classes']} of 10 classes among the samples (counts {m['class_counts']}). A grid of samples from the "
          f"same noise was written at every epoch: `samples/` ({len(grids)} grids).")
    sections = [Section(title, markdown=md, images=[out / "samples-final.png", out / "gan-losses.png"]),
                Section("Samples during training (first, middle and last epoch)", images=picked)]
    return ExampleOutput(metrics, {"scorer": scorer.info, "class_counts": m["class_counts"],
                                   "checkpoint": str(r.checkpoint) if r.checkpoint else None}, sections)
