"""Bad values for every flag of every subcommand, run in-process through ``layerwise.cli.main``:
never a traceback, never ``layerwise: internal error``; every failure is one
``layerwise: error: …`` line and a non-zero exit.

The flags come from the real parsers (``build_parser()``'s subcommands and their actions, and
each example's own parser), so a new command or flag is fuzzed without touching this file.
Each flag gets values by what its argparse type accepts:

- numbers: not a number, empty, NaN, ±infinity, negative, more than 64 bits (all refused), zero
  and 1e308 (refused, or a valid run);
- names (``choices``): unknown, empty, another case (all refused);
- text: empty (refused), an unknown name, a PNG, a text file, a directory, a missing path
  (refused, or a valid run);
- files of the wrong kind (refused): a PNG as --data, --model, --train-config, --tokenizer or
  TARGET; a text file as --ckpt, --labels or RUN_DIR; a directory as --output or --plot.

Every case starts from a valid, trivially small invocation of its command (1 training step
on tiny data), so a value that turns out to be valid costs a fraction of a second. Commands
without such an invocation (``demo``, the examples) get only the values that must be refused.
"""

from __future__ import annotations

import argparse
import collections
import itertools

import pytest

from layerwise.cli import build_parser, main

HUGE_INT = "1" + "0" * 30

# (kind, value, must be refused)
NUMBER_VALUES = [("not a number", "abc", True), ("empty", "", True), ("nan", "nan", True), ("inf", "inf", True),
                 ("-inf", "-inf", True), ("negative", "-1", True), ("zero", "0", False)]
FLOAT_EXTRA = [("huge float", "1e308", False)]
INT_EXTRA = [("fraction for an int", "1.5", True), ("more than 64 bits", HUGE_INT, True)]
CHOICE_VALUES = [("unknown name", "no-such-choice", True), ("empty", "", True)]


def _files(root):
    import numpy as np
    from matplotlib import image

    png = root / "picture.png"
    image.imsave(png, np.zeros((4, 4, 3)))
    text = root / "notes.txt"
    text.write_text("some notes, not a checkpoint\n")
    folder = root / "a-folder"
    folder.mkdir()
    (folder / "inside.txt").write_text("x")
    return {"png": str(png), "text": str(text), "dir": str(folder), "missing": str(root / "missing" / "nothing.json")}


TEXT_VALUES = [("empty", "empty", True), ("unknown name", "no-such-thing-xyz", False), ("png", "png", False),
               ("text file", "text", False), ("directory", "dir", False), ("missing path", "missing", False)]
