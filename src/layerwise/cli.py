"""The ``layerwise`` command: one subcommand per user task, thin over the library.

Each subcommand lives in ``layerwise/commands/<name>.py`` with ``register(subparsers)``
(adds its arguments and ``set_defaults(func=run)``) and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import traceback
from pathlib import Path

from layerwise.errors import LayerwiseError

COMMANDS = ("summary", "models", "plan", "pretrain", "train", "generate", "eval", "finetune", "compare", "report", "demo",
            "examples", "predict", "export", "study", "inspect")


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with the default a run uses, unless it has none (None,
    off, a positional) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or not action.option_strings or action.default in (None, False, argparse.SUPPRESS)
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class _Parser(argparse.ArgumentParser):
    """argparse with layerwise's one-line errors: ``layerwise: error: <what> (see --help)``,
    and the defaults in ``--help``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def _get_values(self, action: argparse.Action, arg_strings: list[str]):
        # An empty value ("--output ''") is never a choice a person makes on purpose: refused
        # here, once, instead of each command reading it as "not given". A flag whose bare
        # form means "the default list" (nargs="?", const="") takes it.
        if ("" in arg_strings and action.type in (None, str) and action.nargs not in (argparse.REMAINDER, argparse.PARSER)
                and not (action.nargs == "?" and action.const == "")):
            raise argparse.ArgumentError(action, "expected a value, got an empty string")
        return super()._get_values(action, arg_strings)

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"layerwise: error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from layerwise import __version__

    p = _Parser(prog="layerwise", description="How deep is this network, and where do its trainable parameters live?")
    p.add_argument("--version", action="version", version=f"layerwise {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"layerwise.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"layerwise.commands.{name}":
                raise
            continue  # not built yet
        mod.register(sub)
    return p


def resume_command(argv: list[str]) -> str:
    """The command line that continues an interrupted run: the same one with --resume."""
    args = [a for a in argv if a != "--overwrite"]
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join(["layerwise", *args])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # torch.profiler's kineto writes "USDT: ... profiler_start" lines to stderr (plan --measure
    # profiles a CPU step): not for the person reading layerwise's output. Read when the
    # profiler first starts; a value the user set wins.
    os.environ.setdefault("KINETO_LOG_LEVEL", "99")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2, already printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except LayerwiseError as e:
        print(f"layerwise: error: {_one_line(e)}", file=sys.stderr)
        if getattr(e, "run_status", None) == "interrupted":
            print(f"layerwise: continue with: {resume_command(argv)}", file=sys.stderr)
            return 130
        return 2
    except KeyboardInterrupt:
        print("layerwise: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the last guard: a bug in layerwise is one line too
        if os.environ.get("LAYERWISE_DEBUG"):
            raise
        where = traceback.extract_tb(e.__traceback__)[-1]
        print(f"layerwise: internal error: {type(e).__name__}: {_one_line(e)} (at {Path(where.filename).name}:{where.lineno}; "
              "this is a bug in layerwise: set LAYERWISE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 70


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 400 else text[:397] + "..."


if __name__ == "__main__":
    sys.exit(main())
