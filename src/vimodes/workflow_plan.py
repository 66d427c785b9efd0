"""What the Snakemake rules compute while planning the DAG (workflow/rules/report.smk).

Read on every ``snakemake`` invocation, dry runs included, so this module imports only the
standard library and :mod:`vimodes.figure_specs` (no PyMC, matplotlib, pandas or scipy).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from vimodes.figure_specs import FIGURE_RULES

GRID_MARGIN = 2.5  # the log-density grid spans the true slopes +- this ...
GRID_STEP = 0.1  # ... in steps of this (so that the true slopes are grid points)


def report_dataset(study) -> tuple[str, int]:
    """The data set of the log-density grid: the smallest fitted seed (0 when fitted) of the
    question's regime ``default``, or of the first two-component regime in use (the grid is a
    (w0, w1) plane), or of the first regime in use."""
    datasets = study.datasets()
    regimes = [regime for regime, _ in datasets]
    two = [r for r in regimes if len(study.config["data_regimes"][r]["slopes"]) == 2]
    regime = "default" if "default" in regimes else (two or regimes)[0]
    return regime, min(seed for r, seed in datasets if r == regime)


def grid_limits(true_slopes, margin: float = GRID_MARGIN,
                step: float = GRID_STEP) -> tuple[float, float, int]:
    low, high = min(true_slopes) - margin, max(true_slopes) + margin
    return float(low), float(high), int(round((high - low) / step)) + 1


def study_command(config_files: Iterable = (), target: str = "") -> str:
    """The command line of a study; targets come before ``--configfile`` (which takes several)."""
    files = "".join(f" --configfile {os.path.relpath(f) if os.path.isabs(f) else f}"
                    for f in config_files)
    return f"snakemake{' ' + target if target else ''} --cores N{files}"


def figures_command(config_files: Iterable = ()) -> str:
    """``snakemake figures``: redraw the figures and the report from existing fits, never
    refitting (only :data:`vimodes.figure_specs.FIGURE_RULES` may run)."""
    return f"{study_command(config_files, 'figures')} --allowed-rules {' '.join(FIGURE_RULES)}"
