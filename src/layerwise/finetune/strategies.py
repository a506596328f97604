"""Fine-tuning strategies: functions that change which parameters train (and add
LoRA or adapter modules), in place, and return a record of what they did.

A strategy is a spec string; items joined by ``+`` compose left to right::

    full                 everything trains
    head                 only the task head (a linear probe)
    top-K / top:K        the last K blocks and the head
    bitfit               biases only, plus the head (Ben Zaken et al. 2021)
    lora:R[:ALPHA]       LoRA of rank R on the targets (default: query and value projections)
    qlora:R[:ALPHA]      QLoRA (Dettmers et al. 2023): LoRA of rank R on every Linear of the blocks
                         over an nf4 base. Applied here, it adds the LoRA factors and records the
                         base as nf4 (``record.base_dtype``), a fact the planner plans (packed
                         weights, bf16 compute, paged AdamW). It does not quantise the weights:
                         that needs bitsandbytes' CUDA (or CPU) kernels in the training step.
    adapter:SIZE         Houlsby bottleneck adapters after attention and MLP of every block
    freeze:X / train:X   freeze / unfreeze layers of kind X (embedding, norm, …) or a name glob
    norms                shorthand for train:norm

Unless the first item is ``full``, everything is frozen first. So
``lora:8+norms+head`` trains the LoRA factors, every norm and the head.
The strategies never touch the training loop.

A model whose head is new (randomly initialised for this task: ``new_head=True``, as the
fine-tuning jobs set it) trains that head with every strategy, as PEFT's
sequence-classification task does (its ``modules_to_save``): a frozen random head would
leave LoRA or adapters fitting features to a fixed random projection. The record says so
in its steps; a later ``freeze:`` item can still freeze it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from layerwise.analysis.kinds import assign_kinds, detect_blocks, weight_layer_count
from layerwise.errors import ConfigError
from layerwise.finetune.adapters import AdaptedLinear
from layerwise.finetune.grammar import (  # noqa: F401 - the grammar is part of this module's API
    COMPARE_DEFAULT,
    SPECS,
    STRATEGIES,
    Step,
    StrategySpec,
    _int,
    default_lr,
    parse_strategy,
)
from layerwise.finetune.lora import LoRALinear
from layerwise.roles import KINDS

# The LoRA paper adapts W_q and W_v; where q, k, v are one fused Linear, that one.
DEFAULT_LORA_TARGETS = ("q_proj", "v_proj", "query", "value", "c_attn", "qkv")
QLORA_BASE = "nf4"  # QLoRA's storage of the frozen base (4-bit NormalFloat, double quantisation)
QLORA_TARGETS = ("all-linear",)  # QLoRA puts adapters on every linear layer of the blocks (Dettmers et al. 2023, §4)


@dataclass
class StrategyRecord:
    strategy: str
    total_base: int  # the base model's parameters, each tensor once: the one denominator
    added: int  # parameters the strategy added (LoRA factors, adapters)
    trainable: int
    total: int  # total_base + added
    steps: list[str] = field(default_factory=list)
    lora_targets: list[str] = field(default_factory=list)
    adapter_targets: list[str] = field(default_factory=list)
    trained_blocks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    base_dtype: str | None = None  # storage the strategy plans for the frozen base (qlora: nf4); None: as built

    @property
    def trainable_share(self) -> float:
        """Trainable parameters as a share of the *base* model (tied weights once)."""
        return self.trainable / self.total_base if self.total_base else 0.0

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "trainable_share": self.trainable_share}


def _unique_params(model: nn.Module):
    return {id(p): p for p in model.parameters()}.values()


def _set(params, flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def _modules_matching(model: nn.Module, kinds: dict[str, str], pattern: str) -> list[tuple[str, nn.Module]]:
    if pattern in KINDS:
        return [(n, m) for n, m in model.named_modules() if kinds.get(n) == pattern]
    return [(n, m) for n, m in model.named_modules()
            if n and (fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(n.rsplit(".", 1)[-1], pattern))]


def head_modules(model: nn.Module, kinds: dict[str, str] | None = None) -> list[tuple[str, nn.Module]]:
    """The task head: modules of kind 'head' (outermost), else the last weight layer outside the blocks."""
    kinds = kinds if kinds is not None else assign_kinds(model)
    heads = [(n, m) for n, m in model.named_modules() if n and kinds.get(n) == "head"]
    heads = [(n, m) for n, m in heads if not any(n.startswith(o + ".") for o, _ in heads if o != n)]
    if heads:
        return heads
    blocks = detect_blocks(model)
    inside = {id(d) for b in model.modules() if id(b) in blocks for d in b.modules()}
    last = [(n, m) for n, m in model.named_modules() if weight_layer_count(m) and id(m) not in inside]
    return last[-1:]


def ordered_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The repeated blocks in forward order. Blocks are applications: a module the forward
    applies several times (ALBERT's one shared layer) appears once per application, found
    by running the forward on a meta copy when the module tree shows no repeated blocks."""
    ids = detect_blocks(model)
    if ids:
        return [(n, m) for n, m in model.named_modules() if id(m) in ids]
    from layerwise.analysis.core import block_applications

    return block_applications(model)


