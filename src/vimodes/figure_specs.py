"""The figure registry: every figure of the study, once, with its title, caption, Snakemake report
category, report section and the tables it is drawn from.

A figure is ONE function in :data:`vimodes.plots.FIGURES` (keyword arguments = the table names of
its :attr:`FigureSpec.inputs`) plus ONE :class:`FigureSpec` here; a figure from outside the
package (a plugin) names its function in :attr:`FigureSpec.function` instead. Everything else derives from
this registry: the workflow's single ``plot_figure`` rule (its wildcard constraint, input, report
category and caption, workflow/rules/report.smk), the figures of ``write_report``, the
``--allowed-rules`` of ``snakemake figures`` / ``make figures``, the report's figure captions
(:data:`vimodes.report.FIGURE_INFO`) and which report section shows a figure.

This module is read while Snakemake plans the DAG, so it imports only the standard library (no
PyMC, matplotlib or pandas).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TABLE_DIR = "data/tables"
KHAT_GOOD, KHAT_OK = 0.5, 0.7  # Pareto k-hat thresholds of Yao et al. (2018)

# The rules that `snakemake figures` may run (never a fit, a classification or the aggregation):
# the figure and report rules and the table rules that derive figure tables from existing fits.
TABLE_RULES = ("loss_traces", "representative_draws", "nuts_chain_draws", "posterior_grid")
FIGURE_RULES = ("figures", "write_report", "plot_figure", *TABLE_RULES)


@dataclass(frozen=True)
class FigureSpec:
    """One figure: ``figures/{name}.png`` and ``.svg``, drawn by ``plots.FIGURES[name]`` or,
    for a figure defined outside the package, by ``function`` (``"module:function"``, imported
    when the figure is drawn, so that registering it imports nothing heavy).

    ``caption`` uses the markup common to the report's Markdown/HTML and reStructuredText:
    plain text, `code` in single backticks and **bold**. ``inputs`` are table names:
    ``data/tables/{table}.parquet`` and the keyword arguments of the figure's function.
    ``section`` names the :class:`vimodes.report.Section` that shows the figure.
    """

    name: str
    title: str
    caption: str
    category: str
    inputs: tuple[str, ...]
    section: str = ""
    function: str = ""

    def __post_init__(self):
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"figure name {self.name!r}: lower case, digits and _ only")
        if not self.inputs:
            raise ValueError(f"figure {self.name!r} reads no table")
        if self.function and ":" not in self.function:
            raise ValueError(f"figure {self.name!r}: function must be 'module:function', not "
                             f"{self.function!r}")

    @property
    def input_paths(self) -> dict[str, str]:
        """The rule's named input: table name -> path."""
        return {table: table_path(table) for table in self.inputs}

    @property
    def rst_caption(self) -> str:
        """The caption in reStructuredText (Snakemake's report): `code` -> ``code``."""
        return re.sub(r"(?<!`)`([^`]+)`(?!`)", r"``\1``", self.caption)


def table_path(table: str) -> str:
    return f"{TABLE_DIR}/{table}.parquet"


FIGURE_SPECS: dict[str, FigureSpec] = {}


def register(spec: FigureSpec) -> FigureSpec:
    """Add a figure to the registry (the order of registration is the order of the report)."""
    if spec.name in FIGURE_SPECS:
        raise ValueError(f"figure {spec.name!r} is registered twice")
    FIGURE_SPECS[spec.name] = spec
    return spec


def figure_names() -> list[str]:
    return list(FIGURE_SPECS)


def figures_in(section: str) -> list[str]:
    """The figures that report section ``section`` shows, in registry order."""
    return [name for name, spec in FIGURE_SPECS.items() if spec.section == section]


def name_pattern() -> str:
    """The ``plot_figure`` rule's wildcard constraint: exactly the registered names."""
    return "|".join(re.escape(name) for name in FIGURE_SPECS)


