"""Extrapolate a study's CPU time from a measured run of another study (e.g. `config/full.yaml`
from a run of the default study), for when the study itself is too long to time here.

    python benchmarks/extrapolate_study.py RUN_DIR TARGET_CONFIG [--cores 2]
        [--snakemake-cpu SECONDS]

RUN_DIR is the working directory of a finished `snakemake` run (its `config/config.yaml` and
the `logs/benchmarks/` files its rules wrote). The method (printed with the numbers):

* Every fit job's CPU time (`cpu_time` of its `benchmark:` file; a fit group's shared among its
  chunks by their units of work) is divided by its units of
  work, seeds x chains x (iterations / 10000 where the method has iterations); a rate is kept
  per kind of job: method, engine, minibatch or full batch, and the data size N. A target cell
  takes the rate of its kind at the measured N nearest to its own (on a log scale). Rates are
  per unit, so a job's fixed cost (imports, compiling) is spread over its units: a target with
  larger chunks is overestimated, one with smaller chunks underestimated.
* Classify jobs: CPU per classified fit (times 1 + its number of checkpoints), per method (a
  fit group's classify job shared among its chunks likewise).
* Data sets: CPU per data set drawn, per N (a `simulate` job draws a block of
  `data_block_size`; the target pays for whole blocks).
* Everything else (references, tables, figures, report) is taken as measured.
* Snakemake's own process (not in any benchmark file; pass what was measured with
  `--snakemake-cpu`) is scaled by the number of jobs.
* Wall time = CPU time / cores, i.e. the cores kept busy all the time (the default study's
  measured run kept 2 cores ~97% busy).
* Not modelled: draws, tuning length, model and K within a kind of job (a rate is the mean
  over the measured jobs of that kind).
"""


from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from vimodes.config import load_study  # noqa: E402
from vimodes.methods import method_spec  # noqa: E402
from vimodes.simulate import folder_seeds, study_blocks  # noqa: E402

METHOD = ("rates per unit of work (seeds x chains x iterations/10000) per kind of fit job "
          "(method, engine, full batch, nearest measured N); classify per fit; simulate per data "
          "set, whole blocks; the rest as measured; wall = CPU / cores")


def fit_kind(cell, n_obs: int) -> tuple:
    return (cell.method, cell.engine, cell.batch_size == 0, n_obs)


def fit_units(cell, n_seeds: int) -> float:
    units = n_seeds * (cell.chains or 1)
    if method_spec(cell.method).uses("iterations") and cell.iterations:
        units *= cell.iterations / 10_000
    return units


def classify_units(cell, n_seeds: int) -> float:
    return n_seeds * (cell.chains or 1) * (1 + len(cell.checkpoints))


def _cpu(path: Path) -> float:
    return float(pd.read_csv(path, sep="\t")["cpu_time"].iloc[-1])


def _nearest(rates: dict, kind: tuple) -> tuple[float, int] | None:
    """The rate of ``kind`` at the measured N nearest to kind's N (log scale), and that N."""
    *head, n_obs = kind
    candidates = [(abs(math.log(n / n_obs)), n) for (*h, n) in rates if h == head]
    if not candidates:
        return None
    _, n_best = min(candidates)
    return rates[(*head, n_best)], n_best


def measure(run_dir: Path):
    study = load_study(run_dir / "config" / "config.yaml")
    regimes = study.config["data_regimes"]
    bench = run_dir / "logs" / "benchmarks"
    fit_cpu, fit_work = defaultdict(float), defaultdict(float)
    cls_cpu, cls_work = defaultdict(float), defaultdict(float)
    counted, stale = set(), set()
    groups = {group.name: group for group in study.fit_groups()}
    for path in sorted(bench.glob("fit/*/chunk-*.tsv")):
        if path.parent.name in study.grouped_cells:
            stale.add(path)  # left from a run without groups: its group's file counts it
            continue
        cell = study.cell_by_id[path.parent.name]
        seeds = study.chunk_seeds(cell.cell_id, int(path.stem.split("-")[1]))
        kind = fit_kind(cell, regimes[cell.data_regime]["n_obs"])
        fit_cpu[kind] += _cpu(path)
        fit_work[kind] += fit_units(cell, len(seeds))
        counted.add(path)
    for path in sorted(bench.glob("fit_group/*.tsv")):
        if path.stem not in groups:
            stale.add(path)  # another grouping's (cells_per_fit_group changed since)
            continue
        # a fit group's CPU time, shared among its chunks by their units of work
        members = [(study.cell_by_id[cell], study.chunk_seeds(cell, chunk))
                   for cell, chunk in groups[path.stem].members]
        units = [fit_units(cell, len(seeds)) for cell, seeds in members]
        for (cell, _), unit in zip(members, units):
            kind = fit_kind(cell, regimes[cell.data_regime]["n_obs"])
            fit_cpu[kind] += _cpu(path) * unit / sum(units)
            fit_work[kind] += unit
        counted.add(path)
    for path in sorted(bench.glob("classify/*/chunk-*.tsv")):
        if path.parent.name in study.grouped_cells:
            stale.add(path)  # left from a run without groups
            continue
        cell = study.cell_by_id[path.parent.name]
        seeds = study.chunk_seeds(cell.cell_id, int(path.stem.split("-")[1]))
        cls_cpu[cell.method] += _cpu(path)
        cls_work[cell.method] += classify_units(cell, len(seeds))
        counted.add(path)
    for path in sorted(bench.glob("classify_group/*.tsv")):
        if path.stem not in groups:
            stale.add(path)
            continue
        members = [(study.cell_by_id[cell], study.chunk_seeds(cell, chunk))
                   for cell, chunk in groups[path.stem].members]
        units = [classify_units(cell, len(seeds)) for cell, seeds in members]
        for (cell, _), unit in zip(members, units):
            cls_cpu[cell.method] += _cpu(path) * unit / sum(units)
            cls_work[cell.method] += unit
        counted.add(path)
    sim_cpu, sim_sets = defaultdict(float), defaultdict(int)
    # a job draws a block of data sets (named by its seed range; the first block layout had
    # block-<b> of data_block_size, and runs before blocks one job per data set, seed-<s>)
    for pattern in ("seeds-*.tsv", "block-*.tsv", "seed-*.tsv"):
        for path in sorted(bench.glob(f"simulate/*/{pattern}")):
            n_obs = regimes[path.parent.name]["n_obs"]
            sim_cpu[n_obs] += _cpu(path)
            sim_sets[n_obs] += (len(folder_seeds(path.stem)) if pattern == "seeds-*.tsv" else
                                study.config.get("data_block_size", 1)
                                if pattern == "block-*.tsv" else 1)
            counted.add(path)
    rest = [p for p in bench.rglob("*.tsv") if p not in counted and p not in stale]
    return {
        "study": study,
        "fit": {k: fit_cpu[k] / fit_work[k] for k in fit_cpu},
        "classify": {k: cls_cpu[k] / cls_work[k] for k in cls_cpu},
        "simulate": {n: sim_cpu[n] / sim_sets[n] for n in sim_cpu},
        "rest_cpu": sum(_cpu(p) for p in rest),
        "jobs": len(counted) + len(rest),
        "grid_jobs": len(counted),
    }


