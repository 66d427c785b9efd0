"""Imports flow one way: vocabulary -> figure tables -> figures -> report, the lower layers
never import the drawing or rendering libraries, and no module of the package imports itself
through others (checked on the source, every import statement, also those inside functions)."""

import ast
from pathlib import Path

import pytest

from helpers import REPO

SRC = REPO / "src" / "vimodes"

# module -> modules (of vimodes, or libraries) it must never import
FORBIDDEN = {
    "vocabulary": {"figure_tables", "plots", "report", "pandas", "matplotlib", "pymc", "arviz"},
    "figure_tables": {"plots", "report", "matplotlib", "pymc"},
    "plots": {"report", "pymc"},
    "report": {"plots", "matplotlib", "pymc"},
    "figure_specs": {"plots", "report", "figure_tables", "pandas", "matplotlib", "pymc"},
    "fit_result": {"fitting", "pymc", "pytensor", "jax"},
    "cavi": {"fitting", "pymc", "pytensor", "jax"},
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


def package_graph(src: Path = SRC) -> dict[str, set[str]]:
    """module -> the package's modules it imports (anywhere in its source)."""
    modules = {path.stem for path in src.glob("*.py")}
    return {module: {short(name) for name in imported_modules(src / f"{module}.py")
                     if name.startswith("vimodes")} & modules - {module}
            for module in modules}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (depth-first search)."""
    cycles, done = [], set()

    def visit(module, path):
        for target in sorted(graph[module]):
            if target in path:
                cycles.append(path[path.index(target):] + [target])
            elif target not in done:
                visit(target, path + [target])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    return cycles


def test_no_module_imports_itself_through_others():
    assert import_cycles(package_graph()) == []


def test_the_cycle_check_finds_a_lazy_cycle(tmp_path):
    (tmp_path / "a.py").write_text("from vimodes.b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from vimodes.a import y\n")
    (tmp_path / "c.py").write_text("import vimodes.a\n")
    assert import_cycles(package_graph(tmp_path)) == [["a", "b", "a"]]


def test_a_numpy_fitter_runs_without_importing_pymc():
    """A CAVI fit job (planning, the fit, its record) never imports PyMC, PyTensor or JAX,
    whose imports would cost it more than its fits (benchmarks/README.md)."""
    import subprocess
    import sys

    code = """
import sys
from vimodes.fitters import make_fitter
from vimodes.config import FitSettings
from vimodes.pipeline import fit_chunk
from vimodes.idata import write_posterior
from vimodes.simulate import DataRegime, simulate
data = simulate(DataRegime(n_obs=200), seed=0, seed_base=1)
result = make_fitter(FitSettings(model="marginal", method="cavi", iterations=20, draws=10), 200)\
    .fit(data, 1, 0)
assert result.status == "ok", result
print(sorted(m for m in ("pymc", "pytensor", "jax", "numba") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