register(FigureSpec(
    "outcome_rates", "Outcome classes per cell",
    "For every cell of the study (rows, grouped by grid), the share of its fits in each outcome "
    "class (panels) with a 95% Wilson interval. Single mode = mode A + mode B: the fit sits on "
    "one of the two permutation modes of the posterior. On a mode, too wide: the centre of the "
    "draws is on mode A or B, but fewer than 90% of the draws are in that mode's box (not "
    "counted as single mode). Spanning: draws in both modes (e.g. NUTS chains in different "
    "modes). Collapsed: both slopes near the same value (modes averaged). Not converged: "
    "anything else that is not a clean class (see `vimodes.classify`). Failed: a numerical "
    "failure.",
    category="1. Outcomes", inputs=("cells",), section="headline"))
register(FigureSpec(
    "question_model", "The question's model next to the corrected one",
    "Fits of `as_asked` (the question's model ported to PyMC 5, errors E1-E4), of each ablation "
    "`as_asked_fix_*` that fixes one error (where the study ran them) and of the corrected "
    "model `marginal`, in the VI settings in which `as_asked` was run. Left: posterior mean of "
    "sigma (dashed: the Uniform(0, 1) cap, dotted: the true noise sd, dash-dotted: residual sd "
    "of one line through all points). Middle: posterior means of both slopes (dotted: the true "
    "slopes). Right: single-mode rate per model and method with 95% Wilson intervals. The "
    "question's symptom is sigma near the cap and slopes that do not reach the true values.",
    category="2. The question's model", inputs=("fits", "data_summary"), section="question"))
register(FigureSpec(
    "loss_traces", "Loss trajectories",
    "Loss (negative ELBO) against iteration for every fit with a stored trace, one panel per "
    "model and method, coloured by the fit's final outcome class. Minibatch VI: the mean of the "
    "minibatch losses over each block of stored iterations; CAVI: the exact negative ELBO per "
    "sweep. Symmetric-log y axis.",
    category="3. Trajectories and draws", inputs=("loss_traces",), section="factors"))
register(FigureSpec(
    "slope_draws", "Slope draws of representative fits",
    "Up to three fits per method (rows) and outcome class (columns), 200 draws each, in the "
    "(w0, w1) plane. Background: the corrected model's log posterior density for one simulated "
    "data set with the weights and sigma held at their true values, shown as log10(1 + distance "
    "below its maximum) (darker = higher density). Crosses: the two permutation modes; plus: "
    "one line through all points (what the question's whole-batch mixture finds).",
    category="3. Trajectories and draws",
    inputs=("representative_draws", "posterior_grid", "data_summary"), section="factors"))
register(FigureSpec(
    "nuts_chains", "Label switching between NUTS chains",
    "One NUTS fit with several chains (4 where the study has such a fit) whose draws span both "
    "permutation modes (outcome class spanning): the first such cell, its smallest seed. Per "
    "slope (rows): the density and the trace of each chain (`az.plot_trace`) and the rank plot "
    "(`az.plot_rank`: the ranks of each chain's draws among the draws of all chains), with the "
    "slope's R-hat. Each chain sits in one permutation mode and stays there: the labels switch "
    "between chains, not within one. The rank histograms are therefore far from uniform (a "
    "chain in the upper mode has only high ranks) and R-hat flags the fit, although every "
    "chain on its own explores one mode well.",
    category="3. Trajectories and draws", inputs=("nuts_chain_draws",), section="factors"))
register(FigureSpec(
    "adam_non_single", "Where and how wide the adam fits are",
    "Every meanfield and full-rank ADVI fit of the corrected models under adam (all step sizes, "
    "starts and budgets of the study): the posterior sd of the widest slope (x, log scale) "
    "against the share of the draws in the basin of the approximation's centre (y; 0 when the "
    "centre is on no mode), coloured by outcome class. Single-mode fits are small and pale; the "
    "others, outlined, are the ones the report explains: a fit on a mode but too wide sits to "
    "the right and below 0.9, a collapsed or stray fit at 0.",
    category="2. Factors", inputs=("fits",), section="adam"))
