"""Posterior draws as canonical ArviZ InferenceData NetCDF files.

Canonical means: no creation timestamps or wall-clock statistics in the file, variables in
sorted order, attributes from the (deterministic) fit record only -- so two runs of the same fit
write files with the same sha256. Files are written to a temporary path, reopened and checked
for every expected group, then moved into place.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from vimodes.records import NETCDF_ENGINE, _jsonable, atomic_path

# record keys that describe timing, which differs between runs and so stays out of the file
_VOLATILE = ("fit_seconds", "wall_seconds", "setup_seconds")


class CorruptFitError(OSError):
    """A fit file that cannot be read back completely; the next run regenerates it."""


# per-component variables: their last axis is the model's component k (named dimension and
# coordinate, so that az.summary / az.plot_trace label them slopes[0], slopes[1], ...)
COMPONENT_VARIABLES = ("slopes", "weights")


def _dims(name: str, ndim: int) -> list[str]:
    extra = [f"{name}_dim_{i}" for i in range(ndim - 2)]
    if name in COMPONENT_VARIABLES and extra:
        extra[-1] = "component"
    return ["chain", "draw", *extra]


def _dataset(arrays: dict[str, np.ndarray]) -> xr.Dataset:
    variables = {name: (_dims(name, np.ndim(arrays[name])), np.asarray(arrays[name]))
                 for name in sorted(arrays)}
    dataset = xr.Dataset(variables)
    # integer coordinates for every dimension the variables have (chain, draw, component, ...)
    return dataset.assign_coords({dim: np.arange(size) for dim, size in dataset.sizes.items()
                                  if dim in ("chain", "draw", "component")})


def write_posterior(path: str | Path, result, record: dict) -> None:
    """Write the draws and the fit record (as an attribute of the posterior group)."""
    attrs = {key: value for key, value in record.items() if key not in _VOLATILE}
    groups = {"posterior": _dataset(result.draws)}
    if result.sample_stats:
        groups["sample_stats"] = _dataset(result.sample_stats)
    import arviz as az

    idata = az.InferenceData(**groups)
    for group in idata.groups():
        idata[group].attrs = {}
    idata.posterior.attrs["fit_record"] = json.dumps(_jsonable(attrs), sort_keys=True)
    with atomic_path(path) as tmp:
        idata.to_netcdf(str(tmp), engine=NETCDF_ENGINE)
        check_posterior_file(tmp, expected_groups=tuple(groups))


def check_posterior_file(path: str | Path, expected_groups=("posterior",)) -> None:
    try:
        import arviz as az

        idata = az.from_netcdf(str(path), engine=NETCDF_ENGINE)
    except Exception as err:  # noqa: BLE001 - any read failure means the file is unusable
        raise CorruptFitError(f"fit file '{path}' is unreadable or truncated: {err}") from err
    missing = [g for g in expected_groups if g not in idata.groups()]
    if missing:
        raise CorruptFitError(f"fit file '{path}' lacks group(s) {missing}")


def read_posterior(path: str | Path) -> dict[str, np.ndarray]:
    try:
        # the posterior group read directly: importing ArviZ costs ~4 s per classify job
        with xr.open_dataset(str(path), group="posterior", engine=NETCDF_ENGINE) as posterior:
            return {name: np.asarray(posterior[name].values) for name in posterior.data_vars}
    except Exception as err:  # noqa: BLE001
        raise CorruptFitError(f"fit file '{path}' is unreadable or truncated: {err}") from err
