"""``analyze(model, ...)``: the layer-by-layer account of a model.

collect (parameters per module, one forward trace) → aggregate (totals, by kind,
by block, depths) → an :class:`Analysis` of plain data. Rendering lives in
``layerwise.report``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from layerwise.analysis.formulas import formula
from layerwise.analysis.kinds import assign_kinds, detect_blocks, weight_layer_count
from layerwise.analysis.trace import ModuleTrace, trace
from layerwise.errors import LayerwiseError
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
    flops_forward: int
    flops_train: int
    attention_flops: int
    causal_masked_flops: int  # part of attention_flops a causal kernel could skip
    weight_bytes: int


@dataclass
class Depth:
    weight_depth: int  # weight layers on the longest input→output path of the data flow
    block_depth: int  # repeated blocks on that path
    module_depth: int  # nesting depth of the module tree
    max_channel_depth: int | None  # widest conv feature map (channels)
    channel_depths: list[dict] = field(default_factory=list)  # per conv layer, in forward order
    weight_layers: int = 0  # all weight layers in the model (on any path)
    blocks: int = 0  # all repeated blocks


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
        return dataclasses.asdict(self)

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
    block_ids = detect_blocks(model)
    tr = trace(model, inputs, block_ids) if (trace_forward and inputs is not None) else None
    return _aggregate(model, tr, block_ids, name or type(model).__name__, inputs)


def _aggregate(model: nn.Module, tr, block_ids: set[int], model_name: str, inputs) -> Analysis:
    traces: dict[str, ModuleTrace] = tr.modules if tr else {}
    first_path: dict[int, str] = {}
    first_owner: dict[int, str] = {}  # param id -> "module.path.pname"
    rows: list[LayerRow] = []
    shared: list[SharedTensor] = []
    by_name: dict[str, LayerRow] = {}
    last_wl = tr.call_order[-1] if tr and tr.call_order else None
    kinds = assign_kinds(model, block_ids, last_wl)
    call_index = {n: i for i, n in enumerate(tr.module_order)} if tr else {}

    for qname, m in model.named_modules(remove_duplicate=False):
        level = 0 if qname == "" else qname.count(".") + 1
        is_block = id(m) in block_ids
        kind = kinds[qname]
        wl = weight_layer_count(m)
        reuse_of = first_path.get(id(m))
        if reuse_of is None:
            first_path[id(m)] = qname
        own, own_tr, raw = 0, 0, 0
        row_shared: list[str] = []
        for pname, p in m.named_parameters(recurse=False):
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
        buffers = sum(b.numel() for _, b in m.named_buffers(recurse=False)) if reuse_of is None else 0
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
        blocks=sum(1 for r in rows if r.is_block and r.reuse_of is None),
    )
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


def _by_block(rows: list[LayerRow], total: int) -> list[BlockRow]:
    """Each repeated block, and each top-level part outside the blocks."""
    blocks = [r for r in rows if r.is_block and r.reuse_of is None]
    block_names = [b.name for b in blocks]
    out: list[BlockRow] = []
    covered: set[str] = set()
    for b in blocks:
        if any(b.name.startswith(o + ".") for o in covered):
            continue
        covered.add(b.name)
    # parts outside blocks: parameters of rows not inside any block, grouped by top-level child
    outside: dict[str, list[int]] = {}
    for r in rows:
        if not r.params and not r.flops:
            continue
        if any(r.name == n or r.name.startswith(n + ".") for n in covered):
            continue
        top = _outside_group(r.name, block_names)
        a = outside.setdefault(top, [0, 0, 0])
        a[0] += r.params
        a[1] += r.trainable
        a[2] += r.flops
    seen_outside = set()
    for r in rows:  # keep model order
        if r.name in covered:
            out.append(BlockRow(r.name, r.cls, True, r.params_total, r.trainable_total,
                                r.params_total / total if total else 0.0, r.flops_total))
        g = _outside_group(r.name, block_names)
        if g in outside and g not in seen_outside and (r.name == g):
            seen_outside.add(g)
            p, t, f = outside[g]
            out.append(BlockRow(g or "(model)", r.cls if g else "(own)", False, p, t, p / total if total else 0.0, f))
    for g, (p, t, f) in outside.items():
        if g not in seen_outside:
            out.append(BlockRow(g or "(model)", "", False, p, t, p / total if total else 0.0, f))
    return out


def _outside_group(name: str, block_names: list[str]) -> str:
    """The coarsest ancestor of ``name`` that contains no block (its own group)."""
    parts = name.split(".") if name else []
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if not any(b == prefix or b.startswith(prefix + ".") for b in block_names):
            return prefix
    return name