def extrapolate(measured: dict, target_config: Path) -> tuple[pd.DataFrame, list[str], int]:
    """The target study's CPU seconds per kind of job, the kinds without a measured rate and
    the number of jobs."""
    study = load_study(target_config)
    regimes = study.config["data_regimes"]
    rows, missing = defaultdict(lambda: [0.0, 0.0, 0, set()]), []
    jobs = 2 * len(study.fit_jobs())  # a classify job per fit job (a group's: one)
    for cell in study.cells:
        n_obs = regimes[cell.data_regime]["n_obs"]
        kind = fit_kind(cell, n_obs)
        found = _nearest(measured["fit"], kind)
        cls_rate = measured["classify"].get(cell.method)
        for chunk in study.chunks(cell):
            if found is None or cls_rate is None:
                missing.append(f"{cell.method} ({cell.engine}"
                               f"{', full batch' if kind[2] else ''})")
                continue
            rate, n_used = found
            label = f"fit {cell.method} ({cell.engine}{', full batch' if kind[2] else ''})"
            row = rows[label]
            row[0] += rate * fit_units(cell, len(chunk))
            row[1] += fit_units(cell, len(chunk))
            row[2] += 1
            row[3].add(n_used)
            cls = rows[f"classify {cell.method}"]
            cls[0] += cls_rate * classify_units(cell, len(chunk))
            cls[1] += classify_units(cell, len(chunk))
            cls[2] += 1
    sim_rates = measured["simulate"]
    block_size = study.config["data_block_size"]
    for regime, _block in study_blocks(study):
        n_obs = regimes[regime]["n_obs"]
        n_used = min(sim_rates, key=lambda n: abs(math.log(n / n_obs)))
        row = rows["simulate"]
        row[0] += sim_rates[n_used] * block_size  # a block draws all its data sets
        row[1] += block_size
        row[2] += 1
        jobs += 1
    table = pd.DataFrame([{"jobs of": k, "jobs": v[2], "units": round(v[1], 1),
                           "rate at N": ",".join(f"{n:g}" for n in sorted(v[3])),
                           "cpu_s": round(v[0], 1)} for k, v in rows.items()])
    table.loc[len(table)] = {"jobs of": "references, tables, figures, report (as measured)",
                             "jobs": 0, "units": 0, "rate at N": "",
                             "cpu_s": round(measured["rest_cpu"], 1)}
    return table.sort_values("cpu_s", ascending=False), sorted(set(missing)), jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("target_config", type=Path)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--snakemake-cpu", type=float, default=0.0,
                        help="CPU seconds of Snakemake's own process in the measured run")
    args = parser.parse_args()
    measured = measure(args.run_dir)
    table, missing, jobs = extrapolate(measured, args.target_config)
    # both job counts leave out the jobs that do not grow with the grid (references, report)
    snakemake_cpu = args.snakemake_cpu * jobs / measured["grid_jobs"]
    total = table["cpu_s"].sum() + snakemake_cpu
    print(f"measured run: {args.run_dir} ({measured['jobs']} jobs); target: "
          f"{args.target_config} ({jobs} jobs without the references and the report)")
    print(f"method: {METHOD}")
    print(table.to_string(index=False))
    print(f"Snakemake's own process, scaled by the job count: {snakemake_cpu:.0f} CPU-s")
    print(f"total {total:.0f} CPU-s = {total / 3600:.2f} CPU-h; on {args.cores} cores kept "
          f"busy: {total / args.cores / 3600:.2f} h")
    if missing:
        print("not extrapolated, no job of their kind was measured:", ", ".join(missing))


if __name__ == "__main__":
    main()
