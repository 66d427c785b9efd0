"""What every fitter returns and the random streams it draws from, without any fitter's
libraries: a job that runs a numpy-only fitter (CAVI, a plugin's method) never imports PyMC,
whose import alone costs a job about 5 CPU-s (benchmarks/README.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

FIT_STREAM = 1  # default_rng([seed_base, seed, FIT_STREAM]) drives everything random in a fit
# draws from stored checkpoints come from their own stream, so storing checkpoints changes
# nothing else in a fit
CHECKPOINT_STREAM = 2
KHAT_STREAM = 3  # the bootstrap of k-hat's MCSE


def fit_rng(seed_base: int, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed_base, seed, FIT_STREAM])


@dataclass
class FitResult:
    """Outcome of one fit. ``draws`` arrays have a leading (chain, draw) pair of axes."""

    status: str  # "ok" | "failed" | "incomplete"
    error: str | None
    draws: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict)
    # (checkpoint, draw, ...) draws at the stored checkpoints; empty without checkpoints
    checkpoint_draws: dict[str, np.ndarray] = field(default_factory=dict)
    # named sets of arrays another cell's fit of the same seed reuses (written as
    # seed-<s>.<name>.npz, e.g. Pathfinder's paths, resampled by the pathfinder_psis cell)
    artifacts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


class StoredFitMismatch(Exception):
    """Stored results of another cell that do not belong to this fit (other seed or settings):
    a defect of the workflow, never recorded as a fit's outcome."""


class NumericalFailure(RuntimeError):
    """A fit that diverged numerically: recorded as data, never fatal to the study."""


# Failures that are properties of the fit, not of the infrastructure: recorded as `failed`.
# PyMC's SamplingError is a RuntimeError (tests/unit/test_fitting.py checks it), so this module
# need not import PyMC to name it.
NUMERICAL_ERRORS = (NumericalFailure, FloatingPointError, ValueError, RuntimeError,
                    np.linalg.LinAlgError)
