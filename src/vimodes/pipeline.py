"""The pipeline's steps as plain functions; Snakemake scripts only parse arguments and call these.

* ``fit_chunk``: one process fits a chunk of seeds of one cell, compiling once;
* ``fit_group``: one process fits several chunks (a fit group, ``Study.fit_groups``) one after
  another, each with its own log;
* ``classify_chunk``: outcome class and metrics of every fit (and chain) of a chunk;
* ``aggregate``: the tidy per-fit table, the per-cell summary with Wilson intervals and the
  paired contrasts between cells (``vimodes.contrasts``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from vimodes.classify import OUTCOME_CLASSES, SINGLE_MODE_CLASSES
from vimodes.config import Study
from vimodes.records import EncodedRecord, file_sha256, read_json, write_json
from vimodes.regimes import regime_descriptors, regime_map
from vimodes.simulate import DataRegime, read_dataset

log = logging.getLogger("vimodes")

RECORD_VERSION = 1


def fit_record_path(fit_dir: str | Path, seed: int, suffix: str) -> Path:
    return Path(fit_dir) / f"seed-{seed}.{suffix}"


def _stored_files(fitter, source_dir, seeds) -> dict[int, Path | None]:
    """Per seed, the stored results in ``source_dir`` that the fitter finishes, or None where
    the seed is fitted (no source chunk, or a seed whose source fit stored nothing: it failed
    before its paths existed)."""
    if source_dir is None:
        return dict.fromkeys(seeds)
    files = {}
    for seed in seeds:
        path = fit_record_path(source_dir, seed, f"{fitter.stored_artifact}.npz")
        if not path.is_file():
            log.warning("seed %s: no stored %s in %s: fitting it", seed,
                        fitter.stored_artifact, source_dir)
            path = None
        files[seed] = path
    return files


def _fitter(settings, n_obs: int, fitters: dict | None):
    """The fitter of ``settings`` for data sets of ``n_obs`` points: built here, or taken from
    ``fitters`` (a fit group's, keyed by both) when an earlier chunk of the process built it."""
    from vimodes.fitters import make_fitter

    if fitters is None:
        return make_fitter(settings, n_obs)
    key = (settings, n_obs)
    if key not in fitters:
        fitters[key] = make_fitter(settings, n_obs)
    return fitters[key]


def fit_chunk(study: Study, cell_id: str, chunk: int, data_paths: list[str], out_dir: str | Path,
              threads: int = 1, source_dir: str | Path | None = None,
              fitters: dict | None = None) -> list[dict]:
    """Fit every seed of one chunk in this process and write ``seed-<s>.nc`` + ``seed-<s>.json``.

    ``source_dir``: the chunk of the cell this one derives from (``Study.source_chunk``), whose
    stored results of the same seeds (``seed-<s>.<name>.npz``) the fitter finishes instead of
    fitting again (``fit_from_stored``); a seed without them is fitted.

    ``fitters``: a cache of fitters shared by the chunks of one process (``fit_group``); a fit
    depends only on its settings, data set and seed, never on what the fitter fitted before
    (tested), so a chunk of the same settings and data size reuses the compiled fitter.

    A numerical failure of a fit becomes a record with status "failed"; anything else (I/O,
    memory, interrupts) propagates so that Snakemake retries the job.
    """
    from vimodes.config import FitSettings
    from vimodes.fit_result import NUMERICAL_ERRORS, FitResult
    from vimodes.idata import write_posterior
    from vimodes.records import read_arrays, write_arrays

    cell = study.cell_by_id[cell_id]
    seeds = study.chunk_seeds(cell_id, chunk)
    if len(data_paths) != len(seeds):
        raise ValueError(f"chunk {chunk} of {cell_id} has {len(seeds)} seeds but "
                         f"{len(data_paths)} data files")
    settings = FitSettings.from_cell(cell, study.config, threads=threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    datasets = [read_dataset(p) for p in data_paths]
    started = time.perf_counter()
    fitter = _fitter(settings, datasets[0].regime.n_obs, fitters)
    stored_files = _stored_files(fitter, source_dir, seeds)
    if hasattr(fitter, "prepare") and None in stored_files.values():
        # compile what fit() needs here, outside the per-seed handling of numerical failures:
        # a compile error fails the job instead of being recorded as every seed's outcome
        fitter.prepare()
    setup_seconds = time.perf_counter() - started
    log.info("compiled %s in %.1f s", cell_id, setup_seconds)
    base = {**cell.axes(), **study.provenance(), "chunk": chunk, "chunk_seeds": list(seeds),
            "setup_seconds": setup_seconds, "record_version": RECORD_VERSION,
            "draws_asked": settings.draws}
    records = []
    expected_regime = DataRegime.from_config(study.config["data_regimes"][cell.data_regime])
    for seed, data, path in zip(seeds, datasets, data_paths):
        if data.seed != seed:
            raise ValueError(f"data file for seed {seed} holds seed {data.seed}")
        if data.regime != expected_regime:
            raise ValueError(f"data file '{path}' holds a data set of regime {data.regime}, not "
                             f"of {cell.data_regime!r} ({expected_regime}) that {cell_id} fits")
    # a fitter with fit_many (the vectorised VI engine, numpyro's NUTS) fits the whole chunk
    # in one call; each seed's result is its own
    batch = (dict(zip(seeds, fitter.fit_many(datasets, study.config["seed_base"], list(seeds))))
             if hasattr(fitter, "fit_many") else {})
    timings = getattr(fitter, "last_timings", None)
    if batch and timings:  # where a batched chunk's time goes, for the benchmarks
        log.info("%d seeds fitted together: loop %.1f s, draws and diagnostics %.1f s",
                 timings["seeds"], timings["loop_s"], timings["post_s"])
    records_started = time.perf_counter()
    for seed, data, data_path in zip(seeds, datasets, data_paths):
        t0 = time.perf_counter()
        # read outside the try: a damaged file is a workflow error, not the fit's outcome
        stored = read_arrays(stored_files[seed]) if stored_files[seed] else None
        try:
            if batch:
                result = batch[seed]
            elif stored is not None:
                result = fitter.fit_from_stored(data, study.config["seed_base"], seed, stored)
                result.info["stored_from"] = str(source_dir)
            else:
                result = fitter.fit(data, study.config["seed_base"], seed)
        except NUMERICAL_ERRORS as err:
            # a numerical failure anywhere in one fit (also after its iterations, e.g. in the
            # diagnostics) is that fit's outcome; the chunk goes on with the next seed
            log.exception("seed %s failed", seed)
            result = FitResult("failed", f"{type(err).__name__}: {err}",
                               info={"fit_seconds": time.perf_counter() - t0})
        khat = result.info.pop("psis_khat", None)
        if khat is None and result.status == "ok" and hasattr(fitter, "khat"):
            khat = fitter.khat(data, settings.khat_draws, study.config["seed_base"], seed)
        # a batched fit's own time is its share of the chunk's fitting time
        wall = time.perf_counter() - t0 + (result.info.get("fit_seconds", 0.0) if batch else 0.0)
        record = {**base, "seed": seed, "status": result.status, "error": result.error,
                  "wall_seconds": wall, "psis_khat": khat,
                  "true_slopes": list(data.regime.slopes), "true_weights": list(data.regime.weights),
                  "true_noise_sd": data.regime.noise_sd, "n_obs": data.regime.n_obs,
                  **{k: v for k, v in result.info.items()}}
        if result.status == "ok":
            for name, values in result.draws.items():
                flat = values.reshape(-1, *values.shape[2:])
                record[f"{name}_mean"] = flat.mean(axis=0)
                record[f"{name}_sd"] = flat.std(axis=0)
        # the data set by reference (path + sha256, hashed once): attach_observed_data loads it
        data_sha256 = (file_sha256(data_path) if result.draws or result.checkpoint_draws
                       else None)
        encoded = EncodedRecord(record)
        if result.draws:  # a failed fit has a record but no draws
            write_posterior(fit_record_path(out_dir, seed, "nc"), result, record,
                            data_path=data_path, data_sha256=data_sha256, encoded=encoded)
        if result.checkpoint_draws:
            # the checkpoints take the place of chains: read back with read_posterior
            write_posterior(fit_record_path(out_dir, seed, "checkpoints.nc"),
                            FitResult(result.status, None, draws=result.checkpoint_draws),
                            {"seed": seed, "cell_id": cell_id, "checkpoint_iterations":
                             result.info["checkpoint_iterations"]},
                            data_path=data_path, data_sha256=data_sha256)
        for name, arrays in result.artifacts.items():
            write_arrays(arrays, fit_record_path(out_dir, seed, f"{name}.npz"))
        write_json(encoded, fit_record_path(out_dir, seed, "json"))
        log.info("seed %s: %s %s (%.1f s)", seed, result.status, result.error or "",
                 record["wall_seconds"])
        records.append(record)
    if batch:
        log.info("records and fit files of %d seeds written in %.1f s", len(seeds),
                 time.perf_counter() - records_started)
    return records


def write_reference(regime: str, cell_id: str, fit_dirs: list[str | Path],
                    out_path: str | Path) -> dict:
    """The reference posterior sd of the slopes of data regime ``regime`` from the fits of its
    reference cell (``Study.reference_cell``): per fit, the sd of each true component's slope
    after relabelling every draw (``metrics.relabelled_slope_sd``); the reference is their
    median over the fits. The classifier's slope tolerance of every cell of the regime is
    ``max(slope_tolerance_sd * reference, slope_tolerance_min_fraction * separation)``, so it
    follows the width of the regime's posterior instead of a fixed constant."""
    from vimodes.classify import TrueParameters, reference_slope_sd
    from vimodes.idata import read_posterior
    from vimodes.metrics import reference_slope_sd_from_fits, relabelled_slope_sd

    per_fit, truth = {}, None
    for fit_dir in fit_dirs:
        for path in sorted(Path(fit_dir).glob("seed-*.json")):
            record = read_json(path)
            if record["status"] != "ok":
                continue
            draws = read_posterior(fit_record_path(fit_dir, record["seed"], "nc"))
            per_fit[int(record["seed"])] = relabelled_slope_sd(draws["slopes"],
                                                               record["true_slopes"]).tolist()
            truth = TrueParameters(slopes=tuple(record["true_slopes"]),
                                   weights=tuple(record["true_weights"]),
                                   noise_sd=record["true_noise_sd"], n_obs=record["n_obs"])
    if truth is None:
        raise ValueError(f"reference cell {cell_id} of regime {regime!r} has no successful fit: "
                         "no reference posterior sd can be derived")
    reference = reference_slope_sd_from_fits(list(per_fit.values()))
    payload = {"data_regime": regime, "reference_cell": cell_id, "n_fits": len(per_fit),
               "per_fit_slope_sd": {str(k): v for k, v in sorted(per_fit.items())},
               "reference_slope_sd": reference.tolist(),
               "asymptotic_slope_sd": reference_slope_sd(truth).tolist()}
    write_json(payload, out_path)
    return payload


def read_reference_sd(path: str | Path | None):
    """The reference slope sd (K,) written by ``write_reference``; None without a file."""
    if not path:
        return None
    return np.asarray(read_json(path)["reference_slope_sd"], dtype=float)


def fit_group(study: Study, members: list[tuple[str, int]], data_blocks: list[str],
              out_dirs: list[str | Path], log_paths: list[str | Path]) -> None:
    """Fit the chunks ``members`` ((cell id, chunk) pairs) in this process, in order: chunk i
    reads its data sets from ``data_blocks``, writes ``out_dirs[i]`` and logs to
    ``log_paths[i]``. The imports and whatever the fitters share are paid once; each chunk's
    records and files are those ``fit_chunk`` writes for it alone (tested)."""
    from vimodes.runtime import script_logging
    from vimodes.simulate import block_regime, files_in_blocks

    if not len(members) == len(out_dirs) == len(log_paths):
        raise ValueError(f"a fit group of {len(members)} chunks needs as many output folders "
                         f"and logs, got {len(out_dirs)} and {len(log_paths)}")
    fitters = {}
    for index, ((cell_id, chunk), out_dir, log_path) in enumerate(
            zip(members, out_dirs, log_paths)):
        # a group's chunks may fit different data regimes: each reads the blocks of its own,
        # never another regime's data set of the same seed
        regime = study.cell_by_id[cell_id].data_regime
        own = [block for block in data_blocks if block_regime(block) == regime]
        with script_logging(log_path, freeze=index == len(members) - 1):
            log.info("chunk %s of %s, in a fit group of %d chunks", chunk, cell_id,
                     len(members))
            fit_chunk(study, cell_id, chunk,
                      files_in_blocks(own, study.chunk_seeds(cell_id, chunk)), out_dir,
                      fitters=fitters)


def classify_group(study: Study, members: list[dict], fit_dirs: list[str | Path],
                   out_paths: list[str | Path], log_paths: list[str | Path]) -> None:
    """Classify the chunks of a fit group in this process, in order: chunk i (``members[i]``:
    its ``seeds`` and its regime's ``reference`` file or None) reads ``fit_dirs[i]``, writes
    ``out_paths[i]`` and logs to ``log_paths[i]``; each table is the one ``classify_chunk``
    writes for the chunk alone."""
    from vimodes.runtime import script_logging

    if not len(members) == len(fit_dirs) == len(out_paths) == len(log_paths):
        raise ValueError(f"a classify group of {len(members)} chunks needs as many fit folders, "
                         f"tables and logs, got {len(fit_dirs)}, {len(out_paths)} and "
                         f"{len(log_paths)}")
    for index, (member, fit_dir, out_path, log_path) in enumerate(
            zip(members, fit_dirs, out_paths, log_paths)):
        with script_logging(log_path, freeze=index == len(members) - 1):
            log.info("chunk %s of %s, in a classify group of %d chunks", member["chunk"],
                     member["cell"], len(members))
            classify_chunk(study, fit_dir, member["seeds"], out_path,
                           reference_path=member["reference"])


def classify_chunk(study: Study, fit_dir: str | Path, seeds: list[int], out_path: str | Path,
                   reference_path: str | Path | None = None) -> pd.DataFrame:
    """One row per fit (``level='fit'``) and per chain (``level='chain'``) with class and metrics.

    ``reference_path``: the regime's reference (``write_reference``) whose posterior sd sets
    the slope tolerances; without it, the asymptotic sd (``classify.reference_slope_sd``)."""
    from vimodes.classify import (ClassifierSettings, TrueParameters, classify_draws,
                                  classify_failed, slope_tolerances)
    from vimodes.idata import read_posterior
    from vimodes.methods import method_spec
    from vimodes.metrics import convergence_diagnostics, relabelled_errors

    settings = ClassifierSettings(**study.config["classifier"])
    reference_sd = read_reference_sd(reference_path)
    rows = []
    for seed in seeds:
        record = read_json(fit_record_path(fit_dir, seed, "json"))
        truth = TrueParameters(slopes=tuple(record["true_slopes"]),
                               weights=tuple(record["true_weights"]),
                               noise_sd=record["true_noise_sd"], n_obs=record["n_obs"])
        base = {key: record.get(key) for key in _RECORD_COLUMNS}
        base["tolerance_source"] = "nuts_reference" if reference_sd is not None else "asymptotic"
        base["slope_tolerance"] = float(np.min(slope_tolerances(truth, settings, reference_sd)))
        checkpoint_file = fit_record_path(fit_dir, seed, "checkpoints.nc")
        if checkpoint_file.exists():  # also for a fit that failed after some checkpoints
            rows.extend(_checkpoint_rows(base, record, read_posterior(checkpoint_file), truth,
                                         settings, reference_sd))
        if record["status"] != "ok":
            label = "failed" if record["status"] == "failed" else "not_converged"
            c = classify_failed(record["error"] or record["status"])
            rows.append({**base, "level": "fit", "chain": -1, "outcome": label,
                         "outcome_reason": c.reason})
            continue
        draws = read_posterior(fit_record_path(fit_dir, seed, "nc"))
        c = classify_draws(draws["slopes"], draws["weights"], draws["sigma"], truth, settings,
                           reference_sd=reference_sd)
        relabel_by = method_spec(record["method"]).relabel_by
        errors = {}
        if draws["slopes"].shape[-1] == len(truth.slopes):
            # label-invariant errors need one model component per true one; an over-fitted
            # model's components are judged by the classifier (rule 7) instead
            errors = relabelled_errors(draws["slopes"], draws["weights"], draws["sigma"], truth,
                                       relabel_by=relabel_by)
            errors.pop("permutations", None)
        diagnostics = {}
        if record["method"] == "nuts":
            diagnostics = convergence_diagnostics(draws["slopes"], draws["weights"], draws["sigma"])
            diagnostics.pop("chain_permutations", None)
        rows.append({**base, "level": "fit", "chain": -1, "outcome": c.label,
                     "iterations_to_stabilise": iterations_to_stabilise(record, truth, settings,
                                                                         reference_sd),
                     "outcome_reason": c.reason, "share_mode_A": c.share_mode_A,
                     "share_mode_B": c.share_mode_B, "share_collapsed": c.share_collapsed,
                     "centre_class": c.centre_class, "centre_mass": c.centre_mass,
                     "minority_share": c.minority_share, "permutation": c.permutation,
                     "share_modes": c.share_modes, "model_components": draws["slopes"].shape[-1],
                     **errors, **diagnostics, **_posterior_summary(draws)})
        if draws["slopes"].shape[0] > 1:
            for chain, chain_label in enumerate(c.chain_labels):
                one = {k: v[chain:chain + 1] for k, v in draws.items()}
                rows.append({**base, "level": "chain", "chain": chain, "outcome": chain_label,
                             **_posterior_summary(one)})
    frame = pd.DataFrame(rows)
    write_table(frame, out_path)
    return frame


def _checkpoint_rows(base: dict, record: dict, draws: dict, truth, settings,
                     reference_sd=None) -> list[dict]:
    """One row (``level='checkpoint'``) per stored checkpoint of a fit: the class of the
    approximation as a run of that many iterations would have returned it.

    A fit that failed has the checkpoints it passed (the vectorised engine stores them; they
    are exactly the shorter runs, which finished); at the budgets after its failure it has no
    row and counts as not single-mode in the budget contrasts."""
    from vimodes.classify import classify_draws

    rows = []
    for index, iteration in enumerate(record["checkpoint_iterations"]):
        one = {k: v[index:index + 1] for k, v in draws.items()}
        c = classify_draws(one["slopes"], one["weights"], one["sigma"], truth, settings,
                           reference_sd=reference_sd)
        rows.append({**base, "level": "checkpoint", "chain": index,
                     "checkpoint_iteration": int(iteration), "outcome": c.label,
                     "outcome_reason": c.reason, "centre_class": c.centre_class,
                     "centre_mass": c.centre_mass, "minority_share": c.minority_share,
                     **_posterior_summary(one)})
    return rows


def iterations_to_stabilise(record: dict, truth, settings, reference_sd=None) -> float:
    """First iteration from which the approximation's centre stays in its final class (the
    centre is snapshotted every TRACE_EVERY iterations); NaN without a trajectory."""
    from vimodes.classify import classify_draws
    from vimodes.config import TRACE_EVERY

    if not record.get("slopes_trace"):
        return float("nan")
    slopes, weights, sigma = (np.asarray(record[f"{n}_trace"], dtype=float)
                              for n in ("slopes", "weights", "sigma"))
    # every snapshot as a one-draw chain: the chain labels are the snapshots' own classes
    labels = list(classify_draws(slopes[:, None], weights[:, None], sigma[:, None], truth,
                                 settings, reference_sd=reference_sd).chain_labels)
    first = len(labels) - 1
    while first > 0 and labels[first - 1] == labels[-1]:
        first -= 1
    return float((first + 1) * TRACE_EVERY)


# columns copied from a fit record into the tables
_RECORD_COLUMNS = (
    "cell_id", "grid", "model", "method", "optimizer", "optimizer_name", "learning_rate",
    "iterations", "init", "batch_size", "chains", "data_regime", "components", "seed", "status",
    "error",
    "iterations_done", "stopped_early", "final_loss", "fit_seconds", "wall_seconds",
    "setup_seconds", "psis_khat", "psis_khat_mcse", "khat_draws", "elbo_full", "diagnostics_error", "divergences", "engine",
    "max_depth_hits", "gradient_evaluations", "draws_done", "n_obs", "config_hash", "version_pymc",
)


def _posterior_summary(draws: dict[str, np.ndarray]) -> dict:
    out = {}
    for name in ("slopes", "weights"):
        flat = draws[name].reshape(-1, draws[name].shape[-1])
        for k in range(flat.shape[1]):
            out[f"{name}_{k}_mean"] = float(flat[:, k].mean())
            out[f"{name}_{k}_sd"] = float(flat[:, k].std())
    out["sigma_mean"] = float(draws["sigma"].mean())
    out["sigma_sd"] = float(draws["sigma"].std())
    return out


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a table as parquet (and CSV beside it when the path ends in .csv)."""
    from vimodes.records import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)


# the vocabulary is the classifier's (one place); single_mode is the sum of SINGLE_MODE
HEADLINE_CLASSES = OUTCOME_CLASSES
SINGLE_MODE = SINGLE_MODE_CLASSES
CELL_AXES = ("cell_id", "grid", "model", "method", "optimizer", "iterations", "init",
             "batch_size", "chains", "data_regime", "engine")


def summarise_cells(fits: pd.DataFrame, regimes: dict | None = None,
                    inits: dict | None = None) -> pd.DataFrame:
    """Per cell: counts and rates of every class with 95% Wilson intervals, single_mode =
    mode_A + mode_B + mode_single (``mode_too_wide`` is not in it), and the exact binomial test that modes A and B are equally
    likely among single-mode fits (NaN for an ordered model: it has one mode by construction).
    ``deterministic``: a method whose outcome is a function of the data set and the start
    (``MethodSpec.deterministic_from_start``) started at the model's initial point (init kind
    ``default``, from ``inits``, the config's), the same for every seed: its rate describes
    the data sets, not fitting noise."""
    from vimodes.metrics import equal_modes_pvalue, wilson_interval
    from vimodes.methods import METHOD_SPECS
    from vimodes.model_specs import MODEL_SPECS

    rows = []
    fit_rows = fits[fits["level"] == "fit"]
    for cell_id, group in fit_rows.groupby("cell_id", sort=True):
        first = group.iloc[0]
        row = {axis: first.get(axis) for axis in CELL_AXES}
        # the model's K where it differs from the data's (None: as the data); tables written
        # before the K generalisation have no such column
        row["components"] = first.get("components")
        n = len(group)
        row["n_fits"] = n
        counts = group["outcome"].value_counts()
        for label in (*HEADLINE_CLASSES, "single_mode"):
            k = int(sum(counts.get(c, 0) for c in SINGLE_MODE)) if label == "single_mode" \
                else int(counts.get(label, 0))
            low, high = wilson_interval(k, n)
            row[f"n_{label}"] = k
            row[f"rate_{label}"] = k / n if n else np.nan
            row[f"rate_{label}_low"] = low
            row[f"rate_{label}_high"] = high
        method = METHOD_SPECS.get(first["method"])
        init_kind = (inits or {}).get(first.get("init"), {}).get("kind")
        row["deterministic"] = bool(method is not None and method.deterministic_from_start
                                    and init_kind == "default")
        spec = MODEL_SPECS.get(first["model"])
        row["p_equal_modes"] = np.nan if spec is not None and spec.ordered else \
            equal_modes_pvalue(row["n_mode_A"], row["n_mode_B"])
        if regimes and first["data_regime"] in regimes:
            # the regime map (vimodes.regimes): descriptors, and the one axis a one-factor
            # regime moves (None for a crossed regime)
            row.update({f"regime_{k}": v for k, v in
                        regime_descriptors(regimes[first["data_regime"]]).items()})
            axis = regime_map(regimes).get(first["data_regime"])
            row["regime_axis"], row["regime_value"] = axis if axis else (None, np.nan)
        row["median_fit_seconds"] = float(group["fit_seconds"].median())
        row["median_sigma"] = float(group["sigma_mean"].median()) if "sigma_mean" in group else np.nan
        rows.append(row)
    return pd.DataFrame(rows)




def add_reference_sd_ratio(fits: pd.DataFrame) -> pd.DataFrame:
    """``sd_ratio_vs_nuts``: a single-mode fit's posterior sd of the slopes relative to that of
    single-chain NUTS on the marginal model for the same data set (VI under-dispersion < 1).
    The mean of the K slopes' sds (K = 2: (sd_0 + sd_1) / 2) is label-invariant within one mode;
    a table mixing K leaves the missing components' columns NaN, and they are skipped."""
    fits = fits.copy()
    if "slopes_0_sd" not in fits:
        fits["sd_ratio_vs_nuts"] = np.nan
        return fits
    sd_columns = sorted((c for c in fits.columns
                         if c.startswith("slopes_") and c.endswith("_sd") and c[7:-3].isdigit()),
                        key=lambda c: int(c[7:-3]))
    slope_sd = fits[sd_columns].mean(axis=1)
    single = (fits["level"] == "fit") & fits["outcome"].isin(SINGLE_MODE)
    is_reference = single & (fits["method"] == "nuts") & (fits["model"] == "marginal") & \
        (fits["chains"] == 1)
    reference = slope_sd[is_reference].groupby(
        [fits.loc[is_reference, "data_regime"], fits.loc[is_reference, "seed"]]).mean()
    keys = list(zip(fits["data_regime"], fits["seed"]))
    ref = np.array([reference.get(key, np.nan) for key in keys], dtype=float)
    fits["sd_ratio_vs_nuts"] = np.where(single, slope_sd / ref, np.nan)
    return fits


CLASS_METRICS = ("psis_khat", "elbo_full", "final_loss", "fit_seconds", "slope_abs_error",
                 "weight_abs_error", "sigma_abs_error", "sigma_mean", "sd_ratio_vs_nuts",
                 "iterations_to_stabilise", "coverage_slopes")


def summarise_by_class(fits: pd.DataFrame) -> pd.DataFrame:
    """Median and quartiles of each metric per (cell, outcome class): e.g. k-hat by class, which
    shows that k-hat is blind to a missed permutation mode rather than a single-mode detector."""
    fit_rows = fits[fits["level"] == "fit"]
    rows = []
    for (cell_id, outcome), group in fit_rows.groupby(["cell_id", "outcome"], sort=True):
        row = {"cell_id": cell_id, "outcome": outcome, "n_fits": len(group),
               "method": group["method"].iloc[0], "model": group["model"].iloc[0]}
        for metric in CLASS_METRICS:
            values = pd.to_numeric(group.get(metric), errors="coerce").dropna() \
                if metric in group else pd.Series(dtype=float)
            row[f"{metric}_n"] = len(values)
            for name, q in (("q25", 0.25), ("median", 0.5), ("q75", 0.75)):
                row[f"{metric}_{name}"] = float(values.quantile(q)) if len(values) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def aggregate(classified_paths: list[str], out_fits: dict[str, str], out_cells: dict[str, str],
              out_by_class: dict[str, str] | None = None,
              out_contrasts: dict[str, str] | None = None,
              regimes: dict | None = None,
              out_regime_contrasts: dict[str, str] | None = None,
              inits: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write the per-fit table, the per-cell summary (with the regime map's descriptors when
    ``regimes``, the config's data regimes, is given), the per-(cell, class) metrics, the
    paired contrasts of single-mode rates between cells that differ in one factor and the
    regime map's contrasts against the base regime. ``inits`` (the config's) marks the cells
    whose outcome is deterministic (``summarise_cells``)."""
    from vimodes.contrasts import cell_contrasts, regime_contrasts

    frames = [pd.read_parquet(p) for p in classified_paths]
    fits = pd.concat(frames, ignore_index=True).sort_values(["cell_id", "seed", "level", "chain"])
    fits = add_reference_sd_ratio(fits.reset_index(drop=True))
    cells = summarise_cells(fits, regimes, inits)
    for path in out_fits.values():
        write_table(fits, path)
    for path in out_cells.values():
        write_table(cells, path)
    by_class = summarise_by_class(fits)
    for path in (out_by_class or {}).values():
        write_table(by_class, path)
    if out_contrasts:
        contrasts = cell_contrasts(fits)
        for path in out_contrasts.values():
            write_table(contrasts, path)
    if out_regime_contrasts:
        by_regime = regime_contrasts(cells)
        for path in out_regime_contrasts.values():
            write_table(by_regime, path)
    return fits, cells
