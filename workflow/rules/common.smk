import gc
import os
import re
import sys
from importlib.metadata import version as package_version
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")

# This workflow's own folder, not workflow.basedir (the consumer's folder when the workflow is
# used as a Snakemake module): the package beside it is what the Snakefile and every script
# import (PYTHONPATH reaches the scripts' processes, also in a conda env or on a cluster node).
WORKFLOW_ROOT = Path(
    workflow.current_basedir.get_path_or_uri(secret_free=True)
).parents[1]
if (WORKFLOW_ROOT / "src" / "vimodes").is_dir():
    sys.path.insert(0, str(WORKFLOW_ROOT / "src"))
    os.environ.update(
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(WORKFLOW_ROOT / "src"), os.environ.get("PYTHONPATH")])
        )
    )

from vimodes.config import ConfigError, build_study, fit_rule_params, study_config
from vimodes.runtime import GC_THRESHOLDS, coalesce_scheduler_timers

# Planning builds millions of long-lived objects (the DAG, every job's files); at CPython's
# default thresholds the collector walks them again and again: the full study's dry run takes
# a fifth less CPU time with these (benchmarks/README.md)
gc.set_threshold(*GC_THRESHOLDS)
# Snakemake's scheduler timers otherwise pile up, one per finished job, and keep its process
# busy (a sixth of the default study's CPU time, benchmarks/README.md)
coalesce_scheduler_timers()
from vimodes.figure_specs import FIGURE_SPECS
from vimodes.methods import method_spec
from vimodes.simulate import block_folder, data_block, dataset_path

# A --configfile replaces the default study and must be complete; without one, the default study
# with any --config values on top. (A `configfile:` directive would merge every --configfile
# onto config.yaml, so nested keys of the default would leak into other studies.)
try:
    _config, _source = study_config(
        config,
        workflow.overwrite_configfiles,
        workflow.config_settings.config,
        WORKFLOW_ROOT / "config" / "config.yaml",
    )
    config.clear()
    config.update(_config)
    STUDY = build_study(config, source=_source)
except ConfigError as error:
    raise WorkflowError(str(error)) from None

# Rerun trigger: a fit depends on its cell's settings and on the PyMC version (a params entry).
PYMC_VERSION = package_version("pymc")


wildcard_constraints:
    cell="[A-Za-z0-9_.-]+",
    chunk=r"\d+",
    seed=r"\d+",
    first=r"\d+",
    last=r"\d+",
    regime="[A-Za-z0-9_]+",


# Cheap rules (seconds, one core) run on the submit host under a cluster executor (e.g. the SLURM
# profile, profiles/slurm), not as jobs of their own; only the fit jobs (fit_chunk,
# fit_group_*) and the mechanism are submitted.
localrules:
    simulate,
    classify_chunk,
    reference_sd,
    aggregate,
    summary,
    loss_traces,
    representative_draws,
    nuts_chain_draws,
    posterior_grid,
    plot_figure,
    write_report,


def data_file(regime, seed):
    return dataset_path(regime, seed, STUDY.config["data_block_size"])


def data_blocks(regime, seeds):
    """The simulate blocks (output folders) that hold the data sets of ``seeds``."""
    size = STUDY.config["data_block_size"]
    return sorted(
        {block_folder(regime, data_block(seed, size), size) for seed in seeds}
    )


def fit_inputs(wildcards):
    """The chunk's data blocks and, for a method derived from another (Pathfinder + PSIS),
    the chunk of the same seeds whose stored results it finishes (Study.source_chunk).
    """
    cell = STUDY.cell_by_id[wildcards.cell]
    chunk = int(wildcards.chunk)
    inputs = {
        "data": data_blocks(cell.data_regime, STUDY.chunk_seeds(cell.cell_id, chunk))
    }
    source = STUDY.source_chunk(cell.cell_id, chunk)
    if source is not None:
        inputs["source"] = "data/fits/{}/chunk-{}".format(*source)
    return inputs


# fit_chunk fits the chunks of the cells no fit group holds (an empty alternation never matches)
SINGLE_CELL_PATTERN = (
    "|".join(
        re.escape(cell.cell_id)
        for cell in STUDY.cells
        if cell.cell_id not in STUDY.grouped_cells
    )
    or "(?!)"
)


def group_data_blocks(group):
    """The data blocks of every chunk of a fit group."""
    return sorted(
        {
            block
            for cell, chunk in group.members
            for block in data_blocks(
                STUDY.cell_by_id[cell].data_regime, STUDY.chunk_seeds(cell, chunk)
            )
        }
    )


def group_params(group):
    """Per chunk of a fit group: what the script needs and, as for fit_chunk, the rerun
    trigger (the cell's fit settings)."""
    return [
        {
            "cell": cell,
            "chunk": chunk,
            "seeds": list(STUDY.chunk_seeds(cell, chunk)),
            "settings": fit_rule_params(STUDY.cell_by_id[cell], STUDY.config),
        }
        for cell, chunk in group.members
    ]


def group_references(group):
    """The reference posterior sd files of the data regimes of a fit group's chunks."""
    return sorted(
        {
            m["reference"]
            for m in classify_group_params(group)
            if m["reference"] is not None
        }
    )


