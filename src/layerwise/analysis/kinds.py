"""What a module is: weight layer or not, its layer kind, whether it is a repeated block.

Models written in layerwise declare this (``layerwise.roles``); for any other
model it is inferred from the module's class, then from its qualified name.
"""

from __future__ import annotations

import re

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
    """ids of the modules that count as repeated blocks.

    Declared blocks (``roles.mark_block``) win. Otherwise a block is a child of a
    ``ModuleList``/``Sequential`` that has at least one sibling of the same class
    and holds at least two weight layers (a transformer layer in ``h``/``layers``,
    a residual block in a ResNet stage); of nested candidates the innermost win.
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
            if sum(weight_layer_count(d) for d in c.modules()) >= 2:
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
    kinds: dict[str, str] = {}
    inherited: dict[str, str | None] = {"": None}
    in_block: set[str] = set()
    for qname, m in model.named_modules(remove_duplicate=False):
        parent = qname.rsplit(".", 1)[0] if "." in qname else ""
        if qname and (parent in in_block or id(m) in block_ids):
            in_block.add(qname)
        kind = own_kind(qname, m, inherited.get(parent))
        wl = weight_layer_count(m)
        if (wl and qname == last_weight_layer and qname not in in_block
                and roles.declared_kind(m) is None and class_kind(m) is None):
            kind = "head"
        if kind is None:
            kind = "mlp" if wl else "other"
        # kinds a container hands down to the weight layers inside it
        handed = roles.declared_kind(m) or (kind if kind in ("attention", "mlp", "head", "adapter") else None)
        inherited[qname] = handed or inherited.get(parent)
        kinds[qname] = kind
    return kinds
