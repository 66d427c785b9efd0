"""The question's data generator, parameterised, and its self-describing NetCDF file format."""

from __future__ import annotations

import re
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
    """Data set ``seed`` of data regime ``regime_name``, written with the study's provenance."""
    _write_seeds(study, regime_name, [seed], [path])


def _write_seeds(study: Study, regime_name: str, seeds, paths) -> None:
    # the provenance once per job: it looks up every tracked package's version
    regime = DataRegime.from_config(study.config["data_regimes"][regime_name])
    provenance = {**study.provenance(), "regime": regime_name}
    for seed, path in zip(seeds, paths):
        write_dataset(simulate(regime, seed, study.config["seed_base"]), path, provenance)


def data_block(seed: int, block_size: int) -> int:
    """The simulate block that draws data set ``seed`` (``data_block_size`` seeds per block)."""
    return seed // block_size


def study_blocks(study: Study) -> list[tuple[str, int]]:
    """(regime, block) of every simulate job: the blocks that hold the study's data sets."""
    size = study.config["data_block_size"]
    return sorted({(regime, data_block(seed, size)) for regime, seed in study.datasets()})


def block_seeds(block: int, block_size: int) -> range:
    """Every seed of block ``block``: fixed by the block size alone, never by the study, so that
    a block's files do not change when a study adds seeds or cells."""
    return range(block * block_size, (block + 1) * block_size)


def block_folder(regime_name: str, block: int, block_size: int) -> str:
    """A block's folder, named by its seed range (``data/sim/<regime>/seeds-100-199``): another
    block size names other folders, so a block never holds the seeds of another layout."""
    seeds = block_seeds(block, block_size)
    return f"data/sim/{regime_name}/seeds-{seeds[0]}-{seeds[-1]}"


def block_regime(folder: str | Path) -> str:
    """The data regime whose block ``folder`` is (the inverse of ``block_folder``)."""
    return Path(folder).parent.name


def dataset_path(regime_name: str, seed: int, block_size: int) -> str:
    """Where data set ``seed`` of a regime lies (relative to the working directory)."""
    folder = block_folder(regime_name, data_block(seed, block_size), block_size)
    return f"{folder}/seed-{seed}.nc"


def folder_seeds(folder: str | Path) -> range:
    """The seeds a block folder holds, read from its name (``seeds-<first>-<last>``)."""
    match = re.fullmatch(r"seeds-(\d+)-(\d+)", Path(folder).name)
    if match is None or int(match[2]) < int(match[1]):
        raise ValueError(f"'{folder}' is not a block of data sets (seeds-<first>-<last>)")
    return range(int(match[1]), int(match[2]) + 1)


def files_in_blocks(folders, seeds) -> list[str]:
    """The data set file of each seed, in the block folder (of ``folders``, a job's inputs)
    whose range holds it: what a job reads is always one of its inputs."""
    ranges = [(folder, folder_seeds(folder)) for folder in folders]
    files = []
    for seed in seeds:
        holders = [folder for folder, held in ranges if seed in held]
        if not holders:
            raise ValueError(f"no input block holds data set {seed} (blocks: {list(folders)})")
        files.append(f"{holders[0]}/seed-{seed}.nc")
    return files


def simulate_block(study: Study, regime_name: str, folder: str | Path) -> None:
    """Every data set of one block (its seeds from the folder's name) of one regime."""
    seeds = folder_seeds(folder)
    _write_seeds(study, regime_name, seeds, [Path(folder) / f"seed-{seed}.nc" for seed in seeds])


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

    Written with netCDF4 itself, not xarray: importing xarray (with pandas) was most of a
    simulate job's CPU time when a job drew one data set (benchmarks/README.md). The file
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
