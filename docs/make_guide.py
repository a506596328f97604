"""Write docs/guide.md: the articles' ten interview questions, each answered with commands of
this tool and their real output.

    python docs/make_guide.py [--out docs/guide.md]      # or: make guide

Every command runs in this process through ``layerwise.cli.main`` (stdout and stderr captured
together, ``COLUMNS=110`` (wider for the two tables in ``WIDE``), one torch thread), inside a temporary directory that holds the run
directories and the config files the guide shows. Every number quoted in the prose is read
from a command's JSON output (its ``--format json`` twin, or the ``results.json`` of its run
directory); none is typed here. A command that fails stops the script: no guide with a hole.
About two minutes on two busy CPU cores.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "guide.md"
COLUMNS = "110"

# Files the commands read, written into the working directory and shown in the guide.
FILES = {
    "mlp-sigmoid-16.toml": (
        '# 16 hidden sigmoid layers of 64 units on MNIST digits: the textbook vanishing gradient\n'
        'preset = "mlp-784-64-64-10"\n'
        'sizes = [784, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 10]\n'
        'activation = "sigmoid"\n'
    ),
}


# ---------------------------------------------------------------- running commands


class Runner:
    """Runs ``layerwise ARGS`` in-process in ``workdir``; caches each command's output."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self._text: dict[str, str] = {}
        self._json: dict[str, object] = {}
        self.seconds: dict[str, float] = {}

    def _run(self, args: str) -> str:
        from layerwise.cli import main

        buf = io.StringIO()
        old, old_columns = Path.cwd(), os.environ.get("COLUMNS")
        t0 = time.perf_counter()
        try:
            os.environ["COLUMNS"] = WIDE.get(args.removesuffix(" --format json"), COLUMNS)
            os.chdir(self.workdir)
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                rc = main(shlex.split(args))
        finally:
            os.chdir(old)
            if old_columns is None:
                os.environ.pop("COLUMNS", None)
            else:
                os.environ["COLUMNS"] = old_columns
        self.seconds[args] = time.perf_counter() - t0
        out = buf.getvalue().replace(str(self.workdir) + os.sep, "").replace(str(self.workdir), ".")
        if rc != 0:
            raise SystemExit(f"make_guide: `layerwise {args}` exited {rc}:\n{out}")
        return "\n".join(line.rstrip() for line in out.splitlines()).strip("\n") + "\n"

    def text(self, args: str) -> str:
        """The output of ``layerwise ARGS`` as a person sees it (what the guide shows)."""
        if args not in self._text:
            self._text[args] = self._run(args)
        return self._text[args]

    def json(self, args: str):
        """The same command with ``--format json``: where the prose reads its numbers."""
        key = args + " --format json"
        if key not in self._json:
            self._json[key] = json.loads(self._run(key))
        return self._json[key]

    def results(self, run_dir: str) -> dict:
        """``results.json`` of a run directory a shown command wrote."""
        return json.loads((self.workdir / run_dir / "results.json").read_text())


# ---------------------------------------------------------------- formatting numbers


def n(v: int) -> str:
    return f"{int(v):,}"


def pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%"


def gib(b: int) -> str:
    return f"{b / 2**30:.2f} GiB"


def sig(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}"


def times(x: float) -> str:
    return f"{x:.1f}×" if x < 100 else f"{x:,.0f}×"


def _row(summary: dict, name: str) -> dict:
    for r in summary["rows"]:
        if r["name"] == name:
            return r
    raise SystemExit(f"make_guide: no layer {name!r} in the summary of {summary['model']}")


def _kind(summary: dict, kind: str) -> dict:
    for k in summary["by_kind"]:
        if k["kind"] == kind:
            return k
    raise SystemExit(f"make_guide: no kind {kind!r} in the summary of {summary['model']}")


def _plan(plans: dict, strategy: str) -> dict:
    for p in plans["plans"]:
        if p["strategy"] == strategy:
            return p
    raise SystemExit(f"make_guide: no strategy {strategy!r} in the plan")


