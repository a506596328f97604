"""The articles' first program: Keras' Sequential 10→20→1 sigmoid network on random data.

    model = Sequential([Dense(10, input_shape=(10,), activation="relu"),
                        Dense(20, activation="relu"), Dense(1, activation="sigmoid")])

Its summary is printed in our view and in Keras' view (351 trainable parameters in both),
and it is trained on generated data with a rule it can learn (the label says whether the
first three features sum to more than zero), so its accuracy can be compared with chance.
"""

from __future__ import annotations

from layerwise.jobs.examples import Example, ExampleOutput, Option, Target


def run(ctx) -> ExampleOutput:
    import torch

    from layerwise.analysis import analyze
    from layerwise.jobs.examples._common import metric_line, train_config, training_sections
    from layerwise.models import build
    from layerwise.report import table
    from layerwise.train import ClassificationTask, Trainer

    n = ctx.options["samples"]
    g = torch.Generator().manual_seed(ctx.seed)
    x = torch.randn(n, 10, generator=g)
    y = (x[:, :3].sum(dim=1) > 0).long()  # the synthetic rule
    cut = int(0.8 * n)
    # The seed's sigmoid output moves into the loss (BCE with logits: the same function, stabler).
    torch.manual_seed(ctx.seed)
    net = build("seed-mlp", output_activation=None)
    a = analyze(net, input_shape=(1, 10), name="seed-mlp")
    ours, keras = table.render(a, explain=True), table.render_keras(a)
    ctx.emit(ours)
    ctx.emit(keras)
    cfg = train_config(ctx, {"epochs": 30, "batch_size": 32, "lr": 1e-2, "log_every": 20},
                       {"epochs": 5})
    task = ClassificationTask(2, ["rule false", "rule true"], positive=1)
    trainer = Trainer(net, task, (x[:cut], y[:cut]), (x[cut:], y[cut:]), cfg, ctx.callback,
                      {"data": {"name": "generated", "kind": "tabular", "samples": n, "rule": "x1 + x2 + x3 > 0"}}, run=ctx.run)
    result = trainer.fit(resume=ctx.resume)
    test = trainer.evaluate((x[cut:], y[cut:]))
    chance = float(max(y[cut:].float().mean(), 1 - y[cut:].float().mean()))
    ctx.emit(f"held-out: {metric_line(test)} (chance {chance:.4f})")
    metrics = {"params": a.totals.params, "keras_params": a.totals.keras_trainable + a.totals.keras_non_trainable,
               "accuracy": test["accuracy"], "chance": chance, "accuracy_above_chance": test["accuracy"] - chance}
    md = (f"The same 351 parameters in both views (Keras counts Dense(10): 10·10 + 10 = 110, Dense(20): 10·20 + 20 = 220, "
          f"Dense(1): 20 + 1 = 21). Trained {result.steps} steps on {cut} generated examples; held-out accuracy "
          f"{test['accuracy']:.4f} against chance {chance:.4f}.")
    from layerwise.report.html import Section

    return ExampleOutput(metrics, {"test": test},
                         [Section("The summary, in our view and in Keras' view", preformatted=ours + "\n" + keras),
                          *training_sections(ctx.out_dir, "Training", md)])


EXAMPLE = Example(
    name="keras-seed-mlp",
    shows="the Sequential 10→20→1 sigmoid network of the articles, on random data",
    data="generated (10 features, rule x1+x2+x3 > 0)",
    model="seed-mlp (351 parameters)",
    minutes=0.2,
    targets=(Target("keras_params", "==", 351), Target("accuracy_above_chance", ">", 0.0)),
    run=run,
    options=(Option("--samples", int, 1000, "generated examples (80% train, 20% held out)"),),
)
