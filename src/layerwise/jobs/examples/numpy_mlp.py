"""The articles' forward and back propagation, written out in NumPy (``layerwise.scratch``),
trained on scikit-learn's 8×8 digits; each step equals torch autograd's (tested)."""

from __future__ import annotations

from layerwise.jobs.examples import Example, Option, Target


def run(ctx):
    from layerwise.jobs.examples import ExampleOutput
    from layerwise.jobs.examples._common import training_sections
    from layerwise.jobs.scratch import explain_numpy_mlp, run_numpy_mlp
    from layerwise.report.html import Section

    opts = {k: v for k, v in ctx.options.items() if k != "explain" and v is not None}
    explanation = explain_numpy_mlp(**{k: v for k, v in opts.items() if k not in ("epochs",)})
    if ctx.options.get("explain"):
        ctx.emit(explanation)
    out = run_numpy_mlp(ctx.out_dir, quick=ctx.quick, seed=ctx.seed, callback=ctx.callback, resume=ctx.resume,
                        run=ctx.run, **opts)
    m = out["metrics"]
    md = (f"A 64→{str(opts['hidden']).replace(',', '→')}→10 network written in NumPy from the "
          f"articles' formulas: held-out test accuracy **{m['accuracy']:.4f}**.")
    return ExampleOutput(m, out.get("details", {}),
                         [*training_sections(ctx.out_dir, "Training the NumPy MLP", md),
                          Section("The equations, with this network's shapes", preformatted=explanation)])


EXAMPLE = Example(
    name="numpy-mlp", shows="forward and back propagation from the articles' formulas, in NumPy",
    data="digits (1,797 8×8 digits)", model="NumPy MLP 64→64→10 (layerwise.scratch)", minutes=0.1,
    targets=(Target("accuracy", ">=", 0.95),), run=run, train_flags=False,
    options=(Option("--hidden", str, "64", "hidden widths, comma-separated"),
             Option("--activation", str, "relu", "sigmoid | tanh | relu | leaky_relu"),
             Option("--loss", str, "cross_entropy", "mse | cross_entropy | hinge"),
             Option("--optimizer", str, "adam", "sgd | momentum | adam"),
             Option("--lr", float, None, "learning rate (default per optimizer)"),
             Option("--epochs", int, None, "passes over the training digits (default 60, quick 10)"),
             Option("--l1", float, 0.0, "L1 penalty λ on the weights"),
             Option("--l2", float, 0.0, "L2 penalty λ on the weights"),
             Option("--dropout", float, 0.0, "dropout after each hidden activation"),
             Option("--explain", bool, False, "print each layer's forward and backward equations with the shapes")),
)