# ---------------------------------------------------------------- the ten questions


@dataclass
class Section:
    title: str
    commands: list[str]
    facts: Callable[[Runner], dict]
    body: str  # str.format template: facts, {cmd0}, {cmd1}, … (console blocks), {file:NAME}

    def render(self, run: Runner, number: int) -> str:
        blocks = {f"cmd{i}": console(c, run.text(c)) for i, c in enumerate(self.commands)}
        files = {f"file_{k.split('.')[0].replace('-', '_')}": f"```toml\n{v}```" for k, v in FILES.items()}
        return f"## {number}. {self.title}\n\n" + self.body.strip("\n").format(**self.facts(run), **blocks, **files) + "\n"


def console(args: str, output: str) -> str:
    return f"```console\n$ layerwise {args}\n{output}```"


NUMPY_MLP = "example numpy-mlp --quick --explain --no-progress --out-dir numpy-mlp"


def facts_deep_learning(run: Runner) -> dict:
    run.text(NUMPY_MLP)
    r = run.results("numpy-mlp")
    return {"accuracy": pct(r["metrics"]["accuracy"], 1), "steps": n(r["steps"]), "epochs": n(r["epochs"]),
            "test_examples": n(r["test_examples"])}


LLAMA_KIND = "summary llama-2-7b --by kind"


def facts_large_model(run: Runner) -> dict:
    s = run.json(LLAMA_KIND)
    t, d = s["totals"], s["depth"]
    tokens = s["input_shape"][0][1]
    return {"params": n(t["params"]), "billions": f"{t['params'] / 1e9:.2f}", "weight_gib": gib(t["weight_bytes"]),
            "bf16_gib": gib(t["params"] * 2), "blocks": d["block_depth"], "weight_depth": d["weight_depth"],
            "mlp_share": pct(_kind(s, "mlp")["share"], 1), "attn_share": pct(_kind(s, "attention")["share"], 1),
            "tokens": tokens, "flops_per_param_token": f"{t['flops_train'] / (t['params'] * tokens):.2f}"}


GPT2_STRATEGIES = "plan gpt2 --compare-strategies --seq-len 1024"
LLAMA_STRATEGIES = "plan llama-2-7b --compare-strategies full,lora:8,qlora:8 --precision bf16-true --seq-len 2048"


def facts_finetuning(run: Runner) -> dict:
    g = run.json(GPT2_STRATEGIES)
    full, head, lora, adapter = (_plan(g, s) for s in ("full", "head", "lora:8", "adapter:64"))
    ll = run.json(LLAMA_STRATEGIES)
    lfull, llora, lq = (_plan(ll, s) for s in ("full", "lora:8", "qlora:8"))
    return {"g_full_trainable": n(full["trainable"]), "g_head_trainable": n(head["trainable"]),
            "g_lora_trainable": n(lora["trainable"]), "g_lora_pct": pct(lora["trainable"] / full["trainable"]),
            "g_adapter_trainable": n(adapter["trainable"]),
            "g_full_peak": gib(full["peak_bytes"]), "g_lora_peak": gib(lora["peak_bytes"]),
            "l_full_peak": gib(lfull["peak_bytes"]), "l_lora_peak": gib(llora["peak_bytes"]),
            "l_qlora_peak": gib(lq["peak_bytes"]), "l_lora_trainable": n(llora["trainable"]),
            "g_seq": n(full["seq_len"])}


DEPTH = "study depth --quick --no-progress --out-dir depth"


def facts_depth(run: Runner) -> dict:
    run.text(DEPTH)
    m = run.results("depth")["metrics"]
    plain, fixed = m["depth_effect_plain_sigmoid"], m["depth_effect_residual_relu_norm"]
    return {"deep": plain["deep_depth"], "shallow": plain["shallow_depth"], "data": m["data"],
            "plain_shallow_acc": sig(plain["shallow_test_accuracy"]["mean"]),
            "plain_deep_acc": sig(plain["deep_test_accuracy"]["mean"]),
            "fixed_name": fixed["config"],
            "fixed_shallow_acc": sig(fixed["shallow_test_accuracy"]["mean"]),
            "fixed_deep_acc": sig(fixed["deep_test_accuracy"]["mean"])}


