"""The ``layerwise`` command: one subcommand per user task, thin over the library.

Each subcommand lives in ``layerwise/commands/<name>.py`` with ``register(subparsers)``
(adds its arguments and ``set_defaults(func=run)``) and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from layerwise.errors import LayerwiseError

COMMANDS = ("summary", "models", "plan", "pretrain", "train", "generate", "eval", "finetune", "compare", "report", "demo")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="layerwise", description="How deep is this network, and where do its trainable parameters live?")
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"layerwise.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"layerwise.commands.{name}":
                raise
            continue  # not built yet
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LayerwiseError as e:
        print(f"layerwise: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layerwise: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
