"""The strategy grammar, without torch: items, their syntax and help, default learning
rates, and the parser. The CLI builds its help from it; :mod:`layerwise.finetune.strategies`
applies what it parses. (Kept free of torch so that ``layerwise --help`` starts fast.)"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from layerwise.errors import ConfigError, UnknownNameError


@dataclass(frozen=True)
class Step:
    name: str
    args: tuple = ()

    def __str__(self) -> str:
        return ":".join([self.name, *map(str, self.args)])


def _int(text: str, item: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"strategy {item!r}: {what} must be an integer, got {text!r}") from None


def _no_args(name: str):
    def parse(item: str, args: list[str]) -> Step:
        if args:
            raise ConfigError(f"strategy {item!r}: {name} takes no argument")
        return Step("train", ("norm",)) if name == "norms" else Step(name)
    return parse


def _parse_top(item: str, args: list[str]) -> Step:
    if len(args) != 1:
        raise ConfigError(f"strategy {item!r}: expected top-K or top:K")
    k = _int(args[0], item, "K")
    if k < 1:
        raise ConfigError(f"strategy {item!r}: K must be >= 1, got {k}")
    return Step("top", (k,))


def _parse_lora(item: str, args: list[str]) -> Step:
    if not 1 <= len(args) <= 2:
        raise ConfigError(f"strategy {item!r}: expected lora:R or lora:R:ALPHA")
    r = _int(args[0], item, "rank")
    if r <= 0:
        raise ConfigError(f"strategy {item!r}: LoRA rank must be > 0, got {r}")
    if len(args) == 2:
        try:
            alpha = float(args[1])
        except ValueError:
            raise ConfigError(f"strategy {item!r}: ALPHA must be a number, got {args[1]!r}") from None
        if not alpha > 0 or alpha == float("inf"):
            raise ConfigError(f"strategy {item!r}: ALPHA must be a finite number > 0, got {args[1]!r}")
        return Step("lora", (r, alpha))
    return Step("lora", (r,))


def _parse_adapter(item: str, args: list[str]) -> Step:
    if len(args) != 1:
        raise ConfigError(f"strategy {item!r}: expected adapter:SIZE")
    size = _int(args[0], item, "adapter size")
    if size <= 0:
        raise ConfigError(f"strategy {item!r}: adapter size must be > 0, got {size}")
    return Step("adapter", (size,))


def _parse_pattern(name: str):
    def parse(item: str, args: list[str]) -> Step:
        if len(args) != 1 or not args[0]:
            raise ConfigError(f"strategy {item!r}: expected {name}:X with X a layer kind or a name glob")
        return Step(name, (args[0],))
    return parse


@dataclass(frozen=True)
class StrategySpec:
    """One item of the strategy grammar: its syntax, help, the learning rate that suits it
    with AdamW, and how it parses (how it applies is in :mod:`layerwise.finetune.strategies`)."""

    name: str
    syntax: str
    help: str
    default_lr: float
    parse: Callable[[str, list[str]], Step]
    adds_modules: bool = False  # the layer kinds are recomputed after it


# Learning rates with AdamW: a head on frozen features or a few bias vectors take large
# steps; LoRA factors and adapters start at zero and take ~1e-3 (Hu et al. 2021 use
# 2e-4..5e-4 on larger models); whole pretrained layers take the small steps of full
# fine-tuning (BERT's 2e-5..5e-5).
SPECS: dict[str, StrategySpec] = {k.name: k for k in (
    StrategySpec("full", "full", "every parameter trains", 5e-5, _no_args("full")),
    StrategySpec("head", "head", "only the task head (a linear probe)", 5e-3, _no_args("head")),
    StrategySpec("top", "top-K", "the last K blocks and the head", 2e-4, _parse_top),
    StrategySpec("bitfit", "bitfit", "biases only, plus the head (Ben Zaken et al. 2021)", 5e-3, _no_args("bitfit")),
    StrategySpec("lora", "lora:R[:ALPHA]", "LoRA of rank R on the targets (default: query and value)", 1e-3, _parse_lora,
                 adds_modules=True),
    StrategySpec("adapter", "adapter:SIZE", "Houlsby bottleneck adapters after attention and MLP of every block", 1e-3,
                 _parse_adapter, adds_modules=True),
    StrategySpec("freeze", "freeze:X", "freeze layers of kind X or a name glob", 1e-3, _parse_pattern("freeze")),
    StrategySpec("train", "train:X", "unfreeze layers of kind X or a name glob", 1e-3, _parse_pattern("train")),
    StrategySpec("norms", "norms", "shorthand for train:norm", 1e-3, _no_args("norms")),
)}
STRATEGIES = tuple(k.syntax for k in SPECS.values())
# What `layerwise compare` runs by default: one of each kind, cheapest first.
COMPARE_DEFAULT = ("head", "top-2", "bitfit", "lora:8", "adapter:64", "full")


def parse_strategy(spec: str) -> list[Step]:
    """'lora:8+norms+head' -> [Step('lora', (8,)), Step('train', ('norm',)), Step('head')]."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"strategy: expected one of {', '.join(STRATEGIES)} (joined with +), got {spec!r}")
    steps = []
    for item in spec.replace(" ", "").split("+"):
        name, *args = item.split(":")
        if name.startswith("top-") and not args:
            name, args = "top", [name[4:]]
        kind = SPECS.get(name)
        if kind is None:
            raise UnknownNameError(f"unknown strategy {item!r}; expected one of {', '.join(STRATEGIES)} (joined with +)")
        steps.append(kind.parse(item, args))
    return steps


def default_lr(spec: str) -> float:
    """The learning rate that suits a strategy spec with AdamW (its first item decides)."""
    return SPECS[parse_strategy(spec)[0].name].default_lr
