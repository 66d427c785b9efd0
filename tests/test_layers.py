"""Imports flow one way: vocabulary -> figure tables -> figures -> report, and the lower layers
never import the drawing or rendering libraries (checked on the source, every import statement,
also those inside functions)."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vimodes"

# module -> modules (of vimodes, or libraries) it must never import
FORBIDDEN = {
    "vocabulary": {"figure_tables", "plots", "report", "pandas", "matplotlib", "pymc", "arviz"},
    "figure_tables": {"plots", "report", "matplotlib", "pymc"},
    "plots": {"report", "pymc"},
    "report": {"plots", "matplotlib", "pymc"},
    "figure_specs": {"plots", "report", "figure_tables", "pandas", "matplotlib", "pymc"},
}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "vimodes":
                names |= {f"vimodes.{alias.name}" for alias in node.names}
    return names


def short(name: str) -> str:
    parts = name.split(".")
    return parts[1] if parts[0] == "vimodes" and len(parts) > 1 else parts[0]


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_layer_imports_only_downwards(module):
    found = {short(name) for name in imported_modules(SRC / f"{module}.py")}
    assert not found & FORBIDDEN[module], f"{module} imports {sorted(found & FORBIDDEN[module])}"


def test_the_check_sees_imports_inside_functions(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from vimodes.plots import FIGURES\n    import matplotlib\n")
    assert {short(n) for n in imported_modules(probe)} == {"plots", "matplotlib"}
