"""What a module is: weight layer or not, its layer kind, whether it is a repeated block.

Models written in layerwise declare this (``layerwise.roles``); for any other
model it is inferred from the module's class, then from its qualified name.

Definitions (the trace, ``layerwise.analysis.trace``, completes them from the data flow):

- a weight layer is a module that applies learned maps (:func:`weight_layer_count`) or,
  found by the trace, a product op whose operand is a parameter a module owns (bare
  ``nn.Parameter`` MLPs, 3-D expert weights, a tied head used through a view);
- a block is a repeated block's *application*: a child of a container with same-class
  siblings (:func:`detect_blocks`), or a module the forward applied repeatedly
  (:func:`blocks_from_applications`: ALBERT's one layer applied 12 times is 12 blocks);
- an experts unit holds the routed experts of a mixture-of-experts layer
  (:func:`detect_experts`); its kind is ``expert``, its gate's ``router``, and
  ``top_k / num_experts`` of its parameters are active per token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from layerwise import roles

NORM_TYPES = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.RMSNorm,
)
_NORM_NAME = re.compile(r"(LayerNorm|RMSNorm|BatchNorm|GroupNorm|Norm\d*d?)$")


def is_hf_conv1d(module: nn.Module) -> bool:
    """Hugging Face's GPT-2 ``Conv1D``: a Linear with a transposed weight (nx, nf)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "weight")


def is_norm(module: nn.Module) -> bool:
    if isinstance(module, NORM_TYPES):
        return True
    # Model libraries define their own norms (LlamaRMSNorm, T5LayerNorm): a leaf
    # whose class name says norm and whose parameters are vectors.
    name = type(module).__name__
    if _NORM_NAME.search(name) and not any(True for _ in module.children()):
        return all(p.dim() == 1 for p in module.parameters(recurse=False))
    return False


def weight_layer_count(module: nn.Module) -> int:
    """How many weight layers data passes through sequentially in this module (0 if none).

    One for a Linear, Conv, Embedding; ``num_layers`` for an RNN stack (the two
    directions of a bidirectional layer run in parallel and count once); two for
    ``nn.MultiheadAttention`` (the q/k/v input projection, then the output projection).
    """
    declared = getattr(module, roles.WEIGHT_LAYER_ATTR, None)
    if declared is not None:
        return int(declared)
    if isinstance(module, (nn.Linear, nn.Bilinear, nn.Embedding, nn.EmbeddingBag, nn.modules.conv._ConvNd)):
        return 1
    if isinstance(module, nn.RNNBase):
        return module.num_layers
    if isinstance(module, nn.RNNCellBase):
        return 1
    if isinstance(module, nn.MultiheadAttention):
        return 2
    if is_hf_conv1d(module):
        return 1
    return 0


def static_weight_layers(module: nn.Module) -> int:
    """``weight_layer_count``, or for a module of no known type, its own parameters of two or
    more dimensions (matrices a forward can multiply by: an MLP of bare ``nn.Parameter``s,
    3-D expert weights). Before a trace says how they are used, this is the estimate."""
    wl = weight_layer_count(module)
    if wl or class_kind(module) is not None:
        return wl
    return sum(1 for p in module.parameters(recurse=False) if p.dim() >= 2)


def conv_kind(module: nn.modules.conv._ConvNd) -> str:
    g = module.groups
    if g > 1 and g == module.in_channels:
        return "depthwise"
    if g > 1:
        return "grouped"
    if all(k == 1 for k in module.kernel_size):
        return "pointwise"
    return "conv"


def class_kind(module: nn.Module) -> str | None:
    """Kind implied by the module's class alone, or None."""
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    if isinstance(module, nn.modules.conv._ConvNd):
        return conv_kind(module)
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
        return "recurrent"
    if isinstance(module, nn.MultiheadAttention):
        return "attention"
    if is_norm(module):
        return "norm"
    return None


