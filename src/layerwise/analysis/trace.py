"""One forward pass that records, per module: output shapes, forward and training
FLOPs, and the depth of the data flow (weight layers and blocks on the longest path).

The pass runs under a ``TorchFunctionMode`` that sees every torch call with the
tensors the model passed, plus forward hooks on every module. It works on the
``meta`` device (no weights, no compute) and on real devices; saved activations
are dropped as they are produced, so tracing a real model costs no activation
memory.

FLOP convention (the one FlopCounterMode and the scaling-law literature use):
2 FLOPs per multiply-accumulate of matmuls, convolutions and attention's two
matmuls (scores and values, dense even when causal — a dense kernel computes the
masked half too); element-wise ops, norms and softmax are not counted. The
training step adds, for each product ``a @ b``, one product of the same size for
the gradient of each operand that requires grad: weight gradients only for
trainable weights, input gradients only where something upstream is trainable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from layerwise.analysis.kinds import weight_layer_count
from layerwise.errors import InputShapeError


@dataclass
class ModuleTrace:
    calls: int = 0
    input_shapes: list | None = None
    output_shape: Any = None
    flops: int = 0  # forward, attributed to the innermost module running the op
    train_flops: int = 0  # forward + backward
    attention_flops: int = 0  # of which attention's score/value products
    causal_attention_flops: int = 0  # of those, the masked-out half of causal attention


@dataclass
class TraceResult:
    modules: dict[str, ModuleTrace] = field(default_factory=dict)
    weight_depth: int = 0
    block_depth: int = 0
    output_shape: Any = None
    call_order: list[str] = field(default_factory=list)  # weight layers, first call order
    unattributed_flops: int = 0
    module_order: list[str] = field(default_factory=list)  # every module called, in first-call (forward) order


def _shape_of(x):
    if isinstance(x, torch.Tensor):
        return list(x.shape)
    if isinstance(x, (list, tuple)):
        shapes = [_shape_of(v) for v in x]
        shapes = [s for s in shapes if s is not None]
        return shapes or None
    if isinstance(x, dict):
        shapes = {k: _shape_of(v) for k, v in x.items()}
        shapes = {k: s for k, s in shapes.items() if s is not None}
        return shapes or None
    # dataclass-like model outputs (ModelOutput is a dict; ours may be a dataclass)
    if hasattr(x, "__dataclass_fields__"):
        return _shape_of({k: getattr(x, k) for k in x.__dataclass_fields__})
    return None


def _tensors(x, out: list):
    if isinstance(x, torch.Tensor):
        out.append(x)
    elif isinstance(x, (list, tuple)):
        for v in x:
            _tensors(v, out)
    elif isinstance(x, dict):
        for v in x.values():
            _tensors(v, out)
    elif hasattr(x, "__dataclass_fields__"):
        for k in x.__dataclass_fields__:
            _tensors(getattr(x, k), out)
    return out


_MATMUL = {"matmul", "__matmul__", "mm", "bmm", "__rmatmul__"}
_ADDMM = {"addmm", "baddbmm", "addbmm", "addmm_", "baddbmm_"}
_CONV = {"conv1d", "conv2d", "conv3d"}
_CONVT = {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
_LOOKUP = {"embedding", "embedding_bag"}


def _bcast_batch(a: torch.Size, b: torch.Size) -> int:
    try:
        return math.prod(torch.broadcast_shapes(a, b))
    except RuntimeError:
        return max(math.prod(a), math.prod(b))


def matmul_flops(a: torch.Tensor, b: torch.Tensor) -> int:
    """2·m·k·n times the broadcast batch, for torch.matmul semantics."""
    sa, sb = tuple(a.shape), tuple(b.shape)
    if len(sa) == 0 or len(sb) == 0:
        return 0
    if len(sa) == 1:
        sa = (1,) + sa
    if len(sb) == 1:
        sb = sb + (1,)
    m, k = sa[-2], sa[-1]
    n = sb[-1]
    batch = _bcast_batch(torch.Size(sa[:-2]), torch.Size(sb[:-2]))
    return 2 * batch * m * k * n


def _conv_flops(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, transposed: bool) -> int:
    # weight: (C_out, C_in/g, *k) or, transposed, (C_in, C_out/g, *k)
    k = math.prod(w.shape[2:])
    if transposed:
        n, c_in = x.shape[0], x.shape[1]
        spatial = math.prod(x.shape[2:])
        return 2 * n * c_in * spatial * w.shape[1] * k
    n = out.shape[0] if out.dim() == x.dim() else 1
    c_out = out.shape[1] if out.dim() == x.dim() else out.shape[0]
    spatial = math.prod(out.shape[2:] if out.dim() == x.dim() else out.shape[1:])
    return 2 * n * c_out * spatial * w.shape[1] * k


def _rg(t) -> bool:
    return isinstance(t, torch.Tensor) and t.requires_grad


class _Tracer(TorchFunctionMode):
    def __init__(self, model: nn.Module, block_ids: set[int]):
        super().__init__()
        self.model = model
        self.block_ids = block_ids
        self.result = TraceResult()
        self.depth: WeakIdKeyDictionary = WeakIdKeyDictionary()  # tensor -> (weight depth, block depth)
        self.stack: list[str] = []
        self.wl_active = 0  # > 0 while inside a weight layer: inner ops add no depth
        self.block_active = 0
        self.special_active = 0  # > 0 inside a module whose FLOPs come from its own formula
        self.pending: list[tuple] = []
        self.failure: tuple | None = None
        self.names: dict[int, str] = {}
        self.param_owner: dict[int, nn.Module] = {}  # weight-layer parameters -> layer
        self.handles: list = []

    # ----- bookkeeping -------------------------------------------------------
    def _in_depth(self, objs) -> tuple[int, int]:
        wd = bd = 0
        for t in _tensors(objs, []):
            d = self.depth.get(t)
            if d is not None:
                wd = max(wd, d[0])
                bd = max(bd, d[1])
        return wd, bd

    def _set_depth(self, objs, d: tuple[int, int]) -> None:
        for t in _tensors(objs, []):
            old = self.depth.get(t)
            self.depth[t] = d if old is None else (max(d[0], old[0]), max(d[1], old[1]))
            self.result.weight_depth = max(self.result.weight_depth, d[0])
            self.result.block_depth = max(self.result.block_depth, d[1])

    def _add_flops(self, fwd: int, train: int, attention: int = 0, causal: int = 0) -> None:
        name = self.stack[-1] if self.stack else ""
        tr = self.result.modules.setdefault(name, ModuleTrace())
        tr.flops += fwd
        tr.train_flops += train
        tr.attention_flops += attention
        tr.causal_attention_flops += causal

    def _product(self, flops: int, a_rg: bool, b_rg: bool, attention: bool = False, causal: bool = False) -> None:
        train = flops * (1 + int(a_rg) + int(b_rg))
        self._add_flops(flops, train, flops if attention else 0, flops // 2 if (attention and causal) else 0)

    # ----- torch function mode ---------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            out = func(*args, **kwargs)
        except Exception as e:
            if self.failure is None:
                shapes = [list(a.shape) for a in _tensors((args, kwargs), [])]
                self.failure = (list(self.stack), getattr(func, "__name__", str(func)), shapes, e)
            raise
        name = getattr(func, "__name__", "")
        if name in ("__get__", "size", "dim", "numel", "__len__", "is_floating_point"):
            return out
        wd, bd = self._in_depth((args, kwargs))
        if not self.special_active:
            self._count(name, args, kwargs, out)
        if not self.wl_active and (name in _MATMUL or name in _ADDMM or name == "linear" or name in _LOOKUP
                                   or name in _CONV or name in _CONVT):
            # A weight layer's parameter used outside its module (a tied head as
            # F.linear(x, wte.weight)): the op is that weight layer.
            for t in _tensors((args, kwargs), []):
                if id(t) in self.param_owner:
                    wd += 1
                    break
        if isinstance(out, (torch.Tensor, list, tuple)):
            self._set_depth(out, (wd, bd))
        return out

    def _count(self, name: str, args, kwargs, out) -> None:
        if name == "linear":
            x, w = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            flops = 2 * (x.numel() // max(x.shape[-1], 1)) * w.shape[0] * w.shape[1]
            self._product(flops, _rg(x), _rg(w))
        elif name in _MATMUL:
            a, b = args[0], args[1]
            if name == "__rmatmul__":
                a, b = b, a
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
                self._product(matmul_flops(a, b), _rg(a), _rg(b))
        elif name in _ADDMM:
            a, b = args[1], args[2]
            flops = matmul_flops(a, b)
            if name == "addbmm":
                flops = matmul_flops(a, b)
            self._product(flops, _rg(a), _rg(b))
        elif name in _CONV or name in _CONVT:
            x, w = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            self._product(_conv_flops(x, w, out, name in _CONVT), _rg(x), _rg(w))
        elif name == "scaled_dot_product_attention":
            q, k, v = args[0], args[1], args[2]
            causal = bool(kwargs.get("is_causal", args[5] if len(args) > 5 else False))
            b_h = math.prod(q.shape[:-2])
            L, E = q.shape[-2], q.shape[-1]
            S, Ev = k.shape[-2], v.shape[-1]
            qk = 2 * b_h * L * S * E
            pv = 2 * b_h * L * S * Ev
            self._product(qk, _rg(q), _rg(k), attention=True, causal=causal)
            self._product(pv, _rg(q) or _rg(k), _rg(v), attention=True, causal=causal)
        elif name == "einsum" and len(args) == 3 and all(isinstance(a, torch.Tensor) for a in args[1:]):
            self._product(_einsum_flops(args[0], args[1], args[2]), _rg(args[1]), _rg(args[2]))

    # ----- module hooks ----------------------------------------------------
    def _pre(self, module, args, kwargs):
        name = self.names[id(module)]
        self.stack.append(name)
        tr = self.result.modules.setdefault(name, ModuleTrace())
        tr.calls += 1
        if tr.calls == 1:
            self.result.module_order.append(name)
        if tr.input_shapes is None:
            tr.input_shapes = _shape_of((args, kwargs)) or []
        d = self._in_depth((args, kwargs))
        wl = weight_layer_count(module)
        outer_wl = wl and not self.wl_active
        is_block = id(module) in self.block_ids and not self.block_active
        rnn_blocks = isinstance(module, nn.RNNBase) and not self.block_active
        special = isinstance(module, (nn.RNNBase, nn.MultiheadAttention)) and not self.special_active
        if special:
            self._module_flops(module, args, kwargs)
        self.pending.append((d, wl if outer_wl else 0, is_block, rnn_blocks, special))
        if outer_wl:
            self.wl_active += 1
            if not self.result.call_order or self.result.call_order[-1] != name:
                self.result.call_order.append(name)
        if is_block:
            self.block_active += 1
        if special:
            self.special_active += 1

    def _post(self, module, args, kwargs, output):
        (wd, bd), wl, is_block, rnn_blocks, special = self.pending.pop()
        name = self.stack.pop()
        tr = self.result.modules[name]
        if tr.output_shape is None:
            tr.output_shape = _shape_of(output)
        if wl:
            self.wl_active -= 1
        if is_block:
            self.block_active -= 1
        if special:
            self.special_active -= 1
        if wl or is_block or rnn_blocks:
            # A weight layer's output is exactly one step (or ``wl``) deeper than its
            # input, whatever ran inside it; a block only adds to the block count.
            out_wd, out_bd = self._in_depth(output)
            new_wd = wd + wl if wl else out_wd
            new_bd = bd + (1 if is_block else 0) + (module.num_layers if rnn_blocks and not is_block else 0)
            if not is_block and not rnn_blocks:
                new_bd = max(bd, out_bd)
            self.depth_override(output, (new_wd, new_bd))
        return None

    def depth_override(self, objs, d):
        for t in _tensors(objs, []):
            self.depth[t] = d
        self.result.weight_depth = max(self.result.weight_depth, d[0])
        self.result.block_depth = max(self.result.block_depth, d[1])

    def _module_flops(self, module, args, kwargs) -> None:
        if isinstance(module, nn.RNNBase):
            x = args[0] if args else kwargs.get("input")
            if isinstance(x, nn.utils.rnn.PackedSequence):
                tokens = x.data.shape[0]
                first = int(x.batch_sizes[0])  # sequences at the first time step
                x_rg = x.data.requires_grad
            else:
                if x.dim() == 2:  # unbatched (T, i)
                    tokens, first = x.shape[0], 1
                else:
                    tokens = x.shape[0] * x.shape[1]
                    first = x.shape[0] if module.batch_first else x.shape[1]
                x_rg = x.requires_grad
            g = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}[module.mode]
            h, p = module.hidden_size, module.proj_size or 0
            dirs = 2 if module.bidirectional else 1
            out = p or h
            upstream = x_rg
            for layer in range(module.num_layers):
                i = module.input_size if layer == 0 else out * dirs
                trainable = any(
                    getattr(module, f"{w}_l{layer}{sfx}").requires_grad
                    for w in ("weight_ih", "weight_hh")
                    for sfx in ([""] + (["_reverse"] if dirs == 2 else []))
                )
                f_ih = 2 * tokens * g * h * i * dirs
                f_hh = 2 * tokens * g * h * out * dirs
                f_pr = 2 * tokens * p * h * dirs if p else 0
                fwd = f_ih + f_hh + f_pr
                bwd = 0
                if trainable:
                    bwd += f_ih + f_hh + f_pr  # weight gradients
                if trainable or upstream:
                    # gradient through the recurrent state, back to every step but the first
                    # (the initial state is a constant)
                    bwd += f_hh * (tokens - first) // tokens + f_pr
                if upstream:
                    bwd += f_ih  # gradient to the layer's input
                self._add_flops(fwd, fwd + bwd)
                upstream = upstream or trainable
        elif isinstance(module, nn.MultiheadAttention):
            q = args[0] if args else kwargs["query"]
            k = args[1] if len(args) > 1 else kwargs["key"]
            v = args[2] if len(args) > 2 else kwargs["value"]
            if q.dim() == 2:
                q, k, v = q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)
            if module.batch_first:
                B, L, S = q.shape[0], q.shape[1], k.shape[1]
            else:
                L, B, S = q.shape[0], q.shape[1], k.shape[0]
            E = module.embed_dim
            w_rg = module.in_proj_weight.requires_grad if module.in_proj_weight is not None else module.q_proj_weight.requires_grad
            self._product(2 * B * L * E * E, q.requires_grad, w_rg)
            self._product(2 * B * S * module.kdim * E, k.requires_grad, w_rg)
            self._product(2 * B * S * module.vdim * E, v.requires_grad, w_rg)
            qkv_rg = q.requires_grad or k.requires_grad or v.requires_grad or w_rg
            causal = bool(kwargs.get("is_causal", False))
            self._product(2 * B * L * S * E, qkv_rg, qkv_rg, attention=True, causal=causal)
            self._product(2 * B * L * S * E, qkv_rg, qkv_rg, attention=True, causal=causal)
            self._product(2 * B * L * E * E, qkv_rg, module.out_proj.weight.requires_grad)

    def install(self) -> None:
        for name, m in self.model.named_modules():
            self.names[id(m)] = name
            self.handles.append(m.register_forward_pre_hook(self._pre, with_kwargs=True))
            self.handles.append(m.register_forward_hook(self._post, with_kwargs=True, always_call=True))
            if weight_layer_count(m):
                for p in m.parameters(recurse=True):
                    self.param_owner.setdefault(id(p), m)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def _einsum_flops(eq: str, a: torch.Tensor, b: torch.Tensor) -> int:
    eq = eq.replace(" ", "")
    if "->" not in eq or "." in eq:
        return 0
    lhs, _ = eq.split("->")
    ia, ib = lhs.split(",")
    sizes = {}
    for idx, t in ((ia, a), (ib, b)):
        for c, s in zip(idx, t.shape):
            sizes[c] = s
    return 2 * math.prod(sizes.values())


def _drop_saved(_t):
    return None


def _never_unpacked(_x):
    raise RuntimeError("layerwise analysis does not run backward")


def trace(model: nn.Module, inputs, block_ids: set[int]) -> TraceResult:
    """Run ``model`` once on ``inputs`` (a tuple of args, a dict of kwargs, or a tensor): its
    ``analysis_forward`` when it has one (the whole computation its training step runs)."""
    tracer = _Tracer(model, block_ids)
    was_training = model.training
    tracer.install()
    model.eval()
    try:
        # A model whose training step runs more than its forward (a GAN: D(G(z))) says so with
        # analysis_forward, so that every network it trains is traced.
        run = getattr(model, "analysis_forward", None) or model
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(_drop_saved, _never_unpacked), tracer:
            if isinstance(inputs, dict):
                out = run(**inputs)
            elif isinstance(inputs, (tuple, list)):
                out = run(*inputs)
            else:
                out = run(inputs)
        tracer.result.output_shape = _shape_of(out)
    except Exception as e:
        raise _shape_error(model, tracer, inputs, e) from None
    finally:
        tracer.remove()
        model.train(was_training)
    return tracer.result


def _shape_error(model, tracer: _Tracer, inputs, e: Exception) -> Exception:
    given = _shape_of(inputs)
    if isinstance(given, list) and len(given) == 1 and isinstance(given[0], list):
        given = given[0]
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if tracer.failure is not None:
        stack, op, shapes, _ = tracer.failure
        layer = stack[-1] if stack else ""
        mod = dict(model.named_modules()).get(layer)
        cls = type(mod).__name__ if mod is not None else "?"
        where = f"layer '{layer}' ({cls})" if layer else f"the model's own forward ({type(model).__name__})"
        return InputShapeError(f"input {given} does not fit {where}: {op} got tensors of shapes {shapes}: {msg}")
    layer = tracer.stack[-1] if tracer.stack else ""
    where = f"layer '{layer}'" if layer else type(model).__name__
    return InputShapeError(f"input {given} does not fit {where}: {type(e).__name__}: {msg}")
