"""Posterior draws as canonical ArviZ InferenceData NetCDF files.

Canonical means: no creation timestamps or wall-clock statistics in the file, variables in
sorted order, attributes from the (deterministic) fit record only -- so two runs of the same fit
write files with the same sha256. Files are written to a temporary path, reopened and checked
for every expected group, then moved into place.

What a fit file holds, readable with ArviZ alone (``az.from_netcdf``, ``az.summary``,
``az.plot_trace``, ``az.plot_pair``):

* ``posterior``: the draws, dims ``(chain, draw[, component])`` with integer coordinates; the
  fit record (JSON, timings left out) is the attribute ``fit_record``;
* ``sample_stats``: the sampler's statistics (NUTS only);
* ``loss``: the VI loss history, variable ``loss`` over the dimension ``iteration``, whose
  coordinate is the iteration at the end of each stored value (VI: the mean minibatch loss of
  each block of ``vimodes.config.TRACE_EVERY`` iterations, the last block possibly shorter;
  CAVI: the negative ELBO after each sweep). Fits without a loss (NUTS, SVGD, Pathfinder) have
  no such group. ArviZ keeps custom groups through ``from_netcdf`` / ``to_netcdf`` and, by
  default, without a warning.
* the observed data by reference, not by copy: the posterior attributes
  ``observed_data_file`` (the data set's path relative to the fit file's folder, POSIX
  separators) and ``observed_data_sha256`` (of the data set file's bytes).
  :func:`attach_observed_data` returns the InferenceData with a real ``observed_data`` group::

      idata = vimodes.idata.attach_observed_data("data/fits/<cell>/chunk-0/seed-3.nc")

Why a reference: the x and y of a data set (100 000 rows) take 1.6 MB, a fit file about 30 kB,
and every data set is fitted by every cell of its regime (65 cells of the default regime in
config/config.yaml, 103 in config/full.yaml): a copy in every fit file would multiply the
fits' disk use by ~50 and store each data set once per cell. None of ``az.summary`` / ``az.plot_trace`` / ``az.plot_pair`` reads
``observed_data`` (the fits have no ``posterior_predictive`` or ``log_likelihood`` for
``plot_ppc`` / ``loo`` to pair it with), so the group is wanted only by a user who looks at the
data next to the posterior; for that, one call loads the real arrays, and the sha256 guarantees
they are the bytes the fit saw (a regenerated or edited data set is refused, not silently
used). The path is relative to the fit file so that the reference survives moving or copying
the project (or its ``data/`` folder) as a whole; an attribute of the posterior is where ArviZ
itself keeps file-level metadata, and an empty ``observed_data`` group with attributes only
would make ArviZ functions that look for that group fail in confusing ways.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from vimodes.records import (
    NETCDF_ENGINE,
    EncodedRecord,
    atomic_path,
    file_sha256,
    is_volatile,
)

# the custom group of the VI loss history, and the posterior attributes of the data reference
LOSS_GROUP = "loss"
OBSERVED_DATA_FILE_ATTR = "observed_data_file"
OBSERVED_DATA_SHA256_ATTR = "observed_data_sha256"
# iterations per stored loss value by method; the VI default is vimodes.config.TRACE_EVERY
_ITERATIONS_PER_LOSS = {"cavi": 1}


class CorruptFitError(OSError):
    """A fit file that cannot be read back completely; the next run regenerates it."""


class ObservedDataMismatchError(ValueError):
    """The data set file a fit file refers to is not the one it was fitted to (other sha256)."""


# per-component variables: their last axis is the model's component k (named dimension and
# coordinate, so that az.summary / az.plot_trace label them slopes[0], slopes[1], ...)
COMPONENT_VARIABLES = ("slopes", "weights")


def _dims(name: str, ndim: int) -> list[str]:
    extra = [f"{name}_dim_{i}" for i in range(ndim - 2)]
    if name in COMPONENT_VARIABLES and extra:
        extra[-1] = "component"
    return ["chain", "draw", *extra]


# a group as written: {variable: (dims, values)}, then the coordinates, then the attributes
Group = tuple[dict[str, tuple[list[str], np.ndarray]], dict[str, np.ndarray], dict]


def _draws_group(arrays: dict[str, np.ndarray]) -> Group:
    variables = {name: (_dims(name, np.ndim(arrays[name])), np.asarray(arrays[name]))
                 for name in sorted(arrays)}
    sizes = {}
    for dims, values in variables.values():
        sizes.update(zip(dims, values.shape))
    # integer coordinates for every dimension the variables have (chain, draw, component, ...)
    coords = {dim: np.arange(size) for dim, size in sizes.items()
              if dim in ("chain", "draw", "component")}
    return variables, coords, {}


def loss_iterations(record: dict, n_values: int) -> tuple[np.ndarray, int]:
    """The iteration at the end of each of the ``n_values`` stored loss values of a fit record,
    and the iterations per value (the last VI block ends at ``iterations_done``)."""
    from vimodes.config import TRACE_EVERY

    every = _ITERATIONS_PER_LOSS.get(record.get("method"), TRACE_EVERY)
    done = record.get("iterations_done") or n_values * every
    return np.minimum(np.arange(1, n_values + 1) * every, max(int(done), 1)), every


def _loss_group(record: dict) -> Group | None:
    """The ``loss`` group of a fit record's ``loss_trace``; None without a loss."""
    trace = record.get("loss_trace")
    trace = np.asarray([] if trace is None else trace, dtype=float).reshape(-1)
    if trace.size == 0:
        return None
    iteration, every = loss_iterations(record, trace.size)
    attrs = {"iterations_per_value": int(every),
             "description": "VI loss history: the mean minibatch loss of each block of "
                            "iterations_per_value iterations (CAVI: the negative ELBO per "
                            "sweep); coordinate iteration = the block's last iteration"}
    return {"loss": (["iteration"], trace)}, {"iteration": iteration.astype(np.int64)}, attrs