# Name patterns for models that do not declare roles (Hugging Face, torchvision, user code).
_PATTERNS = [
    ("adapter", re.compile(r"(^|[._])(lora_[ab]|lora|adapter\w*)($|[._])", re.I)),
    ("head", re.compile(r"(^|[._])(lm_head|classifier|score|qa_outputs|cls|head|heads)($|[._])", re.I)),
    (
        "attention",
        re.compile(
            r"(^|[._])(attn|attention|self_attn|cross_attn|crossattention|encdecattention|c_attn|"
            r"[qkvo]_proj|query|key|value|qkv|in_proj|out_proj|wq|wk|wv|wo)($|[._])",
            re.I,
        ),
    ),
    (
        "mlp",
        re.compile(
            r"(^|[._])(mlp|ffn|feed_forward|feedforward|fc\d*|c_fc|intermediate|gate_proj|up_proj|down_proj|"
            r"w[123]|dense_h_to_4h|dense_4h_to_h|experts|dense)($|[._])",
            re.I,
        ),
    ),
]


def name_kind(qualified_name: str) -> str | None:
    # The innermost matching component decides: in "encoder.layer.0.attention.output.dense"
    # 'attention' is the most specific role-bearing word.
    parts = qualified_name.split(".")
    for i in range(len(parts), 0, -1):
        part = parts[i - 1]
        for kind, pat in _PATTERNS:
            if pat.search(part):
                return kind
    return None


def detect_blocks(model: nn.Module) -> set[int]:
    """ids of the modules that count as repeated blocks, from the module tree alone.

    Declared blocks (``roles.mark_block``) win. Otherwise a block is a child of a
    ``ModuleList``/``Sequential`` that has at least one sibling of the same class
    and holds at least two weight layers (a transformer layer in ``h``/``layers``,
    a residual block in a ResNet stage); of nested candidates the innermost win.

    A module applied several times (ALBERT's one shared layer) is found only from the
    data flow: :func:`blocks_from_applications` adds those after a trace.
    """
    declared = {id(m) for m in model.modules() if roles.is_declared_block(m)}
    if declared:
        return declared
    found: set[int] = set()
    for m in model.modules():
        if not isinstance(m, (nn.ModuleList, nn.Sequential)):
            continue
        children = list(m.children())
        counts: dict[type, int] = {}
        for c in children:
            counts[type(c)] = counts.get(type(c), 0) + 1
        for c in children:
            if counts[type(c)] < 2 or weight_layer_count(c) or class_kind(c):
                continue
            # A block holds several weight layers (a conv+norm+activation unit is a layer, not a block).
            if sum(static_weight_layers(d) for d in c.modules()) >= 2:
                found.add(id(c))
    # Prefer the innermost repetition: a ResNet stage made of repeated residual
    # blocks is not itself the block that block_depth counts.
    outer = {id(m) for m in model.modules() if id(m) in found and any(id(d) in found for d in m.modules() if d is not m)}
    return found - outer


def own_kind(name: str, module: nn.Module, inherited: str | None) -> str | None:
    """Kind of one module: conv shape > declared role > class > inherited role > name."""
    declared = roles.declared_kind(module)
    if isinstance(module, nn.modules.conv._ConvNd) and declared not in ("head", "adapter"):
        # conv / depthwise / pointwise / grouped is a fact of the layer's shape (DESIGN.md,
        # channel depth), not a role: one rule for every model, declared or not.
        return class_kind(module)
    if declared:
        return declared
    ck = class_kind(module)
    if ck:
        return ck
    if inherited:
        return inherited
    return name_kind(name) if name else None


def assign_kinds(model: nn.Module, block_ids: set[int] | None = None, last_weight_layer: str | None = None) -> dict[str, str]:
    """The kind of every module path (``named_modules(remove_duplicate=False)``).

    ``last_weight_layer``: the qualified name of the last weight layer the forward
    ran (from a trace); when it sits outside every block and declares no role, it
    is the head. Without a trace the head comes from declared roles and names only.
    """
    block_ids = detect_blocks(model) if block_ids is None else block_ids
    experts = detect_experts(model)
    routers = {r for u in experts.values() for r in u.routers}
    kinds: dict[str, str] = {}
    inherited: dict[str, str | None] = {"": None}
    in_block: set[str] = set()
    for qname, m in model.named_modules(remove_duplicate=False):
        parent = qname.rsplit(".", 1)[0] if "." in qname else ""
        if qname and (parent in in_block or id(m) in block_ids):
            in_block.add(qname)
        kind = own_kind(qname, m, inherited.get(parent))
        if roles.declared_kind(m) is None and (qname in experts or qname in routers):
            kind = "expert" if qname in experts else "router"
        wl = weight_layer_count(m)
        if (wl and qname == last_weight_layer and qname not in in_block
                and roles.declared_kind(m) is None and class_kind(m) is None):
            kind = "head"
        if kind is None:
            kind = "mlp" if wl else "other"
        # kinds a container hands down to the weight layers inside it
        handed = roles.declared_kind(m) or (kind if kind in ("attention", "mlp", "head", "adapter", "expert", "router") else None)
        inherited[qname] = handed or inherited.get(parent)
        kinds[qname] = kind
    return kinds


