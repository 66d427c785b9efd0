"""Figure tables: what the figures and the report draw, built from the fit files
(``data/fits/<cell>/chunk-<k>/seed-<s>.*``) and the aggregated tables, never from matplotlib
(the middle layer: vocabulary -> figure tables -> figures -> report).

``loss_traces`` (one row per fit and stored loss value), ``representative_draws`` (a subsample
of the slope draws of a few fits per (method, outcome) class), ``nuts_chain_draws`` (every draw of
every chain of one spanning multi-chain NUTS fit), ``posterior_grid`` (the corrected model's log
posterior density over a (w0, w1) grid for one data set, weights and sigma held at their true
values) and ``data_summary`` (that data set's truth and its single-line least-squares fit) are
written by the workflow's table rules; the row selections (``fit_rows``, ``adam_fit_rows``,
``elbo_gap_rows``, ``checkpoint_curves``, ``question_comparison_rows``, ``regime_map_points``)
are shared by a figure and the report's text, so that both state the same numbers.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from vimodes.classify import SINGLE_MODE_CLASSES
from vimodes.idata import loss_iterations
from vimodes.records import read_json
from vimodes.regimes import REGIME_AXES
from vimodes.vocabulary import (
    CORRECTED_MODELS,
    MODEL_ORDER,
    REGIME_MAP_CLASSES,
    ordered,
)

log = logging.getLogger("vimodes")


def fit_rows(fits: pd.DataFrame) -> pd.DataFrame:
    """The per-fit rows (not the per-chain ones) of the fit table."""
    if "level" in fits:
        fits = fits[fits["level"] == "fit"]
    return fits.reset_index(drop=True)


def numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce").astype(float)


def fit_file_index(fit_dirs: Iterable[str | Path], suffix: str) -> dict[tuple[str, int], Path]:
    """(cell_id, seed) -> path of ``seed-<s>.<suffix>`` in the chunk folders
    ``<cell>/chunk-<k>``."""
    index = {}
    for folder in fit_dirs:
        folder = Path(folder)
        cell_id = folder.parent.name
        for path in sorted(folder.glob(f"seed-*.{suffix}")):
            seed = path.name[len("seed-"):-len(suffix) - 1]
            if seed.isdigit():  # not e.g. seed-<s>.checkpoints.nc
                index[(cell_id, int(seed))] = path
    return index


def _outcomes(fits: pd.DataFrame) -> pd.DataFrame:
    columns = [c for c in ("cell_id", "seed", "grid", "model", "method", "optimizer", "iterations",
                           "init", "batch_size", "outcome") if c in fits]
    return fit_rows(fits)[columns]


def make_loss_traces(fits: pd.DataFrame, fit_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per fit and stored loss value: the fit's axes, its final ``outcome``, the
    ``iteration`` at the end of the stored bin and the ``loss`` (VI: mean of the bin's minibatch
    losses, ``vimodes.config.TRACE_EVERY`` iterations per bin; CAVI: the negative ELBO per
    sweep; the same iterations as the fit file's ``loss`` group, ``vimodes.idata``). Fits
    without a trace (NUTS, Pathfinder) have no rows."""
    outcomes = _outcomes(fits).set_index(["cell_id", "seed"])
    frames = []
    for (cell_id, seed), path in sorted(fit_file_index(fit_dirs, "json").items()):
        record = read_json(path)
        trace = np.asarray(record.get("loss_trace") or [], dtype=float)
        if trace.size == 0:
            continue
        iteration, _ = loss_iterations(record, trace.size)
        key = (cell_id, int(seed))
        outcome = outcomes.loc[key, "outcome"] if key in outcomes.index else "unclassified"
        frames.append(pd.DataFrame({
            "cell_id": cell_id, "seed": int(seed), "model": record.get("model"),
            "method": record.get("method"), "optimizer": record.get("optimizer"),
            "outcome": outcome, "iteration": iteration.astype(int), "loss": trace,
        }))
    columns = ["cell_id", "seed", "model", "method", "optimizer", "outcome", "iteration", "loss"]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=float if c == "loss" else object) for c in columns})
    return pd.concat(frames, ignore_index=True)[columns]