register(FigureSpec(
    "khat_by_class", "PSIS k-hat by outcome class",
    "Pareto k-hat of each approximation (Yao et al. 2018), by outcome class, coloured by method; "
    f"dotted and dashed lines at {KHAT_GOOD:g} and {KHAT_OK:g}. k-hat is local: an "
    "approximation on one permutation mode can have a small k-hat although it misses the other "
    "mode.",
    category="4. Diagnostics", inputs=("fits",), section="diagnostics"))
register(FigureSpec(
    "elbo_by_class", "Full-data ELBO by outcome class",
    "The full-data ELBO of every fit of the marginal model that has one (Gaussian VI: the "
    "mean of log p(data, z) - log q(z) over its draws), minus the best ELBO of a single-mode "
    "fit of a model with the same K on the same data set, by outcome class, coloured by method: "
    "how far each approximation is, by VI's own objective, from the best single-mode one found. Symmetric log scale, "
    "linear within +-10 nats; fits more than 1e7 nats below are drawn at -1e7.",
    category="4. Diagnostics", inputs=("fits",), section="diagnostics"))
register(FigureSpec(
    "errors_by_class", "Errors by outcome class",
    "Absolute error of the posterior means of sigma, the slopes and the weights after "
    "relabelling to the nearest permutation of the truth, by outcome class, coloured by method; "
    "bar: median. Log scale.",
    category="4. Diagnostics", inputs=("fits",), section="diagnostics"))
register(FigureSpec(
    "minority_share", "Minority share of single-mode and spanning fits",
    "For every fit labelled mode A, mode B or spanning, the share of its draws in a basin that "
    "lie in the less populated mode, min(A, B) / (A + B); one empirical CDF per method. 0: all "
    "draws of the fit that are on a mode are on the same one; 0.5: an even split between the two "
    "modes. A fit with a minority of at least 10% of all its draws is spanning (see "
    "`vimodes.classify`).",
    category="4. Diagnostics", inputs=("fits",), section="diagnostics"))
register(FigureSpec(
    "budget_curves", "Single-mode and collapsed shares against the iteration budget",
    "For every cell with stored checkpoints (one long run per seed, classified at each "
    "checkpoint: neither optimiser has a schedule, so a checkpoint is exactly what a run of that "
    "many iterations returns), the share of fits on a single mode (left) and the share still "
    "collapsed on the symmetric one-line solution (right) against the number of iterations, "
    "with 95% Wilson bands over the seeds of the cell. Solid lines start at PyMC's symmetric "
    "default point, dashed lines at a jittered start.",
    category="2. Factors", inputs=("fits",), section="budget"))
register(FigureSpec(
    "regime_map", "Where VI lands as the data change",
    "Each panel moves one descriptor of the data away from the default regime (N = 100000, "
    "slopes 3 and -1, noise sd 0.1, equal weights, x ~ U(-1, 1)), whose cell is the common point "
    "of every panel: the share of fits in each outcome class that occurs in the map (a row "
    "each: on a single mode first, then e.g. collapsed on the one-line solution and not "
    "converged), with 95% Wilson intervals over the seeds of each cell, one line per setting. The classifier's slope tolerance in each regime follows that regime's NUTS "
    "reference posterior.",
    category="2. Factors", inputs=("cells",), section="regimes"))
register(FigureSpec(
    "runtime", "Runtime per method",
    "Fit time of every successful fit, excluding the model compilation (done once per chunk of "
    "seeds); bar: median. Log scale. Times depend on the machine (see the report's "
    "reproduction section).",
    category="5. Runtime", inputs=("fits",), section="runtime"))


if __name__ == "__main__":  # `python -m vimodes.figure_specs`: the rules of `make figures`
    print(" ".join(FIGURE_RULES))