# Files of the wrong kind for flags that read (or write) one: always refused.
WRONG_FILES = {"--data": "png", "--model": "png", "--train-config": "png", "--tokenizer": "png", "target": "png",
               "targets": "png", "--out-dir": "png", "--out": "png", "--cache-dir": "png",
               "--ckpt": "text", "--labels": "text", "run_dir": "text", "--output": "dir", "--plot": "dir"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny data and runs that the base invocations use."""
    root = tmp_path_factory.mktemp("fuzz")
    files = _files(root)
    corpus = root / "corpus.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 40)
    csv = root / "texts.csv"
    rows = ["text,label"] + [f"{w} message number {i},{'spam' if i % 2 else 'ham'}" for i, w in
                             zip(range(40), itertools.cycle(["free prize", "see you", "call now", "lunch"]))]
    csv.write_text("\n".join(rows) + "\n")
    lm = root / "lm-run"
    assert main(["pretrain", "--model", "gpt-nano", "--data", str(corpus), "--steps", "2", "--batch-size", "2",
                 "--set", "block_size=16", "--eval-steps", "1", "--out-dir", str(lm), "--no-progress"]) == 0
    summary = root / "summary-run"
    assert main(["summary", "seed-mlp", "--out-dir", str(summary)]) == 0
    return {"root": root, "files": files, "corpus": str(corpus), "csv": str(csv), "lm": str(lm), "summary": str(summary)}


def base_invocation(command: str, w: dict, out: str) -> list[str] | None:
    """A valid, trivially small run of ``command`` (None: there is none; only refusals are fuzzed)."""
    small_train = ["--steps", "1", "--batch-size", "2", "--eval-steps", "1", "--out-dir", out, "--no-progress"]
    ft = ["--model", w["lm"], "--data", w["csv"], "--max-len", "8", *small_train]
    return {
        "summary": ["summary", "seed-mlp"],
        "models": ["models"],
        "plan": ["plan", "seed-mlp"],
        "pretrain": ["pretrain", "--model", "gpt-nano", "--data", w["corpus"], "--set", "block_size=8", *small_train],
        "train": ["train", "--model", "mlp-digits", "--data", "digits", *small_train],
        "finetune": ["finetune", "--strategy", "head", *ft],
        "compare": ["compare", "--strategies", "head,bitfit", *ft],
        "generate": ["generate", "--ckpt", w["lm"], "--max-new-tokens", "2"],
        "eval": ["eval", "--ckpt", w["lm"]],
        "report": ["report", w["summary"], "--output", str(w["root"] / "r.html")],
        "examples": ["examples"],
    }.get(command)


def _kind(action: argparse.Action) -> str:
    if action.choices is not None:
        return "choice"
    if action.type is None or action.type is str:
        return "text"
    for probe in ("3", "0.5"):
        try:
            v = action.type(probe)
        except (argparse.ArgumentTypeError, ValueError, TypeError):
            continue
        return "int" if isinstance(v, int) and probe == "3" and not isinstance(v, bool) else "float"
    return "text"


def _takes_value(action: argparse.Action) -> bool:
    if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
        return False
    return action.nargs != 0 and action.nargs != argparse.REMAINDER


def _train_config_fields() -> set[str]:
    import dataclasses

    from layerwise.train.config import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)}


# A flag shared by several commands has its possibly valid values (each a 1-step run) tried on
# one command, the first of this order that has it; its refusals are tried on every command.
# Shared: a TrainConfig field, or the same flag defined alike (finetune's and compare's).
OWNER_ORDER = ("train", "pretrain", "finetune", "generate", "eval", "summary", "plan", "report", "compare", "models")


def _flag_key(a: argparse.Action):
    choices = tuple(a.choices) if a.choices is not None else None  # argparse keeps the list it was given
    return a.dest if a.dest in _train_config_fields() else (a.dest, a.help, a.type, choices)


def _owners() -> dict:
    owners: dict = {}
    subs = _subcommands()
    for command in [c for c in OWNER_ORDER if c in subs] + sorted(set(subs) - set(OWNER_ORDER)):
        for a in subs[command]._actions:
            if a.option_strings:
                owners.setdefault(_flag_key(a), command)
    return owners


def cases_for(parser: argparse.ArgumentParser, files: dict, refusals_only: set[str] = frozenset()):
    """(flag or positional dest, kind, value, must_refuse) for every action of ``parser``;
    for the actions in ``refusals_only`` (dests), only the values that must be refused."""
    for a in parser._actions:
        if not _takes_value(a):
            continue
        name = a.option_strings[0] if a.option_strings else a.dest
        names = set(a.option_strings) | {a.dest}
        kind = _kind(a)
        if kind in ("int", "float"):
            values = NUMBER_VALUES + (INT_EXTRA if kind == "int" else FLOAT_EXTRA)
        elif kind == "choice":
            values = CHOICE_VALUES + [("another case", str(next(iter(a.choices))).upper(), True)]
        else:
            optional_empty = a.nargs == "?" and a.const == ""  # an empty value means the bare flag
            values = [(k, "" if v == "empty" else files.get(v, v), refuse and not optional_empty)
                      for k, v, refuse in TEXT_VALUES]
            wrong = next((WRONG_FILES[n] for n in names if n in WRONG_FILES), None)
            if wrong is not None:
                values.append((f"{wrong} as {name}", files[wrong], True))
        for kind_name, value, refuse in values:
            if refuse or a.dest not in refusals_only:
                yield name, bool(a.option_strings), a.nargs, kind_name, value, refuse


def _command_line(base: list[str], positionals: list[str], name: str, is_option: bool, nargs, value: str) -> list[str]:
    if is_option:
        n = nargs if isinstance(nargs, int) else 1
        return [*base, name, *([value] * n)]
    # a positional: the base gives it at its place; replace that one
    argv = list(base)
    i = positionals.index(name)
    argv[1 + i] = value
    return argv


class _Only:
    """A parser seen through a filter on its actions."""

    def __init__(self, parser, keep):
        self._actions = [a for a in parser._actions if keep(a)]


def _subcommands():
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


SUBCOMMANDS = sorted(_subcommands())


class CaseTimeout(BaseException):  # not an Exception: main() reports those as internal errors
    pass


def run_case(argv: list[str], capsys, limit_s: int = 120) -> tuple[int, str, float]:
    """Exit code, standard error and seconds of ``layerwise ARGV``; a case that runs past
    ``limit_s`` (a value accepted that starts a long run) raises CaseTimeout."""
    import signal
    import time

    def alarm(signum, frame):
        raise CaseTimeout(f"still running after {limit_s} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(limit_s)
    t0 = time.perf_counter()
    try:
        rc = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    return rc, err, time.perf_counter() - t0


def check(argv, rc, err, refuse) -> str | None:
    """What is wrong with the outcome of ``argv``, or None."""
    last = err.strip().splitlines()[-1] if err.strip() else ""
    if "Traceback" in err:
        return "traceback"
    if "internal error" in err:
        return f"internal error: {last}"
    if rc != 0 and not last.startswith("layerwise: error: "):
        return f"exit {rc} without a 'layerwise: error:' line (last stderr line: {last!r})"
    if rc not in (0, 2, 130) and not last.startswith("layerwise: error: "):
        return f"exit {rc}"
    if refuse and rc == 0:
        return "accepted (exit 0); expected a refusal"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_bad_values_for_every_flag_are_one_line_errors(command, world, capsys, tmp_path, monkeypatch, record_property):
    monkeypatch.chdir(tmp_path)  # a value that names a relative path writes here, not in the repository
    parser = _subcommands()[command]
    stats: collections.Counter = collections.Counter()
    failures = []
    slowest: list[tuple[float, str]] = []
    parsers = [(parser, [command])]
    if command == "example":  # each example's own flags, through `layerwise example NAME ...`
        from layerwise.commands.examples import _example_parser
        from layerwise.jobs.examples import examples

        parsers += [(_example_parser(ex), ["example", ex.name, "--quick", "--no-progress"]) for ex in examples()]
    for k, (p, prefix) in enumerate(parsers):
        positionals = [a.dest for a in p._actions if not a.option_strings and _takes_value(a)]
        if p is parser:
            owners = _owners()
            shared = {a.dest for a in p._actions if a.option_strings and owners.get(_flag_key(a)) != command}
        else:  # an example's parser: the TrainConfig flags are fuzzed on the first example only
            shared = {a.dest for a in p._actions if a.option_strings}
            if k > 1:
                train_fields = _train_config_fields() | {"train_config"}
                p = _Only(p, lambda a: a.dest not in train_fields)
        for i, (name, is_option, nargs, kind, value, refuse) in enumerate(cases_for(p, world["files"], shared)):
            out = str(tmp_path / f"run-{k}-{i}")
            base = base_invocation(command, world, out) if p is parser else None
            if base is None:
                if not refuse:
                    continue  # no trivially small run to try a possibly valid value on
                base = prefix + ["--out-dir", out] if p is not parser else [command] + ["x"] * len(positionals)
            if not is_option and name not in positionals:
                continue
            argv = _command_line(base, positionals if p is parser else [], name, is_option, nargs, value)
            try:
                rc, err, seconds = run_case(argv, capsys)
            except CaseTimeout as e:
                capsys.readouterr()
                failures.append(f"{' '.join(argv)} [{kind}]: {e}")
                continue
            slowest.append((seconds, " ".join(argv[len(base):])))
            stats["cases"] += 1
            stats["refused" if rc else "valid run"] += 1
            problem = check(argv, rc, err, refuse)
            if problem:
                failures.append(f"{' '.join(argv[len(base):] or argv)} [{kind}]: {problem}")
    slow = ", ".join(f"{a} ({t:.1f} s)" for t, a in sorted(slowest, reverse=True)[:3])
    print(f"\nfuzz {command}: {stats['cases']} cases; {dict(stats)}; slowest: {slow}")
    record_property("fuzz_cases", stats["cases"])  # summed in the session's report (tests/conftest.py)
    record_property("fuzz_refused", stats["refused"])
    assert not failures, f"{len(failures)} of {stats['cases']} cases failed:\n" + "\n".join(failures)