PLAN_FP32 = "plan gpt2 --seq-len 1024 --batch 8"
PLAN_LEAN = "plan gpt2 --seq-len 1024 --batch 8 --precision bf16-mixed --grad-checkpointing"


def facts_optimise(run: Runner) -> dict:
    a, b = run.json(PLAN_FP32)["plan"], run.json(PLAN_LEAN)["plan"]
    return {"peak_a": gib(a["peak_bytes"]), "peak_b": gib(b["peak_bytes"]),
            "act_a": gib(a["activation_bytes"]), "act_b": gib(b["activation_bytes"]),
            "flops_more": pct(b["flops_per_step"] / a["flops_per_step"] - 1, 0),
            "optim": gib(a["optimizer_state_bytes"]), "batch": n(a["batch_size"]), "seq": n(a["seq_len"])}


MLP_ROLE = "summary seed-mlp --by role"
GPT2_KIND = "summary gpt2 --by kind"


def facts_params(run: Runner) -> dict:
    s = run.json(MLP_ROLE)
    g = run.json(GPT2_KIND)
    roles = {r["role"]: r for r in s["rows"]}
    layer = {la["role"]: la for la in s["layers"]}
    return {"mlp_total": n(s["total"]), "first": n(roles["input"]["params"]),
            "first_formula": layer["input"]["formula"], "second_formula": layer["hidden"]["formula"],
            "head_formula": layer["output"]["formula"],
            "g_norm": n(_kind(g, "norm")["params"]),
            "g_embed": n(_kind(g, "embedding")["params"]), "g_total": n(g["totals"]["params"]),
            "g_twice": n(g["totals"]["params_if_shared_counted_twice"])}


INSPECT_SIGMOID = ("inspect mlp-sigmoid-16.toml --data mnist-5k --quick --sections health --no-progress "
                   "--out-dir inspect-sigmoid")


def facts_gradients(run: Runner) -> dict:
    run.text(INSPECT_SIGMOID)
    h = run.results("inspect-sigmoid")["health"]
    hidden = [la for la in h["layers"] if la["kind"] != "head"]
    g1, gl = hidden[0]["grad_norm"], hidden[-1]["grad_norm"]
    m = run.results("depth")["metrics"]
    return {"layers": len(hidden), "g_first": sig(g1), "g_last": sig(gl), "ratio": f"{gl / g1:.1e}",
            "per_layer": sig((gl / g1) ** (1 / (len(hidden) - 1)), 2),
            "vanish": sig(h["thresholds"]["vanishing_grad"]), "explode": sig(h["thresholds"]["exploding_grad"]),
            "ratio_plain": f"{m['grad_ratio_plain_sigmoid']:.2g}", "ratio_fixed": sig(m["grad_ratio_residual_relu_norm"], 2),
            "deep": m["deepest_depth"]}


CNN = "summary seed-cnn-mnist --explain"
MOBILENET = "summary mobilenet-v1 mobilenet-v1-standard"


def facts_cnn(run: Runner) -> dict:
    s = run.json(CNN)
    c1, c2, dense = (_row(s, x) for x in ("body.0", "body.3", "body.7"))
    sep, std = run.json(MOBILENET)
    return {"c1": n(c1["params"]), "c1_flops": n(c1["flops"]), "c2": n(c2["params"]), "dense": n(dense["params"]),
            "total": n(s["totals"]["params"]), "dense_share": pct(dense["params"] / s["totals"]["params"], 0),
            "mb_sep": n(sep["totals"]["params"]), "mb_std": n(std["totals"]["params"]),
            "mb_param_ratio": times(std["totals"]["params"] / sep["totals"]["params"]),
            "mb_flop_ratio": times(std["totals"]["flops_forward"] / sep["totals"]["flops_forward"]),
            "mb_dw": n(_kind(sep, "depthwise")["params"]), "mb_pw": n(_kind(sep, "pointwise")["params"])}


