"""Imports go one way (docs/design.md): a layer imports only from layers below it,
function-local imports included. Checked two ways: every import statement in the source
(static), and what importing each package pulls into a fresh interpreter."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import layerwise

SRC = Path(layerwise.__file__).parent

# Bottom to top. Modules of one layer may import each other.
LAYERS = [
    {"errors", "roles", "io", "rundir", "devices", "packages", "gguf_reader", "vocab"},
    {"models", "scratch"},
    {"analysis", "inspect"},
    {"data"},
    {"pretrained", "targets"},
    {"train", "envs"},
    {"finetune"},
    {"report"},
    {"jobs"},
    {"commands", "cli", "__main__", "__init__"},  # __init__ re-exports load_run lazily
]


def _layer(top: str) -> int:
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"layerwise.{top} is in no layer of tests/test_layers.py: add it where it belongs")


def _top(path: Path) -> str:
    rel = path.relative_to(SRC).parts
    return rel[0].removesuffix(".py")


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "layerwise" and len(parts) > 1:
                yield node.lineno, parts[1]
            elif parts[0] == "layerwise" and isinstance(node, ast.ImportFrom):
                for a in node.names:  # from layerwise import analysis
                    if (SRC / a.name).is_dir() or (SRC / f"{a.name}.py").is_file():
                        yield node.lineno, a.name


def test_every_import_statement_points_down():
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        mine = _layer(_top(path))
        for line, target in _imports(path):
            if _layer(target) > mine:
                upward.append(f"{path.relative_to(SRC)}:{line} imports layerwise.{target}")
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_importing_a_package_loads_nothing_above_it():
    packages = sorted({_top(p) for p in SRC.glob("*") if (p.is_dir() and (p / "__init__.py").exists())
                       or (p.suffix == ".py" and p.stem not in ("__main__",))})
    code = (
        "import importlib, json, sys\n"
        "name = sys.argv[1]\nimportlib.import_module('layerwise.' + name if name != '__init__' else 'layerwise')\n"
        "print(json.dumps(sorted({m.split('.')[1] for m in sys.modules if m.startswith('layerwise.')})))\n"
    )
    bad = {}
    for name in packages:
        out = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True, check=True)
        loaded = json.loads(out.stdout.strip().splitlines()[-1])
        above = [m for m in loaded if _layer(m) > _layer(name)]
        if above:
            bad[name] = above
    assert not bad, f"importing these loads layers above them: {bad}"