def _write_group(root, name: str, group: Group) -> None:
    """One InferenceData group as ArviZ's ``to_netcdf`` (through xarray) writes it: data
    variables then coordinate variables, NaN as the fill value of floats, booleans as int8
    that xarray decodes back to bool. Stored contiguous and uncompressed, not zlib-compressed
    in one chunk per variable as ArviZ does: draws and loss values are random doubles that zlib
    does not shrink, so the compressed file came out 7% larger (its chunk index) and no
    faster to write (0-1.7 ms slower per fit in three comparisons, benchmarks/README.md)."""
    variables, coords, attrs = group
    nc = root.createGroup(name)
    for dims, values in variables.values():
        for dim, size in zip(dims, values.shape):
            if dim not in nc.dimensions:
                nc.createDimension(dim, size)
    for var_name, (dims, values) in [*variables.items(),
                                     *((dim, ([dim], values)) for dim, values in coords.items())]:
        extra = {}
        if values.dtype == bool:
            values, extra = values.astype(np.int8), {"dtype": "bool"}
        fill = np.nan if values.dtype.kind == "f" else None
        var = nc.createVariable(var_name, values.dtype, dims, fill_value=fill)
        if extra:
            var.setncatts(extra)
        var[...] = values
    nc.setncatts(attrs)


def _data_reference(path: Path, data_path: str | Path,
                    data_sha256: str | None = None) -> dict[str, str]:
    data_path = Path(data_path)
    try:
        relative = os.path.relpath(data_path.absolute(), path.absolute().parent)
    except ValueError:  # another drive (Windows): no relative path exists
        relative = str(data_path.absolute())
    return {OBSERVED_DATA_FILE_ATTR: Path(relative).as_posix(),
            OBSERVED_DATA_SHA256_ATTR: data_sha256 or file_sha256(data_path)}


def write_posterior(path: str | Path, result, record: dict,
                    data_path: str | Path | None = None, data_sha256: str | None = None,
                    encoded: EncodedRecord | None = None) -> None:
    """Write the draws, the fit record (as an attribute of the posterior group, without its
    timings), the loss history (group ``loss``, from ``record["loss_trace"]``, when the fit has
    one) and, given ``data_path``, the reference to the data set fitted (see the module
    docstring; pass its ``data_sha256`` when already known, so that a data set is hashed once
    per fit, and ``encoded``, the record's ``EncodedRecord``, when it is written as JSON too)."""
    encoded = encoded or EncodedRecord(record)
    posterior_attrs = {"fit_record": encoded.document(drop=is_volatile)}
    if data_path is not None:
        posterior_attrs.update(_data_reference(Path(path), data_path, data_sha256))
    variables, coords, _ = _draws_group(result.draws)
    groups = {"posterior": (variables, coords, posterior_attrs)}
    if result.sample_stats:
        groups["sample_stats"] = _draws_group(result.sample_stats)
    loss = _loss_group(record)
    if loss is not None:
        groups[LOSS_GROUP] = loss
    # netCDF4 directly, not az.InferenceData.to_netcdf: building xarray Datasets and
    # InferenceData was ~4/5 of writing a fit (benchmarks/README.md); the file is the one
    # ArviZ writes and reads (tested)
    import netCDF4

    with atomic_path(path) as tmp:
        with netCDF4.Dataset(str(tmp), "w", format="NETCDF4") as root:
            for name, group in groups.items():
                _write_group(root, name, group)
        check_posterior_file(tmp, expected_groups=tuple(groups))