def select_representatives(fits: pd.DataFrame, available: Iterable[tuple[str, int]],
                           per_class: int = 3) -> pd.DataFrame:
    """Up to ``per_class`` fits per (method, outcome) with draws on disk, spread over the models
    (round robin in model order, then by cell and seed): deterministic."""
    available = set(available)
    rows = fit_rows(fits)
    keep = [(c, int(s)) in available for c, s in zip(rows["cell_id"], rows["seed"])]
    rows = rows[keep]
    chosen = []
    for (method, outcome), group in rows.groupby(["method", "outcome"], sort=True):
        by_model = {m: g.sort_values(["cell_id", "seed"]) for m, g in group.groupby("model")}
        queues = [by_model[m] for m in ordered(by_model, MODEL_ORDER)]
        picked = []
        for depth in range(max(len(q) for q in queues)):
            picked += [q.iloc[depth] for q in queues if depth < len(q)]
        chosen += picked[:per_class]
    if not chosen:
        return rows.iloc[:0]
    return pd.DataFrame(chosen).reset_index(drop=True)


def make_representative_draws(fits: pd.DataFrame, fit_dirs: Iterable[str | Path],
                              per_class: int = 3, n_draws: int = 200) -> pd.DataFrame:
    """``n_draws`` evenly spaced draws (all chains pooled) of the slopes, the first weight and
    sigma of the representative fits of :func:`select_representatives`."""
    from vimodes.idata import read_posterior

    index = fit_file_index(fit_dirs, "nc")
    chosen = select_representatives(fits, index, per_class)
    frames = []
    for _, row in chosen.iterrows():
        draws = read_posterior(index[(row["cell_id"], int(row["seed"]))])
        slopes = np.asarray(draws["slopes"], dtype=float)
        n_chain, n_draw = slopes.shape[:2]
        flat = slopes.reshape(n_chain * n_draw, -1)
        take = np.unique(np.linspace(0, len(flat) - 1, min(n_draws, len(flat))).round().astype(int))
        weights = np.asarray(draws["weights"], dtype=float).reshape(n_chain * n_draw, -1)
        sigma = np.asarray(draws["sigma"], dtype=float).reshape(-1)
        frames.append(pd.DataFrame({
            "cell_id": row["cell_id"], "seed": int(row["seed"]), "model": row["model"],
            "method": row["method"], "outcome": row["outcome"], "draw": take,
            "chain": take // n_draw, "slope_0": flat[take, 0], "slope_1": flat[take, 1],
            "weight_0": weights[take, 0], "sigma": sigma[take],
        }))
    columns = ["cell_id", "seed", "model", "method", "outcome", "draw", "chain", "slope_0",
               "slope_1", "weight_0", "sigma"]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    return pd.concat(frames, ignore_index=True)[columns]


NUTS_CHAIN_COLUMNS = ("cell_id", "seed", "chain", "draw", "variable", "value")
PREFERRED_CHAINS = 4


def select_spanning_nuts_fit(fits: pd.DataFrame,
                             available: Iterable[tuple[str, int]]) -> pd.Series | None:
    """The multi-chain NUTS fit of the label-switching figure: among the per-fit rows with
    method ``nuts``, at least 2 chains, status ``ok``, outcome ``spanning`` and a posterior file
    in ``available`` ((cell_id, seed) pairs), those with 4 chains if any; of these the first cell
    (by cell id) and its smallest seed. None when no fit qualifies. Deterministic."""
    available = set(available)
    rows = fit_rows(fits)
    if rows.empty or not {"method", "chains", "outcome", "cell_id", "seed"} <= set(rows):
        return None
    chains = numeric(rows, "chains")
    keep = (rows["method"] == "nuts") & (chains >= 2) & (rows["outcome"] == "spanning")
    if "status" in rows:
        keep &= rows["status"] == "ok"
    keep &= np.array([(c, int(s)) in available for c, s in zip(rows["cell_id"], rows["seed"])],
                     dtype=bool)
    rows = rows[keep].assign(_chains=chains[keep], _seed=rows.loc[keep, "seed"].astype(int))
    if rows.empty:
        return None
    if (rows["_chains"] == PREFERRED_CHAINS).any():
        rows = rows[rows["_chains"] == PREFERRED_CHAINS]
    return rows.sort_values(["cell_id", "_seed"]).iloc[0].drop(["_chains", "_seed"])