def classify_group_params(group):
    """Per chunk of a fit group: its seeds and its regime's reference file (or None)."""
    params = []
    for cell, chunk in group.members:
        regime = STUDY.cell_by_id[cell].data_regime
        reference = (
            f"data/tables/reference/{regime}.json"
            if STUDY.reference_cell(regime) is not None
            else None
        )
        params.append(
            {
                "cell": cell,
                "chunk": chunk,
                "seeds": list(STUDY.chunk_seeds(cell, chunk)),
                "reference": reference,
            }
        )
    return params


def group_runtime_minutes(group):
    return sum(chunk_runtime_minutes(cell, chunk) for cell, chunk in group.members)


def reference_chunk_dirs(wildcards):
    cell = STUDY.reference_cell(wildcards.regime)
    if cell is None:
        raise WorkflowError(f"data regime {wildcards.regime!r} has no reference cell")
    return [
        f"data/fits/{cell.cell_id}/chunk-{i}" for i in range(len(STUDY.chunks(cell)))
    ]


def classify_inputs(wildcards):
    """The chunk's fits and, when its data regime has a reference cell, the regime's
    reference posterior sd (the classifier's slope tolerances follow it)."""
    regime = STUDY.cell_by_id[wildcards.cell].data_regime
    inputs = {"fits": f"data/fits/{wildcards.cell}/chunk-{wildcards.chunk}"}
    if STUDY.reference_cell(regime) is not None:
        inputs["reference"] = f"data/tables/reference/{regime}.json"
    return inputs


def fit_threads(wildcards):
    cell = STUDY.cell_by_id[wildcards.cell]
    return (
        min(cell.chains, workflow.cores)
        if method_spec(cell.method).uses("chains")
        else 1
    )


def fit_runtime_minutes(wildcards):
    return chunk_runtime_minutes(wildcards.cell, int(wildcards.chunk))


def chunk_runtime_minutes(cell_id, chunk):
    """Measured on a 2-core machine (see benchmarks/README.md), with a 3x margin."""
    cell = STUDY.cell_by_id[cell_id]
    n_seeds = len(STUDY.chunk_seeds(cell_id, chunk))
    n_obs = STUDY.config["data_regimes"][cell.data_regime]["n_obs"]
    spec = method_spec(cell.method)
    if STUDY.source_chunk(cell.cell_id, chunk) is not None:
        # resamples the stored paths of another chunk: draws, weights and k-hat only
        per_fit = 0.2
    elif spec.uses("chains"):
        per_fit = spec.minutes_per_fit * cell.chains * n_obs / 100_000
    elif not spec.uses("optimizer"):
        per_fit = spec.minutes_per_fit * (n_obs / 100_000 if spec.full_data else 1.0)
    elif cell.engine == "vectorised":
        # the chunk's compiled loop is shared; per fit: ~0.05 min per 10000 steps on a loaded
        # 2-core machine, plus its draws and k-hat
        per_fit = cell.iterations / 10_000 * 0.05 + 0.02
    elif cell.batch_size == 0:
        per_fit = cell.iterations * 0.03 * n_obs / 100_000 / 60
    else:
        per_fit = cell.iterations / 10_000 * 0.1
    return int(5 + 3 * n_seeds * per_fit)


def fit_settings(wildcards):
    """The rerun trigger of a fit (a params: entry): the cell's FitSettings, the seed base and
    its data regime, from the one function the fitters' settings come from too."""
    return fit_rule_params(STUDY.cell_by_id[wildcards.cell], STUDY.config)


def all_chunk_outputs(pattern):
    return [pattern.format(cell=c, chunk=k) for c, k in STUDY.fit_chunks()]


# Per figure of plot_figure (report.smk), everything comes from the registry vimodes.figure_specs.
def figure_inputs(wildcards):
    """The tables figure `name` reads (named as its function's arguments)."""
    return FIGURE_SPECS[wildcards.name].input_paths


def figure_category(wildcards):
    return FIGURE_SPECS[wildcards.name].category


def figure_title(wildcards):
    return FIGURE_SPECS[wildcards.name].title


def figure_caption(wildcards):
    return FIGURE_SPECS[wildcards.name].rst_caption


def check_outputs():
    """Start-up check (main process only): a damaged output -- a truncated data set, or a fit
    chunk with a truncated, missing or foreign file -- stops the run with its name and the
    steps that regenerate it and all downstream (tests/RELIABILITY.md)."""
    from vimodes.records import damage_message, find_damage, marked_incomplete

    chunk_dirs = {
        f"data/fits/{cell}/chunk-{chunk}": STUDY.chunk_seeds(cell, chunk)
        for cell, chunk in STUDY.fit_chunks()
    }
    # a job killed with the whole session leaves its output marked incomplete: redone by
    # --rerun-incomplete, hence not damage (and --unlock must not be refused for it)
    damage = find_damage(
        # each data set's writer is its block, the folder that holds it
        {
            path: os.path.dirname(path)
            for path in map(data_file, *zip(*STUDY.datasets()))
        },
        chunk_dirs,
        all_chunk_outputs("data/classified/{cell}/chunk-{chunk}.parquet"),
        skip=marked_incomplete(),
    )
    if damage:
        raise WorkflowError(damage_message(damage))


if workflow.is_main_process:
    check_outputs()


onstart:
    # under Snakemake's lock (not in dry runs): no running job's file in progress is touched
    from snakemake.logging import logger
    from vimodes.records import remove_stale_temporary_files

    remove_stale_temporary_files(
        ["data/sim", "data/classified", "data/tables"], log=logger.warning
    )
