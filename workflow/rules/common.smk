import sys
from importlib.metadata import version as package_version
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from vimodes.config import ConfigError, build_study

try:
    STUDY = build_study(config, source="the configuration")
except ConfigError as error:
    raise WorkflowError(str(error)) from None

# Rerun trigger: a fit depends on its cell's settings and on the PyMC version (a params entry).
PYMC_VERSION = package_version("pymc")


wildcard_constraints:
    cell="[A-Za-z0-9_.-]+",
    chunk=r"\d+",
    seed=r"\d+",
    regime="[A-Za-z0-9_]+",


def data_file(regime, seed):
    return f"data/sim/{regime}/seed-{seed}.nc"


def chunk_data_files(wildcards):
    cell = STUDY.cell_by_id[wildcards.cell]
    seeds = STUDY.chunk_seeds(wildcards.cell, int(wildcards.chunk))
    return [data_file(cell.data_regime, seed) for seed in seeds]


def fit_threads(wildcards):
    cell = STUDY.cell_by_id[wildcards.cell]
    return min(cell.chains, workflow.cores) if cell.method == "nuts" else 1


def fit_runtime_minutes(wildcards):
    """Measured on a 2-core machine (see benchmarks/README.md), with a 3x margin."""
    cell = STUDY.cell_by_id[wildcards.cell]
    n_seeds = len(STUDY.chunk_seeds(wildcards.cell, int(wildcards.chunk)))
    n_obs = STUDY.config["data_regimes"][cell.data_regime]["n_obs"]
    if cell.method == "nuts":
        per_fit = 2.0 * cell.chains * n_obs / 100_000
    elif cell.method == "pathfinder":
        per_fit = 1.0 * n_obs / 100_000
    elif cell.method == "cavi":
        per_fit = 0.05
    elif cell.batch_size == 0:
        per_fit = cell.iterations * 0.03 * n_obs / 100_000 / 60
    else:
        per_fit = cell.iterations / 10_000 * 0.1
    return int(5 + 3 * n_seeds * per_fit)


def all_chunk_outputs(pattern):
    return [pattern.format(cell=c, chunk=k) for c, k in STUDY.fit_chunks()]