def blocks_from_applications(model: nn.Module, calls: dict[str, int], known: set[int]) -> set[int]:
    """ids of modules that are blocks because the forward applied them repeatedly.

    ``calls``: how often each module (by first qualified name) ran in one forward.
    A candidate ran at least twice, is not itself a weight layer or a known layer type,
    and holds at least two weight layers (ALBERT's shared layer, one encoder layer a
    ``TransformerEncoder`` reuses). Candidates inside or around a ``known`` block are
    left out (the known blocks are the repetition). Of nested candidates: a wrapper that
    holds nothing but the candidate inside it gives way to it (ALBERT's layer group of one
    layer); a part applied as often as the candidate around it (its attention) is part of
    that application; a part applied more often than the one around it is the repetition.
    """
    first: dict[int, str] = {}
    for name, m in model.named_modules():
        first.setdefault(id(m), name)
    known_names = [first[i] for i in known if i in first]

    def inside(a: str, b: str) -> bool:  # a strictly inside b
        return b == "" and a != "" or a.startswith(b + ".")

    mods = dict(model.named_modules())
    cand: dict[str, int] = {}
    for name, m in mods.items():
        n = calls.get(name, 0)
        if n < 2 or name == "" or weight_layer_count(m) or class_kind(m) is not None:
            continue
        if any(inside(name, k) or inside(k, name) or k == name for k in known_names):
            continue
        if sum(static_weight_layers(d) for d in m.modules()) >= 2:
            cand[name] = n
    wl = {n: sum(static_weight_layers(d) for d in mods[n].modules()) for n in cand}
    keep = set(cand)
    changed = True
    while changed:
        changed = False
        for m in sorted(keep, key=lambda x: -x.count(".")):
            outer = [p for p in keep if inside(m, p)]
            if not outer:
                continue
            p = max(outer, key=lambda x: x.count("."))  # nearest enclosing candidate
            if cand[m] > cand[p] or wl[m] == wl[p]:
                keep.discard(p)  # m repeats inside p, or p only wraps m
            else:
                keep.discard(m)  # m is a part of each application of p
            changed = True
            break
    return {id(mods[n]) for n in keep}


@dataclass(frozen=True)
class ExpertsUnit:
    """The routed experts of one mixture-of-experts layer."""

    name: str  # qualified module name
    num_experts: int
    top_k: int | None  # experts each token runs through; None when the model does not say
    routers: tuple[str, ...] = ()  # the gates beside it


_TOPK_ATTRS = ("top_k", "num_experts_per_tok", "num_experts_per_token", "experts_per_token", "moe_top_k", "moe_topk",
               "top_k_experts", "num_selected_experts", "n_activated_experts", "router_top_k", "moe_k")
_NUM_EXPERTS_ATTRS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts", "n_experts")
_ROUTER_NAME = re.compile(r"(^|_)(gate|router|gating|wg)$|^gate$", re.I)
_ROUTER_CLS = re.compile(r"(router|gate|gating)", re.I)
_TOP_N = re.compile(r"top(\d+)", re.I)


def _is_experts(name: str, m: nn.Module) -> bool:
    if roles.declared_experts(m) is not None:
        return True
    last = name.rsplit(".", 1)[-1].lower()
    cls = type(m).__name__.lower()
    if "shared" in last or "shared" in cls:  # shared experts run on every token: a dense MLP
        return False
    if cls.endswith("experts"):
        return True
    if isinstance(m, (nn.ModuleList, nn.ModuleDict)) and last == "experts":
        kids = list(m.children())
        return len(kids) >= 2 and len({type(k) for k in kids}) == 1
    return False


