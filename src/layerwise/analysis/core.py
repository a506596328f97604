"""``analyze(model, ...)``: the layer-by-layer account of a model.

collect (parameters per module, one forward trace) → aggregate (totals, by kind,
by block, depths) → an :class:`Analysis` of plain data. Rendering lives in
``layerwise.report``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from layerwise.analysis.formulas import formula
from layerwise.analysis.kinds import (
    assign_kinds, blocks_from_applications, detect_blocks, detect_experts, encoder_decoder_parts, weight_layer_count,
)
from layerwise.analysis.trace import ModuleTrace, TraceFailure, TraceResult, trace
from layerwise.errors import ForwardFailure, InternalError, LayerwiseError, TracedInputError
from layerwise.roles import KINDS


@dataclass
class LayerRow:
    name: str  # qualified module name; "" is the model itself
    cls: str
    kind: str
    level: int  # nesting level in the module tree (the model is 0)
    is_leaf: bool
    weight_layers: int  # weight layers this module applies in sequence (0 if none)
    is_block: bool
    params: int  # own parameters, each tensor counted once (at its first owner)
    params_total: int  # own + children
    trainable: int
    trainable_total: int
    status: str  # trainable | frozen | partial | "" (no parameters)
    buffers: int  # own buffer elements (state, not parameters)
    shared: list[str] = field(default_factory=list)  # "weight = transformer.wte.weight"
    reuse_of: str | None = None  # this path is the same module object as an earlier path
    calls: int = 0
    input_shape: Any = None
    output_shape: Any = None
    flops: int = 0  # forward FLOPs of ops run directly by this module
    flops_total: int = 0
    train_flops_total: int = 0
    formula: str | None = None  # "Linear: 768·3072 + 3072 = 2,362,368"
    formula_symbolic: str | None = None
    formula_value: int | None = None  # checked against the tensors' numel
    params_raw: int = 0  # own tensors' numel including shared ones
    keras_params: int = 0  # own parameters + BatchNorm moving mean/variance, as Keras counts them
    in_channels: int | None = None
    out_channels: int | None = None
    groups: int | None = None
    call_index: int | None = None  # position of its first call in the forward (None: not called, or not traced)


@dataclass
class KindRow:
    kind: str
    params: int
    trainable: int
    frozen: int
    share: float  # of all parameters
    flops: int  # forward
    layers: int  # weight layers of this kind


@dataclass
class BlockRow:
    name: str
    cls: str
    is_block: bool  # a repeated block (False: a top-level part outside the blocks)
    params: int
    trainable: int
    share: float
    flops: int
    applications: int = 1  # times the forward ran it (ALBERT's one shared layer: 12)


@dataclass
class SharedTensor:
    name: str  # where it reappears
    owner: str  # first owner, where it is counted
    numel: int


@dataclass
class Totals:
    params: int
    trainable: int
    frozen: int
    buffers: int
    params_if_shared_counted_twice: int
    keras_params: int  # BatchNorm moving mean/variance counted as non-trainable params, as Keras does
    keras_trainable: int
    keras_non_trainable: int
    flops_forward: int  # what the forward runs: under top-k routing, each token's k experts only
    flops_train: int
    attention_flops: int
    causal_masked_flops: int  # part of attention_flops a causal kernel could skip
    weight_bytes: int
    # Mixture of experts: the parameters one token uses (each experts unit counts
    # top_k / num_experts of its parameters; everything else counts whole) and the
    # forward FLOPs if every token ran through every expert. Equal to params and
    # flops_forward for a dense model.
    active_params: int = 0
    dense_flops_forward: int = 0


@dataclass
class Depth:
    weight_depth: int  # weight layers on the longest input→output path of the data flow
    block_depth: int  # repeated blocks on that path
    module_depth: int  # nesting depth of the module tree
    max_channel_depth: int | None  # widest conv feature map (channels)
    channel_depths: list[dict] = field(default_factory=list)  # per conv layer, in forward order
    weight_layers: int = 0  # all weight layers in the model (on any path)
    blocks: int = 0  # block applications in the forward (without a trace: block modules)
    block_modules: int = 0  # distinct block modules (fewer than blocks when one is applied repeatedly)
    # encoder-decoder models: the depths inside each part, counted from the part's own inputs
    parts: list[PartDepth] = field(default_factory=list)


@dataclass
class PartDepth:
    part: str  # "encoder" | "decoder"
    module: str  # its qualified name
    weight_depth: int
    block_depth: int


@dataclass
class Analysis:
    model: str
    rows: list[LayerRow]
    totals: Totals
    depth: Depth
    by_kind: list[KindRow]
    by_block: list[BlockRow]
    shared: list[SharedTensor]
    input_shape: Any
    output_shape: Any
    traced: bool
    notes: list[str] = field(default_factory=list)  # what a reader should know (shared blocks, unknown top-k)
    # when the forward failed: where ({"module", "cls", "input_shapes", "error"}); rows after it were not traced
    failure: dict | None = None

    def row(self, name: str) -> LayerRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def kind(self, kind: str) -> KindRow:
        for k in self.by_kind:
            if k.kind == kind:
                return k
        return KindRow(kind, 0, 0, 0, 0.0, 0, 0)

    def to_dict(self) -> dict:
        """Plain data (``dataclasses.asdict``'s layout), built field by field: asdict's deep copy of
        a 400B model's 1,900 rows takes longer than its whole analysis. Lists inside (shapes,
        notes) are the analysis' own: copy before changing them."""
        d = dict(self.__dict__)
        d["rows"] = [dict(r.__dict__) for r in self.rows]
        d["totals"] = dict(self.totals.__dict__)
        d["depth"] = {**self.depth.__dict__, "parts": [dict(p.__dict__) for p in self.depth.parts],
                      "channel_depths": [dict(c) for c in self.depth.channel_depths]}
        d["by_kind"] = [dict(k.__dict__) for k in self.by_kind]
        d["by_block"] = [dict(b.__dict__) for b in self.by_block]
        d["shared"] = [dict(x.__dict__) for x in self.shared]
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def default_inputs(model: nn.Module, batch_size: int = 1, seq_len: int | None = None):
    if hasattr(model, "example_inputs"):
        return model.example_inputs(batch_size=batch_size, seq_len=seq_len)
    return None


