"""The study's vocabulary for tables, figures and the report: the order, label and colour of
every outcome class, method and model, in one place (the bottom layer: vocabulary -> figure
tables -> figures -> report). Imports no pandas, matplotlib or PyMC.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from vimodes.classify import OUTCOME_CLASSES, SINGLE_MODE_CLASSES
from vimodes.methods import METHOD_NAMES, METHOD_SPECS, methods_where
from vimodes.model_specs import MODEL_NAMES

OUTCOME_ORDER = OUTCOME_CLASSES  # the classifier's vocabulary, in its order

RATE_CLASSES = ("single_mode", *OUTCOME_ORDER)

OUTCOME_COLORS = {
    "single_mode": "#000000",
    "mode_A": "#1b9e77",
    "mode_B": "#7570b3",
    "mode_single": "#1f78b4",
    "mode_too_wide": "#66a61e",
    "partial_collapse": "#fdae61",
    "overfit_empty": "#a6cee3",
    "overfit_duplicated": "#cab2d6",
    "spanning": "#e7298a",
    "collapsed": "#d95f02",
    "not_converged": "#7f7f7f",
    "failed": "#b8860b",
}

OUTCOME_LABELS = {
    "single_mode": "single mode (A, B or one labelling)",
    "mode_A": "mode A",
    "mode_B": "mode B",
    "mode_single": "single mode (K > 2)",
    "mode_too_wide": "on a mode, too wide",
    "partial_collapse": "partial collapse (two lines merged)",
    "overfit_empty": "over-fitted, extra component empty",
    "overfit_duplicated": "over-fitted, a line duplicated",
    "spanning": "spanning (both modes)",
    "collapsed": "collapsed (modes averaged)",
    "not_converged": "not converged",
    "failed": "failed",
}

METHOD_ORDER = METHOD_NAMES

METHOD_LABELS = {name: spec.label for name, spec in METHOD_SPECS.items()}

METHOD_COLORS = {name: spec.colour for name, spec in METHOD_SPECS.items()}

MODEL_ORDER = MODEL_NAMES

FIT_COLORS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628")

VI_METHODS = methods_where(family="vi")


def ordered(values: Iterable, order: Sequence) -> list:
    """The distinct ``values`` in ``order``, unknown ones after them, sorted."""
    present = {v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))}
    return [v for v in order if v in present] + sorted(v for v in present if v not in order)


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def cell_label(row) -> str:
    """A short readable label of a cell: its id's parts after model and method."""
    parts = str(row["cell_id"]).split("__")
    rest = " ".join(parts[2:])
    return f"{row['model']} · {method_label(row['method'])}" + (f" · {rest}" if rest else "")

MINORITY_CLASSES = (*SINGLE_MODE_CLASSES, "spanning")

CORRECTED_MODELS = ("marginal", "ordered")

# the outcome classes the regime map can draw (a row each when some cell of the map has one)
REGIME_MAP_CLASSES = ("single_mode", "mode_too_wide", "spanning", "collapsed", "not_converged",
                      "failed")
