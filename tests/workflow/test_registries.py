"""A method and a figure are each one registry entry: registered from outside the package (a
``sitecustomize`` module on PYTHONPATH, the way a plugin would), they are planned, fitted,
classified, tabulated and shown in the report by the unchanged workflow."""

from __future__ import annotations

import os
import re
import subprocess

import pandas as pd

from helpers import REPO, SMOKE, SNAKEMAKE, copy_workflow
from vimodes.figure_specs import FIGURE_SPECS


def test_a_method_and_a_figure_registered_alone_run_to_the_report(quick_study):
    """The quick study runs the test plugin's method and figure (.test/plugin, imported by a
    `sitecustomize` module on the runs' PYTHONPATH; no workflow file names them)."""
    work, _, result, _ = quick_study
    cell = "marginal__truth_plugin__init-jitter"
    assert re.search(rf"^(local)?rule fit_chunk:\n(.*\n)*?\s+wildcards: cell={cell},",
                     result.stderr, re.M)
    fits = pd.read_parquet(work / "data" / "tables" / "fits.parquet")
    fits = fits[(fits["level"] == "fit") & (fits["cell_id"] == cell)]
    assert list(fits["status"]) == ["ok", "ok"]
    assert list(fits["outcome"]) == ["mode_A", "mode_A"]  # classified from the plugin's draws
    cells = pd.read_parquet(work / "data" / "tables" / "cells.parquet")
    (row,) = cells[cells["cell_id"] == cell].to_dict("records")
    assert (row["n_fits"], row["n_mode_A"]) == (2, 2)

    report = (work / "report" / "report.md").read_text()
    assert re.search(r"Other methods: .*truth plugin", report)  # titled from the registry
    assert re.search(r"truth plugin \(1 cell\): single mode in 2/2", report)
    assert "figures/plugin_share.png" in report and "A plugin figure" in report
    assert (work / "figures" / "plugin_share.png").stat().st_size > 0
    workflow = "\n".join(p.read_text() for p in (REPO / "workflow").rglob("*")
                         if p.is_file() and p.suffix in {".smk", ".py", ".yaml", ".rst"})
    assert "truth_plugin" not in workflow and "plugin_share" not in workflow


FIGURE_ONLY = """
from vimodes.figure_specs import FigureSpec, register

register(FigureSpec("dummy_share", "A dummy figure", "Share of fits per `method`; a test.",
                    category="9. Test", inputs=("fits", "cells")))
"""


def test_a_figure_registered_alone_is_planned_by_the_workflow(tmp_path):
    """In a Snakemake subprocess: a FigureSpec registered before the Snakefile is read (here by a
    sitecustomize module) gets a plot_figure job with the registry's tables and is an input of
    the report, with no rule, caption file or list edited."""
    work = copy_workflow(tmp_path / "wf")
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "sitecustomize.py").write_text(FIGURE_ONLY)
    result = subprocess.run([SNAKEMAKE, "-n", "figures", "--configfile", SMOKE],
                            cwd=work, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                [str(plugin), str(REPO / "src")])})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = re.split(r"^\[[^\]]*\]$", result.stdout, flags=re.M)  # one block per job
    plots = [j for j in jobs if re.search(r"^(local)?rule plot_figure:$", j, re.M)]
    package_figures = [spec for spec in FIGURE_SPECS.values() if not spec.function]
    assert len(plots) == len(package_figures) + 1  # this run has no test plugin
    (dummy,) = [j for j in plots if "wildcards: name=dummy_share" in j]
    assert "input: data/tables/fits.parquet, data/tables/cells.parquet" in dummy
    assert "output: figures/dummy_share.png, figures/dummy_share.svg" in dummy
    assert "log: logs/figures/dummy_share.log" in dummy
    (write_report,) = [j for j in jobs if re.search(r"^(local)?rule write_report:$", j, re.M)]
    assert "figures/dummy_share.png" in write_report