def _shared_block_note(blocks: list[tuple[str, nn.Module]], chosen: list[tuple[str, nn.Module]]) -> list[str]:
    """Say so when the chosen blocks are applications of fewer modules than blocks."""
    notes = []
    for name in dict.fromkeys(n for n, _ in chosen):
        runs = sum(1 for n, _ in blocks if n == name)
        if runs > 1:
            notes.append(f"{name} is one module applied as {runs} of the {len(blocks)} blocks: training it "
                         f"trains all {runs} applications")
    return notes


def _tied_note(model: nn.Module, names: list[str]) -> list[str]:
    owner: dict[int, str] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        owner.setdefault(id(p), n)
    notes = []
    for mod_name in names:
        mod = model.get_submodule(mod_name)
        for pn, p in mod.named_parameters():
            full = f"{mod_name}.{pn}"
            if owner[id(p)] != full:
                notes.append(f"{full} is tied to {owner[id(p)]}: training one trains the other")
    return notes


def lora_target_modules(model: nn.Module, targets=None, kinds: dict[str, str] | None = None) -> list[str]:
    """Qualified names of the Linear layers LoRA wraps, from name globs or layer kinds.

    A target is a layer kind ('attention', 'mlp'), 'all-linear' (every Linear but the
    head), or a glob matched against the qualified name or its last component.
    """
    kinds = kinds if kinds is not None else assign_kinds(model)
    targets = tuple(targets) if targets else DEFAULT_LORA_TARGETS
    heads = {n for n, _ in head_modules(model, kinds)}
    linears = [(n, m) for n, m in model.named_modules()
               if type(m) is nn.Linear and not any(n == h or n.startswith(h + ".") for h in heads)]
    head_linears = [(n, m) for n, m in model.named_modules() if type(m) is nn.Linear and (n, m) not in linears]
    chosen = []
    for n, m in linears + head_linears:
        last = n.rsplit(".", 1)[-1]
        for t in targets:
            if t == "all-linear":
                hit = (n, m) in linears
            elif t in KINDS:
                hit = kinds.get(n) == t and (n, m) in linears
            else:
                hit = fnmatch.fnmatchcase(n, t) or fnmatch.fnmatchcase(last, t)
            if hit:
                chosen.append(n)
                break
    if not chosen:
        names = sorted({n.rsplit(".", 1)[-1] for n, _ in linears})
        raise ConfigError(
            f"LoRA targets {', '.join(targets)} match no Linear layer; candidate layer names: "
            f"{', '.join(names[:12])}{' …' if len(names) > 12 else ''}; or a kind: attention, mlp, all-linear"
        )
    return chosen


def adapter_target_modules(model: nn.Module, kinds: dict[str, str] | None = None) -> list[str]:
    """In every block, the last Linear of kind attention and the last of kind mlp (their output projections)."""
    kinds = kinds if kinds is not None else assign_kinds(model)
    blocks = ordered_blocks(model)
    if not blocks:
        raise ConfigError("adapter: the model has no repeated blocks (transformer layers) to put adapters in")
    chosen = []
    for bname, block in dict.fromkeys(blocks):  # a block module applied repeatedly gets its adapters once
        for kind in ("attention", "mlp"):
            last = None
            for n, m in block.named_modules():
                full = f"{bname}.{n}" if n else bname
                if type(m) is nn.Linear and kinds.get(full) == kind:
                    last = full
            if last:
                chosen.append(last)
    if not chosen:
        raise ConfigError("adapter: no attention or MLP output projection (nn.Linear) found in the blocks")
    return chosen


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