def make_inputs(model: nn.Module, input_shape, dtype: torch.dtype | None = None):
    """Zeros of ``input_shape`` on the model's device; integer ids if the model starts with an Embedding."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if dtype is None:
        first = next((m for m in model.modules() if weight_layer_count(m)), None)
        dtype = torch.long if isinstance(first, (nn.Embedding, nn.EmbeddingBag)) else None
        if dtype is None:
            dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    shapes = input_shape if input_shape and isinstance(input_shape[0], (tuple, list)) else [input_shape]
    return tuple(torch.zeros(tuple(s), dtype=dtype, device=device) for s in shapes)


def analyze(
    model: nn.Module,
    inputs=None,
    input_shape=None,
    input_dtype: torch.dtype | None = None,
    batch_size: int = 1,
    seq_len: int | None = None,
    name: str | None = None,
    trace_forward: bool = True,
) -> Analysis:
    """Analyse any ``nn.Module``: per-layer parameters, kinds, depths and FLOPs.

    Args:
        model: the module (built on ``meta`` is fine: nothing is computed).
        inputs: what ``model`` is called with: a tensor, a tuple of positional
            arguments, or a dict of keyword arguments.
        input_shape: instead of ``inputs``, a shape (or list of shapes) of zeros
            to create on the model's device; integer token ids when the model's
            first weight layer is an Embedding, else floats.
        batch_size, seq_len: for models with ``example_inputs`` (all of
            layerwise's), the inputs used when neither of the above is given.
        trace_forward: False skips the forward pass (no shapes, FLOPs or
            data-flow depth; parameter accounting only).
    """
    if not isinstance(model, nn.Module):
        raise LayerwiseError(f"analyze: expected a torch.nn.Module, got {type(model).__name__}")
    if inputs is None and input_shape is not None:
        inputs = make_inputs(model, input_shape, input_dtype)
    if inputs is None and trace_forward:
        inputs = default_inputs(model, batch_size, seq_len)
    model_name = name or type(model).__name__
    block_ids = detect_blocks(model)
    parts = encoder_decoder_parts(model)
    scopes = {id(m): part for part, (n, m) in parts.items()}
    tr = None
    if trace_forward and inputs is not None:
        tr = _trace(model, inputs, block_ids, scopes, model_name)
        # blocks are applications: a module the forward ran repeatedly is one block per run
        extra = blocks_from_applications(model, {n: t.calls for n, t in tr.modules.items()}, block_ids)
        if extra:
            block_ids = block_ids | extra
            tr = _trace(model, inputs, block_ids, scopes, model_name)
    a = _aggregate(model, tr, block_ids, model_name, inputs)
    a.depth.parts = [PartDepth(part, n, *tr.parts.get(part, (0, 0))) for part, (n, _) in parts.items()] if tr else []
    return a


def block_applications(model: nn.Module, inputs=None, batch_size: int = 1,
                       seq_len: int | None = None) -> list[tuple[str, nn.Module]]:
    """Every application of a repeated block in one forward, in order, as (name, module).

    Blocks come from the data flow: one layer applied twelve times (ALBERT) is twelve
    entries of the same module. The forward runs on a meta copy of ``model`` (the model
    itself is not touched) with ``inputs`` or its example inputs; [] when there are none
    or the forward fails.
    """
    from layerwise.analysis.inputs import example_inputs, meta_copy

    m = meta_copy(model)
    if inputs is None:
        inputs = example_inputs(m, batch_size=batch_size, seq_len=seq_len)
    else:
        inputs = torch.utils._pytree.tree_map(
            lambda x: torch.empty_like(x, device="meta") if isinstance(x, torch.Tensor) else x, inputs)
    if inputs is None:
        return []
    static = detect_blocks(m)
    try:
        tr = trace(m, inputs, static)
        extra = blocks_from_applications(m, {n: t.calls for n, t in tr.modules.items()}, static)
        if extra:
            tr = trace(m, inputs, static | extra)
    except TraceFailure:
        return []
    by_name = dict(model.named_modules())
    return [(n, by_name[n]) for n in tr.block_calls]


def _trace(model: nn.Module, inputs, block_ids: set[int], scopes: dict[int, str], model_name: str) -> TraceResult:
    """``trace``, with a failure turned into a one-line error that carries the partial analysis."""
    try:
        return trace(model, inputs, block_ids, scopes)
    except TraceFailure as f:
        raise _failure_error(model, f, block_ids, model_name, inputs) from None


def _failure_error(model: nn.Module, f: TraceFailure, block_ids, model_name: str, inputs) -> ForwardFailure:
    given = _input_shape(inputs)
    if isinstance(given, list) and len(given) == 1 and isinstance(given[0], list):
        given = given[0]
    layer = f.stack[-1] if f.stack else ""
    mod = dict(model.named_modules()).get(layer)
    cls = type(mod).__name__ if mod is not None else type(model).__name__
    where = f"layer '{layer}' ({cls})" if layer else f"the model's own forward ({type(model).__name__})"
    err = f.error
    msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
    msg = f"{type(err).__name__}: {msg}" if msg else type(err).__name__
    t = f.result.modules.get(layer)
    layer_inputs = t.input_shapes if t else None
    if f.internal:
        text = (f"internal tracing failure in layerwise (a bug in layerwise, not in the model or the input) "
                f"at {where}, {f.op}: {msg}")
        cls_err = InternalError
    elif _needs_values(inputs, msg):
        text = (f"{where} needs tensor values, which the meta device does not have ({f.op or 'forward'}: {msg}); "
                "analyse it on a real device (--device cpu) with a small config")
        cls_err = ForwardFailure
    elif f.op is not None:
        text = f"input {given} does not fit {where}: {f.op} got tensors of shapes {f.shapes}: {msg}"
        cls_err = TracedInputError
    else:
        text = f"input {given} does not fit {where}: {msg}"
        cls_err = TracedInputError
    partial = _aggregate(model, f.result, block_ids, model_name, inputs)
    partial.failure = {"module": layer, "cls": cls, "input_shapes": layer_inputs, "error": text}
    return cls_err(text, module=layer, module_cls=cls, input_shapes=layer_inputs, partial=partial)


def _needs_values(inputs, msg: str) -> bool:
    from layerwise.analysis.trace import _tensors

    on_meta = any(t.device.type == "meta" for t in _tensors(inputs, []))
    return on_meta and "meta" in msg.lower()


def _aggregate(model: nn.Module, tr, block_ids: set[int], model_name: str, inputs) -> Analysis:
    traces: dict[str, ModuleTrace] = tr.modules if tr else {}
    first_path: dict[int, str] = {}
    first_owner: dict[int, str] = {}  # param id -> "module.path.pname"
    rows: list[LayerRow] = []
    shared: list[SharedTensor] = []
    by_name: dict[str, LayerRow] = {}
    last_wl = tr.call_order[-1] if tr and tr.call_order else None
    kinds = assign_kinds(model, block_ids, last_wl)
    experts = detect_experts(model)
    unit_of: dict[str, str] = {}  # module path -> the experts unit it belongs to
    for qname, _ in model.named_modules(remove_duplicate=False):
        for u in experts:
            if qname == u or qname.startswith(u + "."):
                unit_of[qname] = u
    call_index = {n: i for i, n in enumerate(tr.module_order)} if tr else {}

    for qname, m in model.named_modules(remove_duplicate=False):
        level = 0 if qname == "" else qname.count(".") + 1
        is_block = id(m) in block_ids
        kind = kinds[qname]
        wl = weight_layer_count(m)
        reuse_of = first_path.get(id(m))
        if reuse_of is None:
            first_path[id(m)] = qname
        t0 = traces.get(qname)
        if not wl and t0 is not None and t0.functional_weights:
            # parameters this module owns that the forward multiplied by (bare nn.Parameters):
            # one weight layer each, one per expert for a stack of expert matrices
            unit = experts.get(unit_of.get(qname, ""))
            for pname in t0.functional_weights:
                p = getattr(m, pname)
                wl += unit.num_experts if (unit and p.dim() == 3 and p.shape[0] == unit.num_experts) else 1
        own, own_tr, raw = 0, 0, 0
        row_shared: list[str] = []
        for pname, p in ((k, v) for k, v in m._parameters.items() if v is not None):  # own parameters only
            n = p.numel()
            raw += n
            full = f"{qname}.{pname}" if qname else pname
            if id(p) in first_owner:
                row_shared.append(f"{pname} = {first_owner[id(p)]}")
                shared.append(SharedTensor(full, first_owner[id(p)], n))
                continue
            first_owner[id(p)] = full
            own += n
            own_tr += n if p.requires_grad else 0
        buffers = sum(b.numel() for b in m._buffers.values() if b is not None) if reuse_of is None else 0
        f = formula(m)
        t = traces.get(first_path[id(m)])
        row = LayerRow(
            name=qname,
            cls=type(m).__name__,
            kind=kind,
            level=level,
            is_leaf=not any(True for _ in m.children()),
            weight_layers=wl,
            is_block=is_block,
            params=own,
            params_total=own,
            trainable=own_tr,
            trainable_total=own_tr,
            status="",
            buffers=buffers,
            shared=row_shared,
            reuse_of=reuse_of,
            calls=t.calls if (t and reuse_of is None) else 0,
            input_shape=t.input_shapes if t else None,
            output_shape=t.output_shape if t else None,
            flops=t.flops if (t and reuse_of is None) else 0,
            flops_total=t.flops if (t and reuse_of is None) else 0,
            train_flops_total=t.train_flops if (t and reuse_of is None) else 0,
            formula=str(f) if f else None,
            formula_symbolic=f.symbolic if f else None,
            formula_value=f.value if f else None,
            params_raw=raw,
            call_index=call_index.get(first_path[id(m)]) if reuse_of is None else None,
        )
        row.keras_params = own + (_bn_stats(m) if reuse_of is None else 0)
        if isinstance(m, nn.modules.conv._ConvNd):
            row.in_channels, row.out_channels, row.groups = m.in_channels, m.out_channels, m.groups
        rows.append(row)
        by_name[qname] = row

    # roll children up into containers (deepest first)
    for row in sorted(rows, key=lambda r: -r.level):
        if row.name == "":
            continue
        parent = by_name[row.name.rsplit(".", 1)[0] if "." in row.name else ""]
        parent.params_total += row.params_total
        parent.trainable_total += row.trainable_total
        parent.flops_total += row.flops_total
        parent.train_flops_total += row.train_flops_total
    for row in rows:
        if row.params_total == 0:
            row.status = ""
        elif row.trainable_total == row.params_total:
            row.status = "trainable"
        elif row.trainable_total == 0:
            row.status = "frozen"
        else:
            row.status = "partial"

    root = by_name[""]
    total = root.params_total
    trainable = root.trainable_total
    unique_params = {id(p): p for p in model.parameters()}
    assert sum(p.numel() for p in unique_params.values()) == total, "parameter accounting out of balance"
    buffers = sum(b.numel() for b in {id(b): b for b in model.buffers()}.values())
    bn_stats = sum(_bn_stats(m) for m in {id(m): m for m in model.modules()}.values())
    attn = sum(t.attention_flops for t in traces.values())
    causal = sum(t.causal_attention_flops for t in traces.values())
    totals = Totals(
        params=total,
        trainable=trainable,
        frozen=total - trainable,
        buffers=buffers,
        params_if_shared_counted_twice=total + sum(s.numel for s in shared),
        keras_params=total + bn_stats,
        keras_trainable=trainable,
        keras_non_trainable=total - trainable + bn_stats,
        flops_forward=sum(t.flops for t in traces.values()),
        flops_train=sum(t.train_flops for t in traces.values()),
        attention_flops=attn,
        causal_masked_flops=causal,
        weight_bytes=sum(p.numel() * p.element_size() for p in unique_params.values()),
    )
    notes: list[str] = []
    inactive = dense_extra = 0
    for u in experts.values():
        r = by_name[u.name]
        if u.top_k is None:
            notes.append(f"{u.name}: {u.num_experts} experts, but the model does not say how many each token uses; "
                         "all counted as active")
            continue
        inactive += r.params_total * (u.num_experts - u.top_k) // u.num_experts
        dense_extra += r.flops_total * (u.num_experts - u.top_k) // u.top_k
    totals.active_params = total - inactive
    totals.dense_flops_forward = totals.flops_forward + dense_extra

    by_kind = _by_kind(rows, total, {r.name for r in rows if _counts_as_weight_layer(r, by_name)})
    by_block = _by_block(rows, total)
    channel = [
        {
            "name": r.name,
            "kind": r.kind,
            "in_channels": r.in_channels,
            "out_channels": r.out_channels,
            "groups": r.groups,
            "output_shape": r.output_shape,
        }
        for r in rows
        if r.in_channels is not None and r.reuse_of is None
    ]
    if tr:
        order = {n: i for i, n in enumerate(tr.call_order)}
        channel.sort(key=lambda c: order.get(c["name"], len(order)))
    depth = Depth(
        weight_depth=tr.weight_depth if tr else 0,
        block_depth=tr.block_depth if tr else 0,
        module_depth=max(r.level for r in rows),
        max_channel_depth=max((c["out_channels"] for c in channel), default=None),
        channel_depths=channel,
        weight_layers=sum(r.weight_layers for r in rows if _counts_as_weight_layer(r, by_name)),
        blocks=len(tr.block_calls) + tr.rnn_layer_blocks if tr else sum(1 for r in rows if r.is_block and r.reuse_of is None),
        block_modules=sum(1 for r in rows if r.is_block and r.reuse_of is None),
    )
    applied = {}
    for n in (tr.block_calls if tr else []):
        applied[n] = applied.get(n, 0) + 1
    for n, c in applied.items():
        if c > 1:
            notes.append(f"{c} of the blocks are applications of one module, {n}: its parameters are counted once "
                         "and training it trains every application")
    for b in by_block:
        b.applications = applied.get(b.name, 1) if b.is_block else 1
    return Analysis(
        model=model_name,
        rows=rows,
        totals=totals,
        depth=depth,
        by_kind=by_kind,
        by_block=by_block,
        shared=shared,
        input_shape=_input_shape(inputs),
        output_shape=tr.output_shape if tr else None,
        traced=tr is not None,
        notes=notes,
    )


def _bn_stats(m: nn.Module) -> int:
    if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
        return m.running_mean.numel() + m.running_var.numel()
    return 0


def _counts_as_weight_layer(row: LayerRow, by_name: dict[str, LayerRow]) -> bool:
    """A weight layer not nested in another one (whose count already includes it), seen once."""
    if not row.weight_layers or row.reuse_of is not None:
        return False
    name = row.name
    while "." in name:
        name = name.rsplit(".", 1)[0]
        if by_name[name].weight_layers:
            return False
    return not (row.name and by_name[""].weight_layers > 0)


def _input_shape(inputs):
    from layerwise.analysis.trace import _shape_of

    return _shape_of(inputs) if inputs is not None else None


def _by_kind(rows: list[LayerRow], total: int, counted: set[str]) -> list[KindRow]:
    acc: dict[str, list[int]] = {k: [0, 0, 0, 0] for k in KINDS}
    for r in rows:
        a = acc.setdefault(r.kind, [0, 0, 0, 0])
        a[0] += r.params
        a[1] += r.trainable
        a[2] += r.flops
        if r.name in counted:
            a[3] += r.weight_layers
    out = [
        KindRow(k, v[0], v[1], v[0] - v[1], (v[0] / total) if total else 0.0, v[2], v[3])
        for k, v in acc.items()
        if v[0] or v[2] or v[3]
    ]
    return out


def _prefixes(name: str) -> list[str]:
    parts = name.split(".") if name else []
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _by_block(rows: list[LayerRow], total: int) -> list[BlockRow]:
    """Each repeated block, and each top-level part outside the blocks."""
    blocks = [r for r in rows if r.is_block and r.reuse_of is None]
    holds_block = {p for b in blocks for p in _prefixes(b.name)}  # a block or an ancestor of one
    out: list[BlockRow] = []
    covered: set[str] = set()
    for b in blocks:
        if any(p in covered for p in _prefixes(b.name)[:-1]):
            continue
        covered.add(b.name)

    def group(name: str) -> str:  # the coarsest ancestor of ``name`` that contains no block
        return next((p for p in _prefixes(name) if p not in holds_block), name)

    # parts outside blocks: parameters of rows not inside any block, grouped by top-level child
    outside: dict[str, list[int]] = {}
    for r in rows:
        if not r.params and not r.flops:
            continue
        if any(p in covered for p in _prefixes(r.name)):
            continue
        a = outside.setdefault(group(r.name), [0, 0, 0])
        a[0] += r.params
        a[1] += r.trainable
        a[2] += r.flops
    seen_outside = set()
    for r in rows:  # keep model order
        if r.name in covered:
            out.append(BlockRow(r.name, r.cls, True, r.params_total, r.trainable_total,
                                r.params_total / total if total else 0.0, r.flops_total))
        g = group(r.name)
        if g in outside and g not in seen_outside and (r.name == g):
            seen_outside.add(g)
            p, t, f = outside[g]
            out.append(BlockRow(g or "(model)", r.cls if g else "(own)", False, p, t, p / total if total else 0.0, f))
    for g, (p, t, f) in outside.items():
        if g not in seen_outside:
            out.append(BlockRow(g or "(model)", "", False, p, t, p / total if total else 0.0, f))
    return out
