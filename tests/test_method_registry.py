"""A method and a figure are each one registry entry (#15): registered from outside the package
(a ``sitecustomize`` module on PYTHONPATH, the way a plugin would), they are planned, fitted,
classified, tabulated and shown in the report by the unchanged workflow."""

from __future__ import annotations

import os
import re
import subprocess

import pandas as pd

from conftest import REPO, SNAKEMAKE, copy_workflow

# draws centred on the data's own slopes in the data's order: the classifier must call every
# such fit mode A (the truth's labelling), which a method the pipeline ignored could not produce
FITTER = '''
import numpy as np

from vimodes.fitting import FitResult, fit_rng


class TruthFitter:
    """Draws around the data's true parameters (a plugin method for the registry test)."""

    def __init__(self, settings, n_obs):
        self.settings = settings

    def fit(self, data, seed_base, seed):
        rng = fit_rng(seed_base, seed)
        n = self.settings.draws
        slopes = np.asarray(data.regime.slopes) + 0.002 * rng.standard_normal((n, 2))
        weights = np.tile(np.asarray(data.regime.weights), (n, 1))
        sigma = data.regime.noise_sd * (1 + 0.01 * rng.standard_normal(n))
        return FitResult("ok", None, info={"fit_seconds": 0.0},
                         draws={"slopes": slopes[None], "weights": weights[None],
                                "sigma": sigma[None]})
'''

SITECUSTOMIZE = '''
from vimodes.figure_specs import FigureSpec, register
from vimodes.methods import MethodSpec, register_method

register_method(MethodSpec(
    "truth_plugin", "truth plugin", "#000000", ("init",), {"jitter": "the data's truth"},
    "truth_plugin_fitter:TruthFitter", init_kinds=("jitter",), full_data=True))
register(FigureSpec("plugin_share", "A plugin figure", "Fits per `method`; a test.",
                    category="9. Test", inputs=("fits",)))

from vimodes import plots


def fig_plugin_share(fits):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    counts = fits["method"].value_counts()
    fig.add_subplot().bar(list(counts.index), list(counts.values))
    return fig


plots.FIGURES["plugin_share"] = fig_plugin_share
'''

CONFIG = """
study_name: plugin
seed_base: 20180913
draws: 50
data_regimes:
  default:
    n_obs: 500
optimizers:
  adam: {name: adam, learning_rate: 0.05}
inits:
  jitter: {kind: jitter, scale: 1.0}
mechanism:  # the report's mechanism table at its cheapest (config/quick.yaml's)
  seeds: [0]
  iterations: 100
  n_draws: 10
  n_geometry_draws: 4
  n_batches: 20
grids:
  - name: plugin
    description: A method registered by a plugin.
    models: [marginal]
    methods: [truth_plugin]
    optimizers: [adam]
    inits: [jitter]
    seeds: 2
"""


def test_a_method_and_a_figure_registered_alone_run_to_the_report(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    (work / "config" / "plugin.yaml").write_text(CONFIG)
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (plugin / "truth_plugin_fitter.py").write_text(FITTER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(plugin), str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([SNAKEMAKE, "--cores", "2", "--configfile", "config/plugin.yaml"],
                            cwd=work, capture_output=True, text=True, timeout=1200, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"^(local)?rule fit_chunk:$", result.stderr, re.M)

    cell = "marginal__truth_plugin__init-jitter"
    fits = pd.read_parquet(work / "data" / "tables" / "fits.parquet")
    fits = fits[fits["level"] == "fit"]
    assert list(fits["cell_id"]) == [cell, cell]
    assert list(fits["status"]) == ["ok", "ok"]
    assert list(fits["outcome"]) == ["mode_A", "mode_A"]  # classified from the plugin's draws
    cells = pd.read_parquet(work / "data" / "tables" / "cells.parquet")
    (row,) = cells[cells["cell_id"] == cell].to_dict("records")
    assert (row["n_fits"], row["n_mode_A"]) == (2, 2)

    report = (work / "report" / "report.md").read_text()
    assert "Other methods: truth plugin" in report  # the section is titled from the registry
    assert re.search(r"truth plugin \(1 cell\): single mode in 2/2", report)
    assert "figures/plugin_share.png" in report and "A plugin figure" in report
    assert (work / "figures" / "plugin_share.png").stat().st_size > 0