# Steps that train the head themselves.
_TRAIN_HEAD = ("full", "head", "top", "bitfit")


@dataclass
class _Applying:
    """What a strategy step sees: the model's layer kinds (recomputed after every step that
    adds modules), the options, and the record it adds to."""

    model: nn.Module
    record: StrategyRecord
    lora_targets: tuple[str, ...] | None
    lora_alpha: float | None
    lora_dropout: float
    kinds: dict[str, str] = field(default_factory=dict)


def _apply_full(c: _Applying, step: Step) -> None:
    _set(_unique_params(c.model), True)
    c.record.steps.append("all parameters train")


def _apply_head(c: _Applying, step: Step) -> None:
    heads = head_modules(c.model, c.kinds)
    if not heads:
        raise ConfigError("head: the model has no task head (no layer of kind 'head')")
    for _, m in heads:
        _set(m.parameters(), True)
    c.record.steps.append("head trains: " + ", ".join(n for n, _ in heads))
    c.record.notes += _tied_note(c.model, [n for n, _ in heads])


def _apply_top(c: _Applying, step: Step) -> None:
    model, k = c.model, step.args[0]
    blocks = ordered_blocks(model)
    if k > len(blocks):
        raise ConfigError(f"top-{k}: the model has only {len(blocks)} blocks")
    chosen = blocks[-k:]
    c.record.notes += _shared_block_note(blocks, chosen)
    heads = head_modules(model, c.kinds)
    for _, m in chosen + heads:
        _set(m.parameters(), True)
    # norms after the last block (a final LayerNorm) feed the head: they train too
    last_block = chosen[-1][0]
    names = [n for n, _ in model.named_modules()]
    after = names[names.index(last_block) + 1:]
    for n in after:
        if c.kinds.get(n) == "norm" and not n.startswith(last_block + "."):
            _set(model.get_submodule(n).parameters(), True)
    c.record.trained_blocks = list(dict.fromkeys(n for n, _ in chosen))
    c.record.steps.append(f"last {k} of {len(blocks)} blocks train ({', '.join(c.record.trained_blocks)}) and the head")
    c.record.notes += _tied_note(model, [n for n, _ in heads])


def _apply_bitfit(c: _Applying, step: Step) -> None:
    n_bias = 0
    for n, p in c.model.named_parameters():
        if n.rsplit(".", 1)[-1] == "bias":
            p.requires_grad_(True)
            n_bias += 1
    for _, m in head_modules(c.model, c.kinds):
        _set(m.parameters(), True)
    c.record.steps.append(f"{n_bias} bias vectors and the head train")


def _apply_lora(c: _Applying, step: Step) -> None:
    r = step.args[0]
    alpha = step.args[1] if len(step.args) > 1 else (c.lora_alpha if c.lora_alpha is not None else 2.0 * r)
    names = lora_target_modules(c.model, c.lora_targets, c.kinds)
    for n in names:
        new = LoRALinear.from_linear(c.model.get_submodule(n), r, alpha, c.lora_dropout)
        c.record.added += new.lora_a.weight.numel() + new.lora_b.weight.numel()
        _replace(c.model, n, new)
    c.record.lora_targets += names
    c.record.steps.append(f"LoRA r={r}, α={alpha:g} (scaling {alpha / r:g}) on {len(names)} layers")


def _apply_qlora(c: _Applying, step: Step) -> None:
    targets = c.lora_targets or QLORA_TARGETS
    _apply_lora(dataclasses.replace(c, lora_targets=targets), step)
    c.record.base_dtype = QLORA_BASE
    c.record.notes.append(f"qlora: the frozen base is planned as {QLORA_BASE} (bitsandbytes, double quantisation, "
                          "bf16 compute, paged AdamW); the weights here keep their dtype: quantising them is "
                          "bitsandbytes' work in the training step")


def _apply_adapter(c: _Applying, step: Step) -> None:
    size = step.args[0]
    names = adapter_target_modules(c.model, c.kinds)
    for n in names:
        new = AdaptedLinear.from_linear(c.model.get_submodule(n), size)
        c.record.added += sum(p.numel() for p in new.adapter.parameters())
        _replace(c.model, n, new)
    c.record.adapter_targets += names
    c.record.steps.append(f"bottleneck adapters of size {size} after {len(names)} projections")


