"""The question's data generator, parameterised, and its self-describing NetCDF file format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vimodes.records import NETCDF_ENGINE, atomic_path

if TYPE_CHECKING:
    from vimodes.config import Study


@dataclass(frozen=True)
class DataRegime:
    """A K-component data setting; K = len(slopes) (``components``)."""

    n_obs: int = 100_000
    slopes: tuple[float, ...] = (3.0, -1.0)
    weights: tuple[float, ...] = (0.5, 0.5)
    noise_sd: float = 0.1
    x_low: float = -1.0
    x_high: float = 1.0

    def __post_init__(self) -> None:
        if len(self.slopes) != len(self.weights):
            raise ValueError(f"slopes {self.slopes} and weights {self.weights} differ in length")

    @property
    def components(self) -> int:
        """The truth's K. Derived, not a separate setting, so that it cannot disagree with the
        slopes; the model's K is a property of the fit (``FitSettings.n_components``)."""
        return len(self.slopes)

    @classmethod
    def from_config(cls, regime: dict) -> DataRegime:
        return cls(n_obs=regime["n_obs"], slopes=tuple(regime["slopes"]),
                   weights=tuple(regime["weights"]), noise_sd=regime["noise_sd"],
                   x_low=regime["x_low"], x_high=regime["x_high"])


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray
    y: np.ndarray
    component: np.ndarray
    regime: DataRegime
    seed: int


def data_rng(seed_base: int, seed: int) -> np.random.Generator:
    """Generator of data set `seed`; the trailing 0 keeps it apart from the fit streams."""
    return np.random.default_rng([seed_base, seed, 0])


def simulate(regime: DataRegime, seed: int, seed_base: int) -> Dataset:
    """x ~ U(x_low, x_high); component z ~ Categorical(weights) over K = len(weights) components;
    y = slope_z x + N(0, noise_sd). The K = 2 stream is unchanged by the K generalisation."""
    rng = data_rng(seed_base, seed)
    x = rng.uniform(regime.x_low, regime.x_high, size=regime.n_obs)
    component = rng.choice(len(regime.weights), size=regime.n_obs, p=np.asarray(regime.weights))
    y = np.asarray(regime.slopes)[component] * x + regime.noise_sd * rng.standard_normal(regime.n_obs)
    return Dataset(x=x, y=y, component=component, regime=regime, seed=seed)


def simulate_dataset(study: Study, regime_name: str, seed: int, path: str | Path) -> None:
    """Data set ``seed`` of data regime ``regime_name``, written with the study's provenance.
    This module imports no more than it needs: the study has one such job per data set."""
    regime = DataRegime.from_config(study.config["data_regimes"][regime_name])
    data = simulate(regime, seed, study.config["seed_base"])
    write_dataset(data, path, {**study.provenance(), "regime": regime_name})


def data_block(seed: int, block_size: int) -> int:
    """The simulate block that draws data set ``seed`` (``data_block_size`` seeds per block)."""
    return seed // block_size


def block_seeds(block: int, block_size: int) -> range:
    """Every seed of block ``block``: fixed by the block size alone, never by the study, so that
    a block's files do not change when a study adds seeds or cells."""
    return range(block * block_size, (block + 1) * block_size)


def block_folder(regime_name: str, block: int) -> str:
    return f"data/sim/{regime_name}/block-{block}"


def dataset_path(regime_name: str, seed: int, block_size: int) -> str:
    """Where data set ``seed`` of a regime lies (relative to the working directory)."""
    return f"{block_folder(regime_name, data_block(seed, block_size))}/seed-{seed}.nc"


def simulate_block(study: Study, regime_name: str, block: int, folder: str | Path) -> None:
    """Every data set of one block of one regime, each written like ``simulate_dataset``."""
    block_size = study.config["data_block_size"]
    for seed in block_seeds(block, block_size):
        simulate_dataset(study, regime_name, seed, Path(folder) / f"seed-{seed}.nc")


def file_attributes(data: Dataset, provenance: dict) -> dict:
    """The data file's global attributes: the seed, the regime's truth and the provenance."""
    regime = data.regime
    return {
        "seed": data.seed,
        "n_obs": regime.n_obs,
        "true_slopes": list(regime.slopes),
        "true_weights": list(regime.weights),
        "noise_sd": regime.noise_sd,
        "x_low": regime.x_low,
        "x_high": regime.x_high,
        **{f"provenance_{k}": v for k, v in provenance.items()},
    }


def write_dataset(data: Dataset, path: str | Path, provenance: dict) -> None:
    """Write atomically; the file is read back and checked before it is moved into place.

    Written with netCDF4 itself, not xarray: a study has one such job per data set, and
    importing xarray (with pandas) was most of a job's CPU time (benchmarks/README.md). The file
    is the one xarray reads (``read_dataset``; tested equal to the file xarray writes)."""
    import netCDF4

    with atomic_path(path) as tmp:
        with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
            nc.createDimension("obs", len(data.x))
            for name, values, dtype in (("x", data.x, "f8"), ("y", data.y, "f8"),
                                        ("component", data.component.astype("int8"), "i1")):
                nc.createVariable(name, dtype, ("obs",))[:] = values
            nc.setncatts(file_attributes(data, provenance))
        check_written(tmp, data, path)  # fail now, not in a fit


def check_written(tmp: str | Path, data: Dataset, path: str | Path) -> None:
    """The file ``tmp`` (to become ``path``) holds data set ``data``'s seed and values."""
    import netCDF4

    try:
        with netCDF4.Dataset(tmp) as nc:
            seed, y = int(nc.getncattr("seed")), np.asarray(nc["y"][:])
    except Exception as err:  # noqa: BLE001 - any read failure means the file is unusable
        raise CorruptDataError(f"data file '{path}' does not read back: {err}") from err
    if seed != data.seed or not np.array_equal(y, data.y):
        raise CorruptDataError(f"data file '{path}' does not read back as written")


class CorruptDataError(OSError):
    """A data file that cannot be read back completely; delete it and rerun to regenerate."""


def read_dataset(path: str | Path) -> Dataset:
    import xarray as xr

    path = Path(path)
    try:
        with xr.open_dataset(path, engine=NETCDF_ENGINE) as ds:
            ds.load()
            attrs = dict(ds.attrs)
            x, y, comp = ds["x"].values, ds["y"].values, ds["component"].values
    except Exception as err:  # noqa: BLE001 - any read failure means the file is unusable
        raise CorruptDataError(f"data file '{path}' is unreadable or truncated: {err}") from err
    if not (len(x) == len(y) == attrs.get("n_obs")):
        raise CorruptDataError(f"data file '{path}' holds {len(x)} points, expected {attrs.get('n_obs')}")
    regime = DataRegime(n_obs=int(attrs["n_obs"]), slopes=tuple(np.atleast_1d(attrs["true_slopes"])),
                        weights=tuple(np.atleast_1d(attrs["true_weights"])),
                        noise_sd=float(attrs["noise_sd"]), x_low=float(attrs["x_low"]),
                        x_high=float(attrs["x_high"]))
    return Dataset(x=x, y=y, component=comp, regime=regime, seed=int(attrs["seed"]))