def make_nuts_chain_draws(fits: pd.DataFrame, fit_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """Every draw of every chain of the slopes of ONE spanning multi-chain NUTS fit
    (:func:`select_spanning_nuts_fit`), long: ``cell_id``, ``seed``, ``chain``, ``draw``,
    ``variable`` (``slopes[0]``, ``slopes[1]``, ...) and ``value``; no rows when no fit
    qualifies."""
    from vimodes.idata import read_posterior

    index = fit_file_index(fit_dirs, "nc")
    row = select_spanning_nuts_fit(fits, index)
    if row is None:
        return pd.DataFrame({c: pd.Series(dtype=float if c == "value" else
                                          "int64" if c in ("seed", "chain", "draw") else object)
                             for c in NUTS_CHAIN_COLUMNS})
    cell_id, seed = str(row["cell_id"]), int(row["seed"])
    slopes = np.asarray(read_posterior(index[(cell_id, seed)])["slopes"], dtype=float)
    n_chain, n_draw, n_comp = slopes.shape
    chain, draw = np.meshgrid(np.arange(n_chain), np.arange(n_draw), indexing="ij")
    frames = [pd.DataFrame({"cell_id": cell_id, "seed": seed, "chain": chain.ravel(),
                            "draw": draw.ravel(), "variable": f"slopes[{k}]",
                            "value": slopes[:, :, k].ravel()}) for k in range(n_comp)]
    return pd.concat(frames, ignore_index=True)[list(NUTS_CHAIN_COLUMNS)]


def profile_log_density(x: np.ndarray, y: np.ndarray, w0: np.ndarray, w1: np.ndarray,
                        weights=(0.5, 0.5), sigma: float = 0.1, prior_sd: float | None = 2.0,
                        chunk: int = 20_000) -> np.ndarray:
    """Log posterior density (up to a constant) of the corrected model at slopes (w0[i], w1[j]),
    weights and sigma held fixed: ``sum_n log sum_k pi_k N(y_n; x_n w_k, sigma)`` plus the
    slopes' Normal(0, prior_sd) log prior (none if ``prior_sd`` is None). Shape (len(w0), len(w1)).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    w0, w1 = np.atleast_1d(np.asarray(w0, float)), np.atleast_1d(np.asarray(w1, float))
    log_w = np.log(np.asarray(weights, float))
    const = -math.log(sigma) - 0.5 * math.log(2 * math.pi)
    out = np.zeros((w0.size, w1.size))
    for start in range(0, x.size, chunk):
        xs, ys = x[start:start + chunk, None], y[start:start + chunk, None]
        a = -0.5 * ((ys - xs * w0[None, :]) / sigma) ** 2 + const + log_w[0]  # (n, len(w0))
        b = -0.5 * ((ys - xs * w1[None, :]) / sigma) ** 2 + const + log_w[1]  # (n, len(w1))
        for i in range(w0.size):
            out[i] += np.logaddexp(a[:, i:i + 1], b).sum(axis=0)
    if prior_sd is not None:
        def log_prior(w):
            return -0.5 * (w / prior_sd) ** 2 - math.log(prior_sd) - 0.5 * math.log(2 * math.pi)
        out += log_prior(w0)[:, None] + log_prior(w1)[None, :]
    return out


def make_posterior_grid(data, low: float, high: float, n_points: int,
                        prior_sd: float | None = 2.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The profile log density over an ``n_points``^2 grid of [low, high]^2 for one data set
    (a :class:`vimodes.simulate.Dataset`), weights and sigma at their true values; and a one-row
    summary of the data set: truth, the least-squares line through the origin fitted to ALL
    points (the "one line" that a mixture of whole batches finds) and its residual sd.

    ``delta`` is the log density below the best of the grid and the true slopes (>= 0)."""
    regime = data.regime
    grid = np.linspace(low, high, n_points)
    kwargs = dict(weights=regime.weights, sigma=regime.noise_sd, prior_sd=prior_sd)
    density = profile_log_density(data.x, data.y, grid, grid, **kwargs)
    truth = np.asarray(regime.slopes, float)
    at_truth = float(profile_log_density(data.x, data.y, truth[:1], truth[1:], **kwargs)[0, 0])
    best = max(float(density.max()), at_truth)
    w0, w1 = np.meshgrid(grid, grid, indexing="ij")
    table = pd.DataFrame({"w0": w0.ravel(), "w1": w1.ravel(), "log_density": density.ravel(),
                          "delta": (best - density).ravel()})
    ols = float(np.dot(data.x, data.y) / np.dot(data.x, data.x))
    ols_sd = float(np.sqrt(np.mean((data.y - ols * data.x) ** 2)))
    at_ols = float(profile_log_density(data.x, data.y, [ols], [ols], **kwargs)[0, 0])
    summary = pd.DataFrame([{
        "seed": data.seed, "n_obs": regime.n_obs,
        "true_slope_0": truth[0], "true_slope_1": truth[1],
        "true_weight_0": regime.weights[0], "true_weight_1": regime.weights[1],
        "noise_sd": regime.noise_sd, "x_low": regime.x_low, "x_high": regime.x_high,
        "ols_slope": ols, "ols_residual_sd": ols_sd,
        "log_density_truth": at_truth, "log_density_one_line": at_ols,
        "grid_low": low, "grid_high": high, "grid_points": n_points,
        "slope_prior_sd": prior_sd if prior_sd is not None else np.nan,
    }])
    return table, summary


ELBO_GAP_FLOOR = 1e7


def elbo_gap_rows(fits: pd.DataFrame) -> pd.DataFrame:
    """Fits of the correctly specified marginal model with a full-data ELBO, with
    ``elbo_gap``: the fit's ELBO minus the best (largest) ELBO of a single-mode fit on the same
    data set (data regime and seed; over all cells, K = 2 and K = 3 models apart), so that ELBOs
    of different data sets compare and the best single-mode approximation found is 0. Fits
    whose data set has no single-mode fit with an ELBO are left out."""
    rows = fit_rows(fits)
    rows = rows[(rows["model"] == "marginal") & numeric(rows, "elbo_full").notna()].copy()
    if rows.empty:
        return rows
    rows["elbo_full"] = numeric(rows, "elbo_full")
    rows["fitted_k"] = numeric(rows, "model_components").fillna(-1)
    single = rows[rows["outcome"].isin(SINGLE_MODE_CLASSES)]
    reference = single.groupby(["data_regime", "seed", "fitted_k"])["elbo_full"].max()
    key = pd.MultiIndex.from_frame(rows[["data_regime", "seed", "fitted_k"]])
    rows["elbo_gap"] = rows["elbo_full"].to_numpy() - reference.reindex(key).to_numpy()
    return rows[rows["elbo_gap"].notna()]


def adam_fit_rows(fits: pd.DataFrame) -> pd.DataFrame:
    """Meanfield and full-rank ADVI fits of the corrected models under adam (any step size,
    start or budget) whose model has as many components as the data (no ``components``
    level): the setting in which
    ADVI is expected to land on a mode, so that every fit that does not needs explaining.
    Adds ``slope_sd_max`` (the widest slope's posterior sd)."""
    rows = fit_rows(fits)
    keep = (rows["model"].isin(CORRECTED_MODELS) & rows["method"].isin(("advi", "fullrank_advi"))
            & (rows.get("optimizer_name", pd.Series("", index=rows.index)) == "adam"))
    if "components" in rows:
        # an over-fitted model has no single-mode outcome to miss (its classes are overfit_*)
        keep &= pd.to_numeric(rows["components"], errors="coerce").isna()
    rows = rows[keep].copy()
    sds = [c for c in rows.columns if re.fullmatch(r"slopes_\d+_sd", c)]
    rows["slope_sd_max"] = rows[sds].apply(pd.to_numeric, errors="coerce").max(axis=1) \
        if sds else np.nan
    return rows


def question_comparison_rows(fits: pd.DataFrame) -> pd.DataFrame:
    """Fits of the question's model, its ablations and the corrected ``marginal`` model, in the
    VI settings (method, optimizer, iterations, init, batch size, data) where ``as_asked`` was
    run."""
    rows = fit_rows(fits)
    keys = ["method", "optimizer", "iterations", "init", "batch_size", "data_regime"]
    keys = [k for k in keys if k in rows]
    asked = rows[rows["model"] == "as_asked"]
    if asked.empty:
        return rows.iloc[:0]
    settings = asked[keys].drop_duplicates()
    wanted = rows[rows["model"].str.startswith("as_asked") | (rows["model"] == "marginal")]
    return wanted.merge(settings, on=keys, how="inner")


def checkpoint_curves(fits: pd.DataFrame) -> pd.DataFrame:
    """Per cell with stored checkpoints and per checkpoint iteration: fits, single-mode and
    collapsed counts and rates with 95% Wilson intervals (the table behind the budget figure)."""
    from vimodes.metrics import wilson_interval

    if "level" not in fits or not (fits["level"] == "checkpoint").any():
        return pd.DataFrame()
    rows = fits[fits["level"] == "checkpoint"]
    out = []
    for (cell_id, iteration), group in rows.groupby(["cell_id", "checkpoint_iteration"]):
        first = group.iloc[0]
        row = {"cell_id": cell_id, "method": first["method"], "model": first["model"],
               "optimizer": first["optimizer"], "init": first["init"],
               "iteration": int(iteration), "n_fits": len(group)}
        for name, labels in (("single_mode", SINGLE_MODE_CLASSES), ("collapsed", ("collapsed",))):
            k = int(group["outcome"].isin(labels).sum())
            low, high = wilson_interval(k, len(group))
            row.update({f"n_{name}": k, f"rate_{name}": k / len(group),
                        f"rate_{name}_low": low, f"rate_{name}_high": high})
        out.append(row)
    return pd.DataFrame(out)


def regime_map_points(cells: pd.DataFrame) -> pd.DataFrame:
    """The table behind the regime map: per setting that was run in at least one one-factor
    regime, per regime axis, one row per point (the base regime's cell is a point of every
    axis, at its own value of that axis) with the single-mode and collapsed rates and their
    Wilson intervals (from the cell table)."""
    from vimodes.contrasts import setting_key, setting_label

    if cells.empty or "regime_axis" not in cells:
        return pd.DataFrame()
    mapped = cells[cells["regime_axis"].notna()]
    keys = {setting_key(r) for _, r in mapped[mapped["regime_axis"] != "base"].iterrows()}
    out = []
    for _, r in mapped.iterrows():
        if setting_key(r) not in keys:
            continue
        axes = ([a.name for a in REGIME_AXES] if r["regime_axis"] == "base"
                else [r["regime_axis"]])
        for axis in axes:
            row = {"setting": setting_label(r), "regime_axis": axis,
                   "value": float(r[f"regime_{axis}"]), "data_regime": r["data_regime"],
                   "n_fits": int(r["n_fits"])}
            for name in REGIME_MAP_CLASSES:
                for suffix in ("", "_low", "_high"):
                    column = f"rate_{name}{suffix}"
                    row[column] = float(r[column]) if column in r else 0.0
            out.append(row)
    points = pd.DataFrame(out)
    if points.empty:
        return points
    # an axis with only the base point has no regime of its own: not drawn
    varied = points.groupby("regime_axis")["value"].transform("nunique") > 1
    return points[varied].sort_values(["regime_axis", "setting", "value"]).reset_index(drop=True)


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
