"""The package's shape, as the code states it: imports run one way (cli/studies -> training ->
models -> bijections/nn/distributions), no import hides inside a function but the two optional
ones, and no function runs past 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src" / "realnvp"
FILES = sorted(SRC.rglob("*.py"))

#: each part of the package, and how high it stands: a part imports only parts below it
RANK = {
    "errors": 0,
    "files": 0,
    "collectives": 0,
    "config": 1,
    "data": 1,
    "bijections": 2,
    "nn": 2,
    "distributions": 3,
    "models": 4,
    "audit": 5,
    "training": 5,
    "plots": 6,
    "estimator": 7,
    "sbi": 7,
    "studies": 7,
    "cli": 8,
    "__main__": 9,
}
#: imports that stay inside a function on purpose: optional, or loaded on first use
LAZY = {
    ("__init__.py", "realnvp.estimator"),  # the estimator (and scikit-learn's base) on first use
    ("training/callbacks.py", "torch.utils.tensorboard"),  # tensorboard is optional
    # pyarrow is optional: it reads Parquet and Feather tables
    ("data/tabular.py", "pyarrow.compute"),
    ("data/tabular.py", "pyarrow.feather"),
    ("data/tabular.py", "pyarrow.parquet"),
}


def part(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def realnvp_imports(tree: ast.Module) -> set[str]:
    """The parts of realnvp a module imports: ``from realnvp.x.y import z`` and
    ``from realnvp import x`` both name ``x``."""
    parts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = node.module.split(".")
            if names[0] != "realnvp":
                continue
            if len(names) > 1:
                parts.add(names[1])
            else:
                parts.update(alias.name for alias in node.names if alias.name in RANK)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[0] == "realnvp" and len(names) > 1:
                    parts.add(names[1])
    return parts


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_run_one_way(path: Path) -> None:
    if path == SRC / "__init__.py":
        return  # the package's face: it hands on names from below
    mine = part(path)
    tree = ast.parse(path.read_text())
    upward = [p for p in realnvp_imports(tree) if p != mine and RANK[p] >= RANK[mine]]
    assert not upward, f"{mine} (rank {RANK[mine]}) imports {upward}"


def test_every_part_has_a_rank() -> None:
    assert {part(p) for p in FILES} - {"__init__"} == set(RANK)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_import_hides_in_a_function(path: Path) -> None:
    rel = str(path.relative_to(SRC))
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    module = inner.module if isinstance(inner, ast.ImportFrom) else None
                    module = module or inner.names[0].name
                    assert (rel, module) in LAZY, f"{rel}: {node.name} imports {module}"


def test_the_data_layer_never_imports_torch() -> None:
    for path in (SRC / "data").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                module = getattr(node, "module", None) or ""
                assert not any(n.split(".")[0] == "torch" for n in [*names, module]), path


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_function_runs_past_60_lines(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            assert length <= 60, f"{path.name}: {node.name} runs {length} lines"
