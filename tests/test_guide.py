"""docs/guide.md is what docs/make_guide.py writes, and it is not stale.

The whole guide takes about a minute to regenerate (it trains); these checks are the cheap
parts: the guide shows exactly the commands the script runs, every one of them parses with
the CLI's parser, every flag the prose names exists, and the fast commands — and one whole
section, prose included — regenerated now are what the guide shows.
"""

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest

from layerwise.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide.md"


def _load_script():
    spec = importlib.util.spec_from_file_location("make_guide", ROOT / "docs" / "make_guide.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


mg = _load_script()
TEXT = GUIDE.read_text()


def shown() -> list[str]:
    return re.findall(r"^\$ layerwise (.+)$", TEXT, flags=re.M)


def block(args: str) -> str:
    """The output the guide shows under ``$ layerwise ARGS``."""
    m = re.search(r"^```console\n\$ layerwise " + re.escape(args) + r"\n(.*?)^```$", TEXT, flags=re.M | re.S)
    assert m, f"the guide has no block for `layerwise {args}`"
    return m.group(1)


def test_guide_shows_the_scripts_commands_in_order():
    assert shown() == mg.shown_commands(), "docs/guide.md is stale: run `make guide`"
    assert len(re.findall(r"^## \d+\. ", TEXT, flags=re.M)) == len(mg.SECTIONS) == 10


def test_every_command_parses():
    parser = build_parser()
    for args in shown():
        try:
            parser.parse_args(shlex.split(args))
        except SystemExit as e:  # argparse refuses with exit code 2
            pytest.fail(f"`layerwise {args}` does not parse (exit {e.code})")


def test_the_flags_the_prose_names_exist():
    """`--flag` in the prose (outside the console blocks) is a flag of train, finetune or a shown command."""
    prose = re.sub(r"^```.*?^```$", "", TEXT, flags=re.M | re.S)
    named = set(re.findall(r"`(--[a-z][a-z0-9-]*)", prose))
    assert {"--clip-grad-norm", "--grad-accum", "--early-stopping"} <= named
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    known = {opt for name in ("train", "finetune", "summary", "inspect") for a in sub[name]._actions
             for opt in a.option_strings}
    assert named <= known, f"the guide names flags no command has: {sorted(named - known)}"


def test_the_config_file_shown_is_the_one_run():
    for name, text in mg.FILES.items():
        assert f"```toml\n{text}```" in TEXT, f"{name} in the guide differs from docs/make_guide.py"
        assert f"inspect {name} " in TEXT


@pytest.mark.parametrize("args", ["summary seed-mlp --by role", "summary seed-cnn-mnist --explain"])
def test_fast_outputs_are_current(args, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", mg.COLUMNS)
    assert mg.Runner(tmp_path).text(args) == block(args)


def test_a_whole_section_is_current(tmp_path, monkeypatch):
    """The RNN answer regenerated now — its prose numbers read from JSON, and the output — is in the guide."""
    monkeypatch.setenv("COLUMNS", mg.COLUMNS)
    i, section = next((i, s) for i, s in enumerate(mg.SECTIONS, 1) if s.commands == [mg.LSTM])
    text = section.render(mg.Runner(tmp_path), i)
    assert "99,328" in text  # the LSTM layer of Embedding(10000, 64) → LSTM(128): 4·128·(64+128) + 2·4·128
    assert text in TEXT, "docs/guide.md is stale: run `make guide`"
