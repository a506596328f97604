"""Imports go one way (docs: DESIGN.md, "Layers and jobs"): a layer imports only from below it,
function-local imports included. Read from the source with ``ast``, so an import inside a
function that no test happens to call still counts."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "layerwise"
BOTTOM = {"roles", "errors", "io", "rundir", "vocab"}
# what each package may import from layerwise, besides itself
ALLOWED = {
    "vocab": {"errors"},
    "analysis": BOTTOM | {"models"},
}


def imported_layerwise_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        for n in names:
            parts = n.split(".")
            if parts[0] == "layerwise" and len(parts) > 1:
                out.add(parts[1])
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_below_itself(package):
    base = SRC / package
    files = [base.with_suffix(".py")] if base.with_suffix(".py").exists() else sorted(base.rglob("*.py"))
    assert files
    bad = {}
    for f in files:
        above = imported_layerwise_packages(f) - ALLOWED[package] - {package}
        if above:
            bad[str(f.relative_to(SRC))] = sorted(above)
    assert not bad, f"{package} imports from layers above it: {bad}"


def test_the_trainer_and_the_planner_read_one_optimizer_and_precision_table():
    """One vocabulary: the Trainer's optimizer and TrainConfig validation, and the planner, import
    their optimizer and precision names from layerwise.vocab and define no table of their own."""
    for rel in ("train/optim.py", "train/config.py", "train/trainer.py", "analysis/plan.py", "analysis/memory.py"):
        assert "vocab" in imported_layerwise_packages(SRC / rel), rel
    from layerwise.train.config import OPTIMIZERS, PRECISIONS
    from layerwise.vocab import OPTIMIZERS as SPECS
    from layerwise.vocab import PRECISIONS as PREC

    assert set(OPTIMIZERS) == {n for n, s in SPECS.items() if s.trainer}
    assert {p for p in PRECISIONS if p in PREC} == {n for n, p in PREC.items() if p.trainer}