def check_posterior_file(path: str | Path, expected_groups=("posterior",)) -> None:
    """Reopen a written fit file and check that every expected group is there.

    h5py rather than ``az.from_netcdf``, which builds an xarray Dataset per group (23 ms per
    file, and a chunk writes 100 files), or netCDF4, which reads every variable's metadata
    (1.2 against 0.2 ms per file, benchmarks/README.md): a netCDF-4 group is an HDF5 group,
    and HDF5 refuses a truncated file when it opens it (tested)."""
    import h5py

    try:
        with h5py.File(str(path), "r") as root:
            groups = {name for name, item in root.items() if isinstance(item, h5py.Group)}
    except Exception as err:  # noqa: BLE001 - any read failure means the file is unusable
        raise CorruptFitError(f"fit file '{path}' is unreadable or truncated: {err}") from err
    missing = [g for g in expected_groups if g not in groups]
    if missing:
        raise CorruptFitError(f"fit file '{path}' lacks group(s) {missing}")


def read_posterior(path: str | Path) -> dict[str, np.ndarray]:
    try:
        # the posterior group read directly: importing ArviZ costs ~4 s per classify job
        with xr.open_dataset(str(path), group="posterior", engine=NETCDF_ENGINE) as posterior:
            return {name: np.asarray(posterior[name].values) for name in posterior.data_vars}
    except Exception as err:  # noqa: BLE001
        raise CorruptFitError(f"fit file '{path}' is unreadable or truncated: {err}") from err


def attach_observed_data(idata_path: str | Path, data_path: str | Path | None = None):
    """The fit file ``idata_path`` as ``az.InferenceData`` with an ``observed_data`` group: the
    ``x`` and ``y`` of the data set it was fitted to, over the dimension ``obs_id``.

    The data set is the file the posterior attribute ``observed_data_file`` names (relative to
    the fit file's folder), or ``data_path`` when given (e.g. after moving ``data/sim``); either
    way its sha256 must equal ``observed_data_sha256``, else ``ObservedDataMismatchError``."""
    import arviz as az

    idata_path = Path(idata_path)
    idata = az.from_netcdf(str(idata_path), engine=NETCDF_ENGINE)
    attrs = idata.posterior.attrs
    if OBSERVED_DATA_SHA256_ATTR not in attrs:
        raise ValueError(f"fit file '{idata_path}' has no reference to its data set (posterior "
                         f"attributes {OBSERVED_DATA_FILE_ATTR}, {OBSERVED_DATA_SHA256_ATTR})")
    if data_path is None:
        data_path = idata_path.parent / attrs[OBSERVED_DATA_FILE_ATTR]
    data_path = Path(data_path)
    if not data_path.is_file():
        raise FileNotFoundError(f"data set file '{data_path}' referred to by fit file "
                                f"'{idata_path}' does not exist")
    expected, actual = attrs[OBSERVED_DATA_SHA256_ATTR], file_sha256(data_path)
    if actual != expected:
        raise ObservedDataMismatchError(
            f"data set file '{data_path}' has sha256 {actual}, but fit file '{idata_path}' was "
            f"fitted to a data set with sha256 {expected}: not the data of this fit")
    with xr.open_dataset(str(data_path), engine=NETCDF_ENGINE) as data:
        observed = data[["x", "y"]].load().rename({"obs": "obs_id"})
    observed = observed.assign_coords(obs_id=np.arange(observed.sizes["obs_id"]))
    observed.attrs = {OBSERVED_DATA_FILE_ATTR: str(data_path),
                      OBSERVED_DATA_SHA256_ATTR: expected}
    idata.add_groups(observed_data=observed)
    return idata
