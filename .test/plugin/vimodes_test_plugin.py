"""A method and a figure added from outside the package, through the registries alone (the way
a plugin would): the quick test study (.test/config/quick.yaml) runs the method to its report.

`sitecustomize.py` beside this file imports it when this folder is on PYTHONPATH, so every
process of a Snakemake run (planning, jobs) sees the same registries. Registering imports only
the registries (no PyMC, no matplotlib): the fitter and the figure function are named as
"module:name" and imported when a job uses them. The method draws around the data's own
parameters in the data's order: the classifier must call every such fit mode A (the truth's
labelling), which a method the pipeline ignored could not produce.
"""

from vimodes.figure_specs import FigureSpec, register
from vimodes.methods import MethodSpec, register_method

register_method(MethodSpec(
    "truth_plugin", "truth plugin", "#000000", ("init",), {"jitter": "the data's truth"},
    "vimodes_test_plugin:TruthFitter", init_kinds=("jitter",), full_data=True))
register(FigureSpec("plugin_share", "A plugin figure", "Fits per `method`; a test.",
                    category="9. Test", inputs=("fits",),
                    function="vimodes_test_plugin:fig_plugin_share"))


class TruthFitter:
    """Draws around the data's true parameters."""

    def __init__(self, settings, n_obs):
        self.settings = settings

    def fit(self, data, seed_base, seed):
        import numpy as np

        from vimodes.fit_result import FitResult, fit_rng

        rng = fit_rng(seed_base, seed)
        n = self.settings.draws
        slopes = np.asarray(data.regime.slopes) + 0.002 * rng.standard_normal((n, 2))
        weights = np.tile(np.asarray(data.regime.weights), (n, 1))
        sigma = data.regime.noise_sd * (1 + 0.01 * rng.standard_normal(n))
        return FitResult("ok", None, info={"fit_seconds": 0.0},
                         draws={"slopes": slopes[None], "weights": weights[None],
                                "sigma": sigma[None]})


def fig_plugin_share(fits):
    """Fits per method: one bar each."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2.5), layout="constrained")
    counts = fits["method"].value_counts() if "method" in fits.columns else {}
    ax = fig.add_subplot()
    ax.bar([str(m) for m in dict(counts)], list(dict(counts).values()))
    ax.tick_params(axis="x", labelrotation=45)
    ax.set_ylabel("fits")
    return fig
