"""Extrapolate a study's wall time from a measured run of another study (e.g. `config/full.yaml`
from a run of the default study), for when the study itself is too long to time here.

    python benchmarks/extrapolate_study.py RUN_DIR TARGET_CONFIG [--cores 2]

RUN_DIR is the working directory of a finished `snakemake` run (its `config/config.yaml` and
the `logs/benchmarks/` files its rules wrote). The unit is the core-second a job holds: its
wall time (`s` of its `benchmark:` file) on the core it was given, or its CPU time where it
kept more cores busy (NUTS chains in parallel), i.e. max(s, cpu_time). Summed over the jobs of
a run and divided by its cores, that gave the run's measured wall time to within 2.4% on three
runs of the default study (2026-12-04: 1614 / 1314 / 1106 s against 1652 / 1335 / 1126 s),
while the benchmark files' `cpu_time` (sampled by Snakemake) summed to 20-26% less than the
CPU time `/usr/bin/time` measured for the same runs. The method (printed with the numbers):

* Every fit job's core-seconds (a fit group's shared among its chunks by their units of work)
  are divided by its units of work, seeds x chains x (iterations / 10000 where the method has
  iterations); a rate is kept per kind of job: method, engine, minibatch or full batch, the
  likelihood the model evaluates (the question's hand-written graph or the mixture's fused
  form: the vectorised engine's step costs about twice as much with the first), the model's
  K and the data size N. A target cell takes the rate of its kind at the measured N nearest
  to its own (on a log scale). Rates are per unit, so a job's fixed cost (imports, compiling)
  is spread over its units: a target with larger chunks is overestimated, one with smaller
  chunks underestimated.
* Classify jobs: core-seconds per classified fit (times 1 + its number of checkpoints), per
  method (a fit group's classify job shared among its chunks likewise).
* Data sets: core-seconds per data set drawn, per N (a `simulate` job draws a block of
  `data_block_size`; the target pays for whole blocks).
* Everything else (references, tables, figures, report) is taken as measured.
* Wall time = core-seconds / cores, i.e. the cores kept busy all the time (the default
  study's runs kept 2 cores busy but for the 2% above).
* Not modelled: draws, tuning length and the model variant within a kind of job (a rate is
  the mean over the measured jobs of that kind).
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

from vimodes.config import load_study, model_components  # noqa: E402
from vimodes.methods import method_spec  # noqa: E402
from vimodes.model_specs import MODEL_SPECS  # noqa: E402
from vimodes.simulate import folder_seeds, study_blocks  # noqa: E402

METHOD = ("core-seconds a job holds, max(wall, CPU); rates per unit of work (seeds x chains x "
          "iterations/10000) per kind of fit job (method, engine, full batch, likelihood, K, "
          "nearest measured N); classify per fit; simulate per data set, whole blocks; the "
          "rest as measured; wall = core-seconds / cores")


def fit_kind(cell, config: dict) -> tuple:
    """(method, engine, full batch, likelihood, K, N): what a fit job's cost per unit depends
    on; N last (``_nearest`` matches it on a log scale)."""
    likelihood = "question" if MODEL_SPECS[cell.model].question_likelihood else "mixture"
    k_model = model_components(config, cell.components, cell.data_regime)
    n_obs = config["data_regimes"][cell.data_regime]["n_obs"]
    return (cell.method, cell.engine, cell.batch_size == 0, likelihood, k_model, n_obs)


def kind_label(kind: tuple) -> str:
    method, engine, full_batch, likelihood, k_model, _ = kind
    details = [engine]
    if full_batch:
        details.append("full batch")
    if likelihood == "question":
        details.append("question likelihood")
    if k_model != 2:
        details.append(f"K = {k_model}")
    return f"{method} ({', '.join(details)})"


def fit_units(cell, n_seeds: int) -> float:
    units = n_seeds * (cell.chains or 1)
    if method_spec(cell.method).uses("iterations") and cell.iterations:
        units *= cell.iterations / 10_000
    return units


def classify_units(cell, n_seeds: int) -> float:
    return n_seeds * (cell.chains or 1) * (1 + len(cell.checkpoints))


def _core_seconds(path: Path) -> float:
    """The core-seconds the job of a `benchmark:` file held: max(wall, CPU time)."""
    row = pd.read_csv(path, sep="\t").iloc[-1]
    return float(max(row["s"], row["cpu_time"]))


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
    fit_core, fit_work = defaultdict(float), defaultdict(float)
    cls_core, cls_work = defaultdict(float), defaultdict(float)
    counted, stale = set(), set()
    groups = {group.name: group for group in study.fit_groups()}
    for path in sorted(bench.glob("fit/*/chunk-*.tsv")):
        if path.parent.name in study.grouped_cells:
            stale.add(path)  # left from a run without groups: its group's file counts it
            continue
        cell = study.cell_by_id[path.parent.name]
        seeds = study.chunk_seeds(cell.cell_id, int(path.stem.split("-")[1]))
        kind = fit_kind(cell, study.config)
        fit_core[kind] += _core_seconds(path)
        fit_work[kind] += fit_units(cell, len(seeds))
        counted.add(path)
    for path in sorted(bench.glob("fit_group/*.tsv")):
        if path.stem not in groups:
            stale.add(path)  # another grouping's (cells_per_fit_group changed since)
            continue
        # a fit group's core-seconds, shared among its chunks by their units of work
        members = [(study.cell_by_id[cell], study.chunk_seeds(cell, chunk))
                   for cell, chunk in groups[path.stem].members]
        units = [fit_units(cell, len(seeds)) for cell, seeds in members]
        for (cell, _), unit in zip(members, units):
            kind = fit_kind(cell, study.config)
            fit_core[kind] += _core_seconds(path) * unit / sum(units)
            fit_work[kind] += unit
        counted.add(path)
    for path in sorted(bench.glob("classify/*/chunk-*.tsv")):
        if path.parent.name in study.grouped_cells:
            stale.add(path)  # left from a run without groups
            continue
        cell = study.cell_by_id[path.parent.name]
        seeds = study.chunk_seeds(cell.cell_id, int(path.stem.split("-")[1]))
        cls_core[cell.method] += _core_seconds(path)
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
            cls_core[cell.method] += _core_seconds(path) * unit / sum(units)
            cls_work[cell.method] += unit
        counted.add(path)
    sim_core, sim_sets = defaultdict(float), defaultdict(int)
    # a job draws a block of data sets (named by its seed range; the first block layout had
    # block-<b> of data_block_size, and runs before blocks one job per data set, seed-<s>)
    for pattern in ("seeds-*.tsv", "block-*.tsv", "seed-*.tsv"):
        for path in sorted(bench.glob(f"simulate/*/{pattern}")):
            n_obs = regimes[path.parent.name]["n_obs"]
            sim_core[n_obs] += _core_seconds(path)
            sim_sets[n_obs] += (len(folder_seeds(path.stem)) if pattern == "seeds-*.tsv" else
                                study.config.get("data_block_size", 1)
                                if pattern == "block-*.tsv" else 1)
            counted.add(path)
    rest = [p for p in bench.rglob("*.tsv") if p not in counted and p not in stale]
    return {
        "study": study,
        "fit": {k: fit_core[k] / fit_work[k] for k in fit_core},
        "classify": {k: cls_core[k] / cls_work[k] for k in cls_core},
        "simulate": {n: sim_core[n] / sim_sets[n] for n in sim_core},
        "rest_core_s": sum(_core_seconds(p) for p in rest),
        "jobs": len(counted) + len(rest),
    }


def extrapolate(measured: dict, target_config: Path) -> tuple[pd.DataFrame, list[str], int]:
    """The target study's core-seconds per kind of job, the kinds without a measured rate and
    the number of jobs."""
    study = load_study(target_config)
    regimes = study.config["data_regimes"]
    rows, missing = defaultdict(lambda: [0.0, 0.0, 0, set()]), []
    jobs = 2 * len(study.fit_jobs())  # a classify job per fit job (a group's: one)
    for cell in study.cells:
        kind = fit_kind(cell, study.config)
        found = _nearest(measured["fit"], kind)
        cls_rate = measured["classify"].get(cell.method)
        for chunk in study.chunks(cell):
            if found is None or cls_rate is None:
                missing.append(kind_label(kind))
                continue
            rate, n_used = found
            label = f"fit {kind_label(kind)}"
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
                           "core_s": round(v[0], 1)} for k, v in rows.items()])
    table.loc[len(table)] = {"jobs of": "references, tables, figures, report (as measured)",
                             "jobs": 0, "units": 0, "rate at N": "",
                             "core_s": round(measured["rest_core_s"], 1)}
    return table.sort_values("core_s", ascending=False), sorted(set(missing)), jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("target_config", type=Path)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    measured = measure(args.run_dir)
    table, missing, jobs = extrapolate(measured, args.target_config)
    total = table["core_s"].sum()
    print(f"measured run: {args.run_dir} ({measured['jobs']} jobs); target: "
          f"{args.target_config} ({jobs} jobs without the references and the report)")
    print(f"method: {METHOD}")
    print(table.to_string(index=False))
    print(f"total {total:.0f} core-s; on {args.cores} cores kept busy: "
          f"{total / args.cores / 3600:.2f} h")
    if missing:
        print("not extrapolated, no job of their kind was measured:", ", ".join(missing))


if __name__ == "__main__":
    main()
