"""A Transformer language model trained from scratch on Shakespeare, with text generation."""

from __future__ import annotations

from layerwise.jobs.examples import Example, Option, Target


def run(ctx):
    from layerwise.jobs.examples import ExampleOutput
    from layerwise.jobs.examples._common import training_sections
    from layerwise.jobs.training import generate_text, pretrain
    from layerwise.report.html import Section

    cfg = train_config_lm(ctx)
    result = pretrain("gpt-baby-char", "shakespeare-1m", cfg, tokenizer="char", resume=ctx.resume,
                      callback=ctx.callback, run=ctx.run)
    final = result.final or {}
    samples = generate_text(str(ctx.out_dir), prompt=ctx.options["prompt"], max_new_tokens=200 if ctx.quick else 400,
                            temperature=0.8, top_k=40, num_samples=2, seed=ctx.seed)
    from layerwise.io import atomic_write_text

    atomic_write_text(ctx.out_dir / "samples.txt", "\n\n---\n\n".join(samples) + "\n")
    for s in samples[:1]:
        ctx.emit(s)
    metrics = {"val_loss": final.get("loss"), "val_perplexity": final.get("perplexity"), "steps": result.steps}
    md = (f"A character-level GPT trained from scratch for {result.steps} steps in {result.seconds:.0f} s; "
          f"validation loss **{final.get('loss', float('nan')):.4f}** on the held-out end of the text.")
    return ExampleOutput(metrics, {"final": final, "samples": samples},
                         [*training_sections(ctx.out_dir, "Pretraining a character GPT on Shakespeare", md),
                          Section("Samples (temperature 0.8, top-k 40)", preformatted="\n\n---\n\n".join(samples))])


def train_config_lm(ctx):
    from layerwise.jobs.examples._common import train_config

    return train_config(ctx, {"steps": 5000, "batch_size": 12, "lr": 1e-3, "schedule": "cosine", "warmup_steps": 100,
                              "min_lr": 1e-4, "eval_every": 500, "eval_steps": 40, "log_every": 25, "checkpoint_every": 1000},
                        {"steps": 100, "eval_every": 50, "eval_steps": 4, "checkpoint_every": 50, "warmup_steps": 10})


EXAMPLE = Example(
    name="transformer-lm", shows="a Transformer language model with text generation",
    data="shakespeare-1m (the first 1.1 M characters of the complete works)",
    model="gpt-baby-char (4 layers × 128, 4 heads, context 64)", minutes=3.5,
    targets=(Target("val_loss", "<=", 1.80),), run=run,
    options=(Option("--prompt", str, "ROMEO:\n", "text the samples continue"),),
)