LSTM = "summary seed-lstm-binary --explain --seq-len 120"


def facts_rnn(run: Runner) -> dict:
    s = run.json(LSTM)
    rnn = _row(s, "rnn")
    return {"lstm": n(rnn["params"]), "lstm_formula": rnn["formula"], "lstm_flops": n(rnn["flops"]), "seq": s["input_shape"][0][1],
            "flops_per_step": n(rnn["flops"] // s["input_shape"][0][1]), "embed": n(_row(s, "embedding")["params"]),
            "embed_share": pct(_row(s, "embedding")["params"] / s["totals"]["params"], 0)}


LLAMA_NANO = "summary llama-nano --explain --show-nesting 5"
GPT2_LONG = "summary gpt2 --by kind --seq-len 1024"


def facts_attention(run: Runner) -> dict:
    s = run.json(LLAMA_NANO)
    q, k = _row(s, "transformer.h.0.attn.q_proj"), _row(s, "transformer.h.0.attn.k_proj")
    short, long_ = run.json(GPT2_KIND), run.json(GPT2_LONG)
    ls, ll = short["input_shape"][0][1], long_["input_shape"][0][1]
    fs, fl = short["totals"]["attention_flops"], long_["totals"]["attention_flops"]
    return {"q": n(q["params"]), "k": n(k["params"]), "kv_ratio": f"{q['output_shape'][-1] // k['output_shape'][-1]}", "attn_block": n(_row(s, "transformer.h.0.attn")["params_total"]),
            "len_short": n(ls), "len_long": n(ll), "att_short": n(fs), "att_long": n(fl),
            "len_ratio": f"{ll / ls:g}", "att_ratio": f"{fl / fs:g}",
            "attn_params_same": "the same" if _kind(short, "attention")["params"] == _kind(long_, "attention")["params"]
            else "different"}


# Tables that wrap to the terminal's width and have more columns than 110 can show.
WIDE = {DEPTH: "180", INSPECT_SIGMOID: "150"}

SECTIONS = [
    Section("What is deep learning?", [NUMPY_MLP], facts_deep_learning, """
Deep learning fits a function that is a chain of many simple layers: each layer applies an
affine map (a weight matrix W and a bias b) to its input and then a fixed nonlinearity σ, and
the output of one layer is the input of the next. Nothing in the chain is hand-designed for the
task; all of W and b are learned from examples.

Learning is three steps repeated over batches. The forward pass computes the prediction ŷ and
a loss J that measures how far it is from the label. Back-propagation applies the chain rule
from the loss back to the first layer, giving ∂J/∂W and ∂J/∂b for every layer in one backward
sweep. An optimizer (SGD, momentum, Adam) then moves every parameter a small step against its
gradient. The example below is that loop written out in NumPy, with each layer's forward and
backward equations printed with their shapes; in {steps} steps ({epochs} epochs) it classifies
{accuracy} of {test_examples} held-out 8×8 digits correctly.

{cmd0}
"""),
    Section("What is a large model?", [LLAMA_KIND], facts_large_model, """
A large model is the same kind of network with far more parameters, usually billions, trained
on far more data. Llama 2 7B below has {params} parameters ({billions} billion): {blocks}
identical transformer blocks, {weight_depth} weight layers on the longest path from input to
output. {mlp_share} of the parameters are in the feed-forward (mlp) layers and {attn_share} in
attention. The tool builds it on PyTorch's meta device, so the table costs no memory.

Scale is what buys the advantages the articles list, stronger representations and broad
transfer to new tasks, and it is also the cost: the weights alone take {weight_gib} in float32
({bf16_gib} in bfloat16), and one training step spends {flops_per_param_token} FLOPs per
parameter per token (the table traces {tokens} tokens), which is the familiar "about 6" rule.
Training one from scratch is out of reach for most; fine-tuning a released one is not.

{cmd0}
"""),
    Section("What is fine-tuning, and what are its methods?", [GPT2_STRATEGIES, LLAMA_STRATEGIES],
            facts_finetuning, """
Fine-tuning continues training a pretrained model on the data of one task, so that the general
features it learned are kept and adapted instead of learned again. The methods differ in which
parameters are trained:

- **full**: every parameter ({g_full_trainable} for GPT-2 small);
- **head**: only the output layer. GPT-2's output layer shares its matrix with the token
  embedding, so here "head" trains {g_head_trainable} parameters;
- **top-k**: the last k blocks and the head;
- **BitFit**: only the biases (and the head);
- **LoRA**: the pretrained weights stay frozen and each chosen matrix W gets a trainable
  low-rank update B·A of rank r; lora:8 trains {g_lora_trainable} parameters, {g_lora_pct} of the
  model;
- **adapters**: small bottleneck layers inserted in each block ({g_adapter_trainable} parameters
  for adapter:64);
- **QLoRA**: LoRA on a base stored in 4 bits (NF4).

Training fewer parameters saves gradients and optimizer state, not activations: for GPT-2 at
{g_seq} tokens the peak goes from {g_full_peak} (full) to {g_lora_peak} (lora:8). On a 7B model
the difference decides what hardware is needed: full fine-tuning in bfloat16 peaks at
{l_full_peak}, LoRA at {l_lora_peak} and QLoRA at {l_qlora_peak}.

{cmd0}

{cmd1}

`layerwise finetune --strategy …` trains with any of them, and `layerwise compare` runs several
on the same data and reports their accuracy side by side.
"""),
    Section("What does depth do to a model's performance?", [DEPTH], facts_depth, """
Depth here is the number of weight layers on the longest path from input to output (the tool's
`weight_depth`). More layers can represent more complex functions with fewer units, by
composing features of features, but every layer is another factor in the gradient of the early
layers, so a deeper plain network is harder to train; depth also adds parameters, FLOPs and
time per step linearly. Whether a deeper model generalises better depends on data and
regularisation, not on depth alone.

The quick depth study trains MLPs of {shallow} and {deep} hidden layers on {data} under every
combination of activation, residual connections and layer normalisation. A plain sigmoid
network gets worse with depth ({plain_shallow_acc} test accuracy at {shallow} layers,
{plain_deep_acc} at {deep}); with {fixed_name} the deeper one is as good or better
({fixed_shallow_acc} against {fixed_deep_acc}). `--quick` runs a few steps with one seed: the
sign of the effect, not its size.

{cmd0}
"""),
    Section("How can training be optimised?", [PLAN_FP32, PLAN_LEAN], facts_optimise, """
For the result: an adaptive optimizer (Adam or AdamW), a learning-rate schedule with warm-up,
normalisation layers and residual connections so that gradients reach every layer, careful
initialisation, gradient clipping against spikes, and regularisation (weight decay, dropout,
early stopping on a validation set). The trainer exposes them as `--optimizer`, `--schedule`,
`--warmup-steps`, `--weight-decay`, `--clip-grad-norm` and `--early-stopping`.

For speed and memory: mixed precision computes in 16 bits while keeping 32-bit master weights,
activation (gradient) checkpointing stores only each block's input and recomputes the rest in
the backward pass, gradient accumulation (`--grad-accum`) reaches a large batch with small
ones, and parameter-efficient fine-tuning removes most gradients and optimizer state. The two
plans below are the same GPT-2 step at batch {batch} × {seq} tokens: bf16 autocast with
checkpointing cuts the saved activations from {act_a} to {act_b} and the peak from {peak_a} to
{peak_b}, for {flops_more} more FLOPs per step. The AdamW state ({optim}) is untouched: state in
16 bits (`--precision bf16-true`), a smaller optimizer, sharding over devices or fewer
trainable parameters reduce it.

{cmd0}

{cmd1}
"""),
    Section("Which trainable parameters does each layer have?", [MLP_ROLE, GPT2_KIND], facts_params, """
The data entering the network has no parameters. What the articles call the input layer is, in
a framework, the first weight layer: in their small Keras classifier (seed-mlp) the first Dense,
in·out weights plus out biases ({first_formula}), {first} of the model's {mlp_total}. A hidden
Dense has the same formula ({second_formula}), and so has the output layer, with the number of
outputs as its width ({head_formula}).

The other layers, with their counts: a convolution k·k·c_in·c_out + c_out; an embedding
vocabulary × dimension, no bias; LayerNorm 2·d (a scale and a shift per feature); RMSNorm d;
BatchNorm 2·C trained plus 2·C running statistics that are buffers, not trained; an LSTM
4·h·(in + h) + 2·4·h per layer; attention its four projections Q, K, V and O. Activations,
pooling, dropout and flatten have none. In GPT-2 small the norms hold {g_norm} parameters and
the embeddings {g_embed}; the output layer reuses the token embedding, so the model has
{g_total} parameters, not the {g_twice} a count of each module separately gives.

{cmd0}

{cmd1}

`--explain` prints each layer's formula with its numbers substituted (questions 8 and 9).
"""),
    Section("What are vanishing and exploding gradients, and how are they solved?", [INSPECT_SIGMOID],
            facts_gradients, """
Back-propagation multiplies one factor per layer on the way from the loss to the first layer.
If those factors are mostly below 1 the gradient shrinks geometrically and the early layers
stop learning (vanishing); if they are above 1 it grows geometrically, the updates overshoot
and the loss becomes inf or NaN (exploding). The sigmoid's derivative is at most 0.25, which
makes deep sigmoid stacks the textbook case; long unrolled RNNs and large initial weights are
the usual causes of explosion.

Below, an untrained MLP with {layers} hidden sigmoid layers, written as a config file, is
inspected on a batch of MNIST digits. The gradient norm of the last hidden layer is {g_last}
and that of the first {g_first}, {ratio} times smaller: on its way back the gradient shrinks
by a factor of about {per_layer} per layer. `inspect` flags a layer whose gradient norm is below {vanish} as vanishing and one above
{explode} as exploding.

{file_mlp_sigmoid_16}

{cmd0}

The remedies: ReLU-family activations; initialisation scaled to the layer's width (Xavier,
Kaiming); normalisation layers; residual connections, which give the gradient a path around
each layer; LSTM or GRU gates for recurrent networks; and, against explosion, gradient clipping
(`--clip-grad-norm`) and a smaller learning rate. In the depth study of question 4, the ratio of
the last to the first layer's gradient norm at {deep} layers is {ratio_plain} for the plain
sigmoid network and {ratio_fixed} with ReLU, residual connections and layer normalisation.
"""),
    Section("What is a convolutional neural network (CNN), and where is it used?", [CNN, MOBILENET],
            facts_cnn, """
A convolution slides a small kernel over the image and computes, at every position, a weighted
sum of the pixels under it, one output channel per kernel. The same kernel is used at every
position, which builds in that a pattern means the same thing wherever it appears and makes the
parameter count depend on kernel size and channels only, not on the image size. Pooling layers
downsample between convolutions, so later layers see larger regions; a few dense layers at the
end make the decision.

In the articles' MNIST CNN, the first 3×3 convolution has {c1} parameters but spends {c1_flops}
FLOPs, because it runs at every position; the second has {c2}. The dense layer after the
flatten holds {dense} of the {total} parameters ({dense_share}). Depthwise-separable
convolutions split a convolution into a per-channel 3×3 filter and a 1×1 channel mix: MobileNet
has {mb_sep} parameters ({mb_dw} depthwise, {mb_pw} pointwise) against {mb_std} for the same
network with standard convolutions, {mb_param_ratio} fewer, and {mb_flop_ratio} fewer FLOPs.

CNNs are used wherever the input is a grid with local structure: image classification,
detection and segmentation, medical images, and 1-D signals such as audio.

{cmd0}

{cmd1}
"""),
    Section("What is a recurrent neural network (RNN), and where is it used?", [LSTM], facts_rnn, """
An RNN reads a sequence one element at a time and carries a hidden state from step to step:
h_t = σ(W·x_t + U·h_(t−1) + b). The same W, U and b are used at every step, so the parameter
count does not depend on the length of the sequence, while the compute grows linearly with it.
The LSTM adds gates (input, forget, output and a candidate) that decide what the state keeps,
which lets gradients survive over many more steps than in a plain RNN; the GRU does the same
with three.

In the articles' sentiment model the LSTM layer holds {lstm} parameters, 4 gates × hidden ×
(input + hidden) weights plus PyTorch's two bias vectors per gate: {lstm_formula}. On a
{seq}-token review it spends {lstm_flops} FLOPs, {flops_per_step} per token. The embedding
table holds {embed} parameters, {embed_share} of the model.

RNNs are used for text classification, language modelling, speech and time series, and as the
encoder and decoder of sequence-to-sequence models (`layerwise example seq2seq-attention`).

{cmd0}
"""),
    Section("What is the attention mechanism, and how is it used?", [LLAMA_NANO, GPT2_LONG], facts_attention, """
Attention lets each position of a sequence read directly from every other position. Each token
is projected to a query, a key and a value; the weight of token j for token i is the softmax
over j of q_i·k_j/√d, and the output is the weighted sum of the values. Several heads do this
in parallel on slices of the hidden vector, and an output projection mixes them. Unlike an RNN,
no information has to pass through a chain of steps, and all positions are computed at once.

The parameters are the four projections and do not depend on the sequence length. In the tiny
Llama-style model below, q_proj has {q} parameters and k_proj only {k}: it uses grouped-query
attention: its keys and values are {kv_ratio} times narrower than its queries, each key/value
head shared by {kv_ratio} query heads, which shrinks K, V and the KV cache.
One block's attention holds {attn_block} parameters. The cost of the scores grows with the
square of the length: GPT-2's attention score and value products take {att_short} FLOPs at
{len_short} tokens (question 6) and {att_long} at {len_long}, {att_ratio} times more for
{len_ratio} times the length, with {attn_params_same} parameter count.

Attention is the core of the Transformer (GPT language models, BERT classifiers, vision
transformers) and of attentional sequence-to-sequence translation, where the decoder attends
over the encoder's states (`layerwise example seq2seq-attention` draws those weights).

{cmd0}

{cmd1}
"""),
]

INTRO = """# The ten interview questions, answered with layerwise

The articles this project grew from end with ten interview questions. Each answer below is
short, and each comes with commands of this tool and their real output: the parameter counts,
FLOPs, memory and training results are what the commands printed when this page was made.

This file is generated by `docs/make_guide.py` (`make guide`); do not edit it by hand. The
commands were run from an empty directory, so run directories (`--out-dir`) and the config file
of question 7 are relative to it. Times and throughput vary between runs and machines; counts,
FLOPs and planned bytes do not.
"""


def shown_commands() -> list[str]:
    """Every command the guide shows, in order (without running anything)."""
    return [c for s in SECTIONS for c in s.commands]


def render(run: Runner) -> str:
    parts = [INTRO]
    parts += [s.render(run, i) for i, s in enumerate(SECTIONS, 1)]
    return "\n".join(parts)


def setup_environment() -> None:
    """Fixed table width; one thread, so the guide is the same on any machine and light on a shared one."""
    os.environ["COLUMNS"] = COLUMNS
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))
    import torch

    torch.set_num_threads(1)


@contextlib.contextmanager
def workdir():
    with tempfile.TemporaryDirectory(prefix="layerwise-guide-") as d:
        for name, text in FILES.items():
            (Path(d) / name).write_text(text)
        yield Path(d)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=GUIDE, help="where to write the guide (default docs/guide.md)")
    args = ap.parse_args(argv)
    setup_environment()
    t0 = time.perf_counter()
    with workdir() as d:
        run = Runner(d)
        text = render(run)
    from layerwise.io import atomic_write_text

    atomic_write_text(args.out, text)
    for cmd, s in run.seconds.items():
        print(f"{s:6.1f} s  layerwise {cmd}", file=sys.stderr)
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
