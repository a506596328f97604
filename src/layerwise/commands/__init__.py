"""CLI subcommands: each module has register(subparsers) and run(args)."""


def stdout_console(stderr: bool = False):
    """A rich Console for standard output (or error). Piped or redirected output (a log
    file, CI) is not a terminal and would be cut to 80 columns, truncating wide tables to
    "…" and wrapping log lines; it gets 200 columns instead (a table still takes only the
    width it needs), unless ``COLUMNS`` says otherwise."""
    import os

    from rich.console import Console

    console = Console(stderr=stderr)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(stderr=stderr, width=200)
    return console


INT64_MAX = 2**63 - 1


def integer(text: str) -> int:
    """argparse type: an integer that fits in 64 bits (the range is checked where it is used)."""
    return _number(int, text, what="an integer")


def finite_float(text: str) -> float:
    """argparse type: a finite number (the range is checked where it is used)."""
    return _number(float, text, what="a finite number")


def count(n: int, word: str) -> str:
    """'1 step', '2,000 steps': a count with its noun, singular for one."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _number(kind, text: str, low=None, high=None, low_open=False, high_open=False, what: str = ""):
    import argparse
    import math

    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    if isinstance(v, int) and not -INT64_MAX - 1 <= v <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"expected {what} that fits in 64 bits, got {text!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    if high is not None and (v > high or (high_open and v == high)):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(int, text, low=1, what="an integer >= 1")


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(int, text, low=0, what="an integer >= 0")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(float, text, low=0.0, low_open=True, what="a finite number > 0")


def probability(text: str) -> float:
    """argparse type: a number in [0, 1)."""
    return _number(float, text, low=0.0, high=1.0, high_open=True, what="a number in [0, 1)")


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1)."""
    return _number(float, text, low=0.0, high=1.0, high_open=True, what="a fraction in [0, 1)")


def unit_interval(text: str) -> float:
    """argparse type: a number in (0, 1]."""
    return _number(float, text, low=0.0, high=1.0, low_open=True, what="a number in (0, 1]")


def open_fraction(text: str) -> float:
    """argparse type: a number in (0, 1]: a share of the data to use."""
    return _number(float, text, low=0.0, high=1.0, low_open=True, what="a fraction in (0, 1]")