def _num_experts(m: nn.Module) -> int | None:
    declared = roles.declared_experts(m)
    if declared is not None:
        return declared[0]
    if isinstance(m, (nn.ModuleList, nn.ModuleDict)):
        return len(list(m.children()))
    for a in _NUM_EXPERTS_ATTRS:
        v = getattr(m, a, None)
        if isinstance(v, int) and v >= 1:
            return v
    for p in m.parameters():
        if p.dim() == 3:
            return p.shape[0]
    kids = list(m.children())
    return len(kids) if len(kids) >= 2 else None


def _config_top_k(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return None
    stack = [cfg.to_dict() if hasattr(cfg, "to_dict") else vars(cfg)]
    while stack:
        d = stack.pop()
        if not isinstance(d, dict):
            continue
        for a in _TOPK_ATTRS:
            v = d.get(a)
            if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
                return v
        stack += [v for v in d.values() if isinstance(v, dict)]
    return None


def detect_experts(model: nn.Module) -> dict[str, ExpertsUnit]:
    """The mixture-of-experts units of ``model``, by qualified name.

    An experts unit is a module declared with ``roles.mark_experts``, a module whose
    class name ends in ``Experts`` (transformers' 3-D expert weights: ``MixtralExperts``,
    ``Qwen2MoeExperts``, ...; its ``ModuleDict`` of expert MLPs in Switch and NLLB-MoE),
    or a ``ModuleList``/``ModuleDict`` named ``experts`` of same-class experts. Shared
    experts (every token runs through them) are dense MLPs, not units. The routers are
    the unit's siblings named or typed as a gate/router. ``top_k`` comes from the
    declaration, an attribute of the unit, its layer or its router (``top_k``,
    ``num_experts_per_tok``, ...), a router named ``Top1``/``Top2``, or the model's config.
    """
    mods = dict(model.named_modules())
    units: dict[str, ExpertsUnit] = {}
    cfg_k = _config_top_k(model)
    for name, m in mods.items():
        if not name or not _is_experts(name, m):
            continue
        if any(name.startswith(u + ".") for u in units):
            continue  # the outermost unit holds them all
        e = _num_experts(m)
        if not e or e < 2:
            continue
        parent_name = name.rsplit(".", 1)[0] if "." in name else ""
        parent = mods[parent_name]
        routers = []
        for cname, c in parent.named_children():
            full = f"{parent_name}.{cname}" if parent_name else cname
            if full == name or _is_experts(full, c):
                continue
            declared = roles.declared_kind(c)
            if declared == "router" or (declared is None and (_ROUTER_NAME.search(cname) or _ROUTER_CLS.search(type(c).__name__))
                                        and any(True for _ in c.parameters())):
                routers.append(full)
        declared = roles.declared_experts(m)
        k = declared[1] if declared else None
        for obj in [m, parent] + [mods[r] for r in routers]:
            if k is not None:
                break
            for a in _TOPK_ATTRS:
                v = getattr(obj, a, None)
                if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= e:
                    k = v
                    break
        for r in routers:
            if k is None and (hit := _TOP_N.search(type(mods[r]).__name__)):
                k = int(hit.group(1))
        if k is None and cfg_k is not None and cfg_k <= e:
            k = cfg_k
        units[name] = ExpertsUnit(name, e, k, tuple(routers))
    return units


def encoder_decoder_parts(model: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    """``{"encoder": (name, module), "decoder": (name, module)}`` for an encoder-decoder
    model, else ``{}``: the outermost modules named ``encoder`` and ``decoder`` that hold
    weight layers (T5, BART, Marian, Whisper, ``nn.Transformer``, layerwise's seq2seq),
    when both exist and neither is inside the other."""
    found: dict[str, tuple[str, nn.Module]] = {}
    for name, m in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if last not in ("encoder", "decoder") or last in found or weight_layer_count(m):
            continue
        if sum(static_weight_layers(d) for d in m.modules()) < 2:
            continue
        found[last] = (name, m)
    if len(found) != 2:
        return {}
    (e, _), (d, _) = found["encoder"], found["decoder"]
    if e.startswith(d + ".") or d.startswith(e + "."):
        return {}
    return {"encoder": found["encoder"], "decoder": found["decoder"]}