def _apply_freeze_or_train(c: _Applying, step: Step) -> None:
    pattern = step.args[0]
    mods = _modules_matching(c.model, c.kinds, pattern)
    params = [(n, p) for n, p in c.model.named_parameters() if fnmatch.fnmatchcase(n, pattern)] if not mods else []
    if not mods and not params:
        raise ConfigError(f"{step}: no layer of kind {pattern!r} and no parameter name matching it; "
                          f"kinds here: {', '.join(sorted(set(c.kinds.values())))}")
    flag = step.name == "train"
    for _, m in mods:
        _set(m.parameters(), flag)
    _set((p for _, p in params), flag)
    c.record.steps.append(f"{'unfroze' if flag else 'froze'} {len(mods) or len(params)} "
                          f"{'layers' if mods else 'parameters'} matching {pattern!r}")


@dataclass(frozen=True)
class StrategyKind:
    """A grammar item (:class:`~layerwise.finetune.grammar.StrategySpec`) and how it applies."""

    spec: StrategySpec
    apply: Callable[[_Applying, Step], None]

    def __getattr__(self, name: str):
        return getattr(self.spec, name)


_APPLY = {"full": _apply_full, "head": _apply_head, "top": _apply_top, "bitfit": _apply_bitfit, "lora": _apply_lora,
          "qlora": _apply_qlora, "adapter": _apply_adapter, "freeze": _apply_freeze_or_train, "train": _apply_freeze_or_train,
          "norms": _apply_freeze_or_train}
REGISTRY: dict[str, StrategyKind] = {name: StrategyKind(spec, _APPLY[name]) for name, spec in SPECS.items()}


def apply_strategy(model: nn.Module, spec: str, lora_targets=None, lora_alpha: float | None = None,
                   lora_dropout: float = 0.0, new_head: bool = False) -> StrategyRecord:
    """Apply a fine-tuning strategy to ``model`` in place (works on the meta device).

    ``new_head``: the head is new for this task, so it trains whatever the strategy (see the
    module docstring); by default only the spec decides.

    Items apply left to right; the layer kinds are recomputed after an item that adds
    modules (LoRA, adapters), so ``adapter:8+train:norm`` or ``lora:4+freeze:head`` see the
    model as it is then. A composition that leaves nothing trainable is refused."""
    steps = parse_strategy(spec)
    total_base = sum(p.numel() for p in _unique_params(model))
    record = StrategyRecord(strategy=spec, total_base=total_base, added=0, trainable=0, total=total_base)
    c = _Applying(model, record, tuple(lora_targets) if lora_targets else None, lora_alpha, lora_dropout,
                  assign_kinds(model))
    if steps[0].name != "full":
        _set(_unique_params(model), False)
        record.steps.append("froze every parameter")
        if new_head and not any(st.name in _TRAIN_HEAD for st in steps):
            heads = head_modules(model, c.kinds)
            for _, m in heads:
                _set(m.parameters(), True)
            if heads:
                n_head = sum(p.numel() for _, m in heads for p in {id(q): q for q in m.parameters()}.values())
                record.steps.append(f"the new head trains too ({', '.join(n for n, _ in heads)}: {n_head:,} parameters), "
                                    "as PEFT's modules_to_save does for sequence classification")
                record.notes += _tied_note(model, [n for n, _ in heads])
    for i, step in enumerate(steps):
        kind = REGISTRY[step.name]
        if step.name in ("lora", "qlora", "adapter") and any(s.name == step.name for s in steps[:i]):
            raise ConfigError(f"strategy {spec!r}: {step.name} appears twice; one {step.name} item per strategy")
        kind.apply(c, step)
        if kind.adds_modules:
            c.kinds = assign_kinds(model)
    record.total = sum(p.numel() for p in _unique_params(model))
    record.trainable = sum(p.numel() for p in _unique_params(model) if p.requires_grad)
    assert record.total == record.total_base + record.added
    if record.trainable == 0:
        raise ConfigError(f"strategy {spec!r}: leaves nothing trainable (every parameter ends frozen)")
    return record
