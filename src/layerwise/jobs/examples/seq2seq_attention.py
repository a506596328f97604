"""Seq2Seq with attention, the articles' "machine translation": English number words to digits
("three hundred and twelve" → "312") or spelled-out dates to ISO dates, generated and seeded,
with a held-out test set of unseen sources; greedy and beam search."""

from __future__ import annotations

from layerwise.jobs.examples import Example, Option, Target


def run(ctx):
    from layerwise.jobs.examples import ExampleOutput
    from layerwise.jobs.examples._common import training_sections
    from layerwise.jobs.seq2seq import run_seq2seq

    out = run_seq2seq(ctx.out_dir, quick=ctx.quick, seed=ctx.seed, callback=ctx.callback, data=ctx.options["data"],
                      pairs=ctx.options["pairs"], beam_size=ctx.options["beam_size"], resume=ctx.resume, run=ctx.run,
                      **ctx.train)
    m = out["metrics"]
    md = (f"Test exact match **{m['exact_match']:.4f}** (greedy) and **{m['exact_match_beam']:.4f}** "
          f"(beam of {ctx.options['beam_size']}) on {m.get('test_sentences', '?')} held-out sources.")
    return ExampleOutput(m, out.get("details", {}), training_sections(ctx.out_dir, "Seq2Seq with attention", md))


EXAMPLE = Example(
    name="seq2seq-attention", shows="Seq2Seq with attention, \"machine translation\"",
    data="generated number words → digits (or dates → ISO), held-out sources", model="seq2seq-char (GRU encoder-decoder, additive attention)",
    minutes=3.5, targets=(Target("exact_match", ">=", 0.95), Target("exact_match_beam", ">=", 0.95)), run=run,
    options=(Option("--data", str, "numbers", "numbers | dates | a .tsv of source<TAB>target pairs"),
             Option("--pairs", int, None, "pairs to generate (default 10,000; quick 2,000)"),
             Option("--beam-size", int, 4, "beam width for the beam-search score")),
)
