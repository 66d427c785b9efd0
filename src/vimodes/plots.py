"""The study's figures (the top drawing layer: vocabulary -> figure tables -> figures).

Each figure is drawn from tables ONLY (:mod:`vimodes.figure_tables` builds them) by one function
of :data:`FIGURES` and written as PNG and SVG by :func:`make_figure`; so changing a colour never
refits anything. The files are byte-identical on rerun: no software or date metadata, a fixed
``svg.hashsalt``, deterministic jitter.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import BoundaryNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from vimodes.classify import SINGLE_MODE_CLASSES  # noqa: E402
from vimodes.figure_specs import FIGURE_SPECS, KHAT_GOOD, KHAT_OK  # noqa: E402,F401
from vimodes.figure_tables import (  # noqa: E402
    ELBO_GAP_FLOOR,
    NUTS_CHAIN_COLUMNS,
    adam_fit_rows,
    checkpoint_curves,
    elbo_gap_rows,
    fit_rows,
    numeric,
    question_comparison_rows,
    read_table,
    regime_map_points,
)
from vimodes.records import atomic_path  # noqa: E402
from vimodes.regimes import REGIME_AXES  # noqa: E402
from vimodes.vocabulary import (  # noqa: E402
    FIT_COLORS,
    METHOD_COLORS,
    METHOD_LABELS,
    METHOD_ORDER,
    MINORITY_CLASSES,
    MODEL_ORDER,
    OUTCOME_COLORS,
    OUTCOME_LABELS,
    OUTCOME_ORDER,
    RATE_CLASSES,
    REGIME_MAP_CLASSES,
    cell_label,
    method_label,
    ordered,
)

log = logging.getLogger("vimodes")

# ---------------------------------------------------------------------------------------------
# Style (orders, labels and colours: vimodes.vocabulary)

DPI = 130
STYLE = {
    "svg.hashsalt": "vimodes-report",
    "svg.fonttype": "path",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": DPI,
    "figure.dpi": DPI,
}
# metadata that would change between runs, removed (SVG has its own key names)
SAVE_METADATA = {
    ".png": {"Software": None},
    ".svg": {"Date": None, "Creator": None},
    ".pdf": {"Creator": None, "Producer": None, "CreationDate": None},
}


def jitter(n: int, width: float = 0.25, key: int = 0) -> np.ndarray:
    """Deterministic horizontal jitter for ``n`` points (same on every run)."""
    if n == 0:
        return np.zeros(0)
    return np.random.default_rng([20180913, key, n]).uniform(-width, width, size=n)


# ---------------------------------------------------------------------------------------------
# Figures (tables in, matplotlib Figure out)


def _empty(fig: Figure, ax, message: str) -> Figure:
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    return fig


def _legend_handles(keys, colors, labels, marker="o") -> list:
    return [Line2D([], [], color=colors.get(k, "#333333"), marker=marker, linestyle="",
                   label=labels.get(k, k)) for k in keys]


def fig_outcome_rates(cells: pd.DataFrame) -> Figure:
    """Headline: per cell (rows) the rate of every outcome class (panels) with its 95% Wilson
    interval; single mode = mode A + mode B."""
    classes = [c for c in RATE_CLASSES if f"rate_{c}" in cells]
    if cells.empty or not classes:
        fig, ax = plt.subplots(figsize=(6, 2))
        return _empty(fig, ax, "no cells")
    order = cells.assign(
        _g=cells["grid"].astype(str),
        _m=cells["model"].map(lambda m: MODEL_ORDER.index(m) if m in MODEL_ORDER else 99),
        _k=cells["method"].map(lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else 99),
    ).sort_values(["_g", "_m", "_k", "cell_id"]).reset_index(drop=True)
    n = len(order)
    fig, axes = plt.subplots(1, len(classes), sharey=True, figsize=(4.0 + 1.45 * len(classes),
                                                                     1.3 + 0.2 * n),
                             layout="constrained")
    axes = np.atleast_1d(axes)
    ypos = np.arange(n)[::-1]
    labels = [f"[{r['grid']}] {cell_label(r)} (n={int(r['n_fits'])})" for _, r in order.iterrows()]
    for ax, label in zip(axes, classes):
        rate = order[f"rate_{label}"].to_numpy(float)
        low = order[f"rate_{label}_low"].to_numpy(float)
        high = order[f"rate_{label}_high"].to_numpy(float)
        color = OUTCOME_COLORS.get(label, "#333333")
        ax.errorbar(rate, ypos, xerr=[rate - low, high - rate], fmt="o", color=color,
                    markersize=3.5, elinewidth=1.0, capsize=1.5)
        ax.set_xlim(-0.04, 1.04)
        ax.set_xticks([0, 0.5, 1])
        # a panel is ~1.4 inches wide: longer labels would run into the next panel's
        ax.set_title(textwrap.fill(OUTCOME_LABELS.get(label, label), 15), color=color,
                     fontsize="medium")
        ax.grid(axis="x", color="#dddddd", linewidth=0.5)
        grids = order["grid"].astype(str).to_numpy()
        for i in range(1, n):
            if grids[i] != grids[i - 1]:
                ax.axhline(ypos[i] + 0.5, color="#999999", linewidth=0.6)
    axes[0].set_yticks(ypos, labels)
    axes[0].set_ylim(-0.7, n - 0.3)
    fig.supxlabel("share of fits in the cell (95% Wilson interval)")
    return fig


def fit_labels(draws: pd.DataFrame) -> dict[tuple[str, int], str]:
    """Short legend labels of the representative fits: the model, the parts of the cell id that
    differ between the fits of the same method (e.g. the optimiser, or NUTS's chains), the seed."""
    labels = {}
    for method, group in draws.groupby("method", sort=False):
        cells = sorted(group["cell_id"].unique())
        parts = {c: c.split("__")[2:] for c in cells}
        width = max((len(v) for v in parts.values()), default=0)
        varying = [i for i in range(width)
                   if len({p[i] if i < len(p) else "" for p in parts.values()}) > 1]
        for (cell_id, seed), fit in group.groupby(["cell_id", "seed"], sort=True):
            extra = " ".join(parts[cell_id][i] for i in varying if i < len(parts[cell_id]))
            labels[(cell_id, int(seed))] = " ".join(
                x for x in (str(fit["model"].iloc[0]), extra, f"seed {int(seed)}") if x)
    return labels


def fig_slope_draws(representative_draws: pd.DataFrame, posterior_grid: pd.DataFrame,
                    data_summary: pd.DataFrame) -> Figure:
    """Slope draws of representative fits (rows: method, columns: outcome class) over the
    corrected model's profile log density, drawn as log10(1 + distance below its maximum)."""
    draws = representative_draws
    if draws.empty or posterior_grid.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        return _empty(fig, ax, "no representative draws")
    methods = ordered(draws["method"], METHOD_ORDER)
    outcomes = ordered(draws["outcome"], OUTCOME_ORDER)
    labels = fit_labels(draws)
    grid = np.sort(posterior_grid["w0"].unique())
    z = (posterior_grid.sort_values(["w0", "w1"])["delta"].to_numpy(float)
         .reshape(grid.size, -1))
    z = np.log10(1.0 + np.maximum(z, 0.0))
    top = max(1.0, math.ceil(float(z.max()) * 2) / 2)
    levels = np.arange(0.0, top + 0.25, 0.5)
    cmap = plt.get_cmap("bone")
    norm = BoundaryNorm(levels, cmap.N)
    summary = data_summary.iloc[0] if not data_summary.empty else None
    fig, axes = plt.subplots(len(methods), len(outcomes), squeeze=False, sharex=True, sharey=True,
                             figsize=(1.2 + 2.6 * len(outcomes), 0.8 + 2.5 * len(methods)),
                             layout="constrained")
    mappable = None
    for i, method in enumerate(methods):
        for j, outcome in enumerate(outcomes):
            ax = axes[i, j]
            # z[a, b] is at (w0=grid[a], w1=grid[b]); contourf wants z[y, x] with x = w0
            mappable = ax.contourf(grid, grid, z.T, levels=levels, cmap=cmap, norm=norm,
                                   zorder=0)
            ax.contour(grid, grid, z.T, levels=levels[::2], colors="#ffffff", linewidths=0.25,
                       alpha=0.5, zorder=1)
            if summary is not None:
                t0, t1 = summary["true_slope_0"], summary["true_slope_1"]
                ax.plot([t0, t1], [t1, t0], "x", color="#ffd700", markersize=7, mew=1.0,
                        zorder=2)
                ax.plot([summary["ols_slope"]], [summary["ols_slope"]], "+", color="#ffd700",
                        markersize=8, mew=1.0, zorder=2)
            sub = draws[(draws["method"] == method) & (draws["outcome"] == outcome)]
            handles = []
            for k, ((cell_id, seed), fit) in enumerate(sub.groupby(["cell_id", "seed"], sort=True)):
                color = FIT_COLORS[k % len(FIT_COLORS)]
                ax.scatter(fit["slope_0"], fit["slope_1"], s=5, color=color, alpha=0.7,
                           linewidths=0, zorder=3)
                handles.append(Line2D([], [], color=color, marker="o", linestyle="",
                                      markersize=4, label=labels[(cell_id, int(seed))]))
            if handles:
                ax.legend(handles=handles, loc="upper right", fontsize=5.5, framealpha=0.85,
                          handletextpad=0.2, borderpad=0.3, labelspacing=0.2)
            else:
                ax.text(0.5, 0.06, "no fit", transform=ax.transAxes, ha="center",
                        color="#ffffff")
            ax.set_xlim(grid[0], grid[-1])
            ax.set_ylim(grid[0], grid[-1])
            ax.set_aspect("equal")
            if i == 0:
                ax.set_title(OUTCOME_LABELS.get(outcome, outcome),
                             color=OUTCOME_COLORS.get(outcome, "#333333"))
            if j == 0:
                ax.set_ylabel(f"{method_label(method)}\nslope w1")
            if i == len(methods) - 1:
                ax.set_xlabel("slope w0")
    if mappable is not None:
        fig.colorbar(mappable, ax=axes, shrink=0.6, ticks=levels[::2],
                     label="log10(1 + log density below its maximum)")
    return fig


def _component(variable: str) -> int:
    match = re.fullmatch(r"slopes\[(\d+)\]", str(variable))
    return int(match.group(1)) if match else -1


def nuts_chain_idata(nuts_chain_draws: pd.DataFrame):
    """The ArviZ InferenceData of a :func:`make_nuts_chain_draws` table: ``slopes`` of shape
    (chain, draw, component), dimension ``component`` with coordinates 0..K-1."""
    import arviz as az

    table = nuts_chain_draws[nuts_chain_draws["variable"].map(_component) >= 0]
    variables = sorted(table["variable"].unique(), key=_component)
    chains, draws = np.sort(table["chain"].unique()), np.sort(table["draw"].unique())
    wide = (table.pivot(index=["chain", "draw"], columns="variable", values="value")
            .reindex(index=pd.MultiIndex.from_product([chains, draws]), columns=variables))
    slopes = wide.to_numpy(float).reshape(chains.size, draws.size, len(variables))
    return az.from_dict(posterior={"slopes": slopes}, dims={"slopes": ["component"]},
                        coords={"chain": chains, "draw": draws,
                                "component": [_component(v) for v in variables]})


def fig_nuts_chains(nuts_chain_draws: pd.DataFrame) -> Figure:
    """Label switching between the chains of one spanning multi-chain NUTS fit: per slope
    (rows) the density of each chain and its trace (``az.plot_trace``, one row per component)
    and the rank plot (``az.plot_rank``), with the slope's R-hat."""
    table = nuts_chain_draws
    if (table.empty or not set(NUTS_CHAIN_COLUMNS) <= set(table)
            or not (table["variable"].map(_component) >= 0).any()):
        fig, ax = plt.subplots(figsize=(6, 2))
        return _empty(fig, ax, "no multi-chain NUTS fit with chains in both modes")
    import arviz as az

    idata = nuts_chain_idata(table)
    n_chain = idata.posterior.sizes["chain"]
    components = [int(k) for k in idata.posterior["component"].values]
    rhat = np.atleast_1d(az.rhat(idata)["slopes"].values)
    fig, axes = plt.subplots(len(components), 3, squeeze=False,
                             figsize=(10.0, 0.9 + 2.3 * len(components)), layout="constrained")
    az.plot_trace(idata, var_names=["slopes"], compact=False, legend=True, axes=axes[:, :2])
    az.plot_rank(idata, var_names=["slopes"], ax=axes[:, 2])
    for row, (k, value) in enumerate(zip(components, rhat)):
        density, trace, rank = axes[row]
        density.set_title(f"slopes[{k}]: density of each chain (a spike at its mode)")
        trace.set_title(f"slopes[{k}]: trace of each chain")
        rank.set_title(f"slopes[{k}]: rank plot, R-hat {value:.2f}")
        rank.set_xlabel("rank of the draw among all chains", fontsize=STYLE["axes.labelsize"])
        rank.set_ylabel("chain", fontsize=STYLE["axes.labelsize"])
        for ax in (density, trace, rank):  # ArviZ scales its own tick labels
            ax.tick_params(labelsize=STYLE["xtick.labelsize"])
        density.set_xlabel("slope")
        trace.set_xlabel("draw")
    first = table.iloc[0]
    fig.suptitle(f"{first['cell_id']}, seed {int(first['seed'])}: {n_chain} NUTS chains",
                 fontsize=9)
    return fig


def fig_loss_traces(loss_traces: pd.DataFrame) -> Figure:
    """Loss per stored bin against iteration, one line per fit, coloured by the fit's final
    outcome class; one panel per (model, method)."""
    loss_traces = loss_traces[np.isfinite(numeric(loss_traces, "loss"))]
    if loss_traces.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        return _empty(fig, ax, "no finite loss traces")
    pairs = (loss_traces[["model", "method"]].drop_duplicates()
             .assign(_m=lambda d: d["model"].map(lambda m: MODEL_ORDER.index(m)
                                                 if m in MODEL_ORDER else 99),
                     _k=lambda d: d["method"].map(lambda m: METHOD_ORDER.index(m)
                                                  if m in METHOD_ORDER else 99))
             .sort_values(["_m", "model", "_k", "method"]))
    pairs = list(zip(pairs["model"], pairs["method"]))
    ncols = min(4, len(pairs))
    nrows = math.ceil(len(pairs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(0.5 + 3.2 * ncols,
                                                                  0.9 + 2.4 * nrows),
                             layout="constrained")
    for ax, (model, method) in zip(axes.flat, pairs):
        sub = loss_traces[(loss_traces["model"] == model) & (loss_traces["method"] == method)]
        for (_, _, outcome), fit in sub.groupby(["cell_id", "seed", "outcome"], sort=True):
            # rasterized (also inside the SVG): a large study has thousands of long traces
            ax.plot(fit["iteration"], fit["loss"], color=OUTCOME_COLORS.get(outcome, "#333333"),
                    linewidth=0.8, alpha=0.7, rasterized=True)
        ax.set_yscale("symlog", linthresh=10.0)
        ax.set_title(f"{model} · {method_label(method)}")
        ax.set_xlabel("iteration" if method != "cavi" else "sweep")
        ax.set_ylabel("loss (-ELBO)")
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis("off")
    present = ordered(loss_traces["outcome"], OUTCOME_ORDER)
    fig.legend(handles=_legend_handles(present, OUTCOME_COLORS, OUTCOME_LABELS, marker="s"),
               loc="outside lower center", ncols=len(present), title="final outcome")
    return fig


def _strip(ax, frame: pd.DataFrame, category: str, categories: Sequence, value: str,
           color_by: str, colors: dict) -> None:
    for x, cat in enumerate(categories):
        sub = frame[frame[category] == cat]
        for key, group in sub.groupby(color_by, sort=True):
            y = numeric(group, value).to_numpy()
            ok = np.isfinite(y)
            offset = jitter(int(ok.sum()), key=x * 97 + (list(colors).index(key)
                                                        if key in colors else 50))
            ax.scatter(x + offset, y[ok], s=12, color=colors.get(key, "#333333"), alpha=0.75,
                       linewidths=0)
        values = numeric(sub, value).dropna()
        if len(values):
            ax.plot([x - 0.35, x + 0.35], [values.median()] * 2, color="#000000", linewidth=1.2)
    ax.set_xticks(range(len(categories)),
                  [OUTCOME_LABELS.get(c, METHOD_LABELS.get(c, c)).split(" (")[0]
                   for c in categories], rotation=30, ha="right")
    ax.set_xlim(-0.6, len(categories) - 0.4)


def fig_errors_by_class(fits: pd.DataFrame) -> Figure:
    """Absolute errors (after relabelling to the nearest permutation) of sigma, the slopes and
    the weights, by outcome class; colour: method; bar: median."""
    rows = fit_rows(fits)
    columns = [c for c in ("sigma_abs_error", "slope_abs_error", "weight_abs_error") if c in rows]
    rows = rows[rows[columns].notna().any(axis=1)] if columns else rows.iloc[:0]
    if rows.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        return _empty(fig, ax, "no fits with errors")
    outcomes = ordered(rows["outcome"], OUTCOME_ORDER)
    methods = ordered(rows["method"], METHOD_ORDER)
    fig, axes = plt.subplots(1, len(columns), squeeze=False,
                             figsize=(1.0 + 3.2 * len(columns), 3.4), layout="constrained")
    for ax, column in zip(axes.flat, columns):
        _strip(ax, rows, "outcome", outcomes, column, "method", METHOD_COLORS)
        ax.set_yscale("log")
        ax.set_title(column.replace("_abs_error", "").replace("slope", "slopes")
                     .replace("weight", "weights") + ": absolute error")
    fig.legend(handles=_legend_handles(methods, METHOD_COLORS, METHOD_LABELS),
               loc="outside lower center", ncols=len(methods))
    return fig


def fig_khat_by_class(fits: pd.DataFrame) -> Figure:
    """PSIS k-hat of the approximations by outcome class, with the 0.5 and 0.7 thresholds."""
    rows = fit_rows(fits)
    rows = rows[numeric(rows, "psis_khat").notna()]
    if rows.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        return _empty(fig, ax, "no fit has a PSIS k-hat")
    outcomes = ordered(rows["outcome"], OUTCOME_ORDER)
    methods = ordered(rows["method"], METHOD_ORDER)
    fig, ax = plt.subplots(figsize=(1.5 + 1.0 * len(outcomes), 3.4), layout="constrained")
    _strip(ax, rows, "outcome", outcomes, "psis_khat", "method", METHOD_COLORS)
    if (numeric(rows, "psis_khat") > 0).all():
        ax.set_yscale("log")
    else:
        ax.set_yscale("symlog", linthresh=1.0)
    for level, style in ((KHAT_GOOD, ":"), (KHAT_OK, "--")):
        ax.axhline(level, color="#444444", linestyle=style, linewidth=0.8)
        ax.annotate(f"{level:g}", (1.0, level), xycoords=("axes fraction", "data"),
                    xytext=(2, 0), textcoords="offset points", va="center", fontsize=6)
    ax.set_ylabel("PSIS k-hat")
    ax.legend(handles=_legend_handles(methods, METHOD_COLORS, METHOD_LABELS), loc="upper left",
              bbox_to_anchor=(1.06, 1.0))
    return fig


def fig_elbo_by_class(fits: pd.DataFrame) -> Figure:
    """The full-data ELBO of each fit relative to the single-mode fits on the same data set,
    by outcome class and method: is a collapsed or spanning approximation worse by the
    objective VI itself optimises?"""
    rows = elbo_gap_rows(fits)
    if rows.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        return _empty(fig, ax, "no marginal-model fit has a full-data ELBO")
    # a fit far off (e.g. an unconverged full-rank scale) is drawn at the floor, not lost
    rows = rows.assign(elbo_gap=rows["elbo_gap"].clip(lower=-ELBO_GAP_FLOOR))
    outcomes = ordered(rows["outcome"], OUTCOME_ORDER)
    methods = ordered(rows["method"], METHOD_ORDER)
    fig, ax = plt.subplots(figsize=(1.5 + 1.0 * len(outcomes), 3.6), layout="constrained")
    _strip(ax, rows, "outcome", outcomes, "elbo_gap", "method", METHOD_COLORS)
    ax.set_yscale("symlog", linthresh=10.0)
    low, high = ax.get_ylim()
    ax.set_yticks([0.0] + [sign * 10.0 ** e for e in range(2, 8, 2) for sign in (-1, 1)
                           if low <= sign * 10.0 ** e <= high])
    ax.axhline(0.0, color="#444444", linestyle=":", linewidth=0.8)
    ax.set_ylabel("ELBO gap to the best single-mode fit (nats)")
    ax.legend(handles=_legend_handles(methods, METHOD_COLORS, METHOD_LABELS), loc="upper left",
              bbox_to_anchor=(1.06, 1.0))
    return fig


def fig_runtime(fits: pd.DataFrame) -> Figure:
    """Fit time (excluding compilation) per method, every successful fit a point; bar:
    median."""
    rows = fit_rows(fits)
    if "status" in rows:
        rows = rows[rows["status"] == "ok"]
    rows = rows[numeric(rows, "fit_seconds") > 0]
    if rows.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        return _empty(fig, ax, "no fit times")
    methods = ordered(rows["method"], METHOD_ORDER)
    fig, ax = plt.subplots(figsize=(1.5 + 1.0 * len(methods), 3.2), layout="constrained")
    _strip(ax, rows, "method", methods, "fit_seconds", "method", METHOD_COLORS)
    ax.set_yscale("log")
    ax.set_ylabel("fit time per fit (s)")
    return fig


def fig_minority_share(fits: pd.DataFrame) -> Figure:
    """Empirical CDF per method of the minority share min(A, B) / (A + B) of the draws in a
    basin, over the fits labelled mode A, mode B or spanning: how cleanly a "single mode" sits in
    one mode, and how evenly a spanning fit splits."""
    rows = fit_rows(fits)
    rows = rows[rows["outcome"].isin(MINORITY_CLASSES)] if "outcome" in rows else rows.iloc[:0]
    rows = rows[numeric(rows, "minority_share").notna()]
    if rows.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        return _empty(fig, ax, "no single-mode or spanning fit with a minority share")
    methods = ordered(rows["method"], METHOD_ORDER)
    fig, ax = plt.subplots(figsize=(5.2, 3.4), layout="constrained")
    handles = []
    for method in methods:
        values = np.sort(numeric(rows[rows["method"] == method], "minority_share").to_numpy())
        ecdf = np.arange(1, values.size + 1) / values.size
        color = METHOD_COLORS.get(method, "#333333")
        # start at (0, 0) so that a method whose fits are all exactly 0 still shows a jump
        ax.step(np.r_[0.0, values, 0.5], np.r_[0.0, ecdf, 1.0], where="post", color=color,
                linewidth=1.2)
        handles.append(Line2D([], [], color=color, label=f"{method_label(method)} "
                                                          f"(n={values.size})"))
    ax.set_xlim(-0.01, 0.51)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("minority share of the draws in a basin, min(A, B) / (A + B)")
    ax.set_ylabel("fraction of fits (mode A, mode B, spanning)")
    ax.grid(color="#dddddd", linewidth=0.5)
    ax.legend(handles=handles, loc="lower right")
    return fig


def fig_adam_non_single(fits: pd.DataFrame) -> Figure:
    """Where and how wide the adam fits are: the widest slope's posterior sd (x, log) against
    the share of draws in the basin of the approximation's centre (y), per method, coloured by
    outcome. A fit on a mode but too wide sits right and low; one that is not centred on any
    mode has no basin mass."""
    rows = adam_fit_rows(fits)
    rows = rows[numeric(rows, "slope_sd_max").gt(0)]
    if rows.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        return _empty(fig, ax, "no ADVI fit with adam on the corrected models")
    methods = ordered(rows["method"], METHOD_ORDER)
    fig, axes = plt.subplots(1, len(methods), figsize=(3.3 * len(methods) + 1.6, 3.2),
                             layout="constrained", sharey=True, squeeze=False)
    outcomes = ordered(rows["outcome"], OUTCOME_ORDER)
    for ax, method in zip(axes[0], methods):
        sub = rows[rows["method"] == method]
        for outcome in outcomes:
            group = sub[sub["outcome"] == outcome]
            if group.empty:
                continue
            single = outcome in SINGLE_MODE_CLASSES
            mass = numeric(group, "centre_mass").fillna(0.0)
            ax.scatter(numeric(group, "slope_sd_max"), mass, s=6 if single else 16,
                       alpha=0.35 if single else 0.9, color=OUTCOME_COLORS.get(outcome, "#333333"),
                       edgecolors="none" if single else "black", linewidths=0.3)
        n_other = int((~sub["outcome"].isin(SINGLE_MODE_CLASSES)).sum())
        ax.set_title(f"{method_label(method)}: {n_other} of {len(sub)} not single mode")
        ax.set_xscale("log")
        ax.set_xlabel("posterior sd of the widest slope")
        ax.grid(color="#dddddd", linewidth=0.5)
    axes[0][0].set_ylabel("share of draws in the centre's basin")
    axes[0][-1].legend(handles=_legend_handles(outcomes, OUTCOME_COLORS, OUTCOME_LABELS),
                       loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig


def fig_question_model(fits: pd.DataFrame, data_summary: pd.DataFrame) -> Figure:
    """The question's model next to its one-error ablations and the corrected model, in the same
    VI settings: posterior mean sigma, posterior mean slopes, and the single-mode rate."""
    rows = question_comparison_rows(fits)
    if rows.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        return _empty(fig, ax, "no as_asked cells in this study")
    models = ordered(rows["model"], MODEL_ORDER)
    methods = ordered(rows["method"], METHOD_ORDER)
    fig, axes = plt.subplots(1, 3, figsize=(3.0 + 1.6 * len(models), 3.8), layout="constrained")
    summary = data_summary.iloc[0] if not data_summary.empty else None
    ok = rows[numeric(rows, "sigma_mean").notna()]
    # (a) sigma
    _strip(axes[0], ok, "model", models, "sigma_mean", "method", METHOD_COLORS)
    axes[0].set_yscale("log")
    axes[0].axhline(1.0, color="#b22222", linestyle="--", linewidth=0.8)
    axes[0].text(len(models) - 0.5, 1.0, "Uniform(0, 1) cap", color="#b22222", ha="right",
                 va="bottom", fontsize=6)
    if summary is not None:
        axes[0].axhline(summary["noise_sd"], color="#228b22", linestyle=":", linewidth=0.8)
        axes[0].axhline(summary["ols_residual_sd"], color="#555555", linestyle="-.",
                        linewidth=0.8)
    axes[0].set_title("posterior mean of sigma")
    # (b) slopes: both components of every fit
    both = pd.concat([ok.assign(slope=numeric(ok, "slopes_0_mean")),
                      ok.assign(slope=numeric(ok, "slopes_1_mean"))], ignore_index=True)
    _strip(axes[1], both, "model", models, "slope", "method", METHOD_COLORS)
    if summary is not None:
        for value in (summary["true_slope_0"], summary["true_slope_1"]):
            axes[1].axhline(value, color="#228b22", linestyle=":", linewidth=0.8)
        axes[1].axhline(summary["ols_slope"], color="#555555", linestyle="-.", linewidth=0.8)
    axes[1].set_title("posterior means of both slopes")
    # (c) single-mode rate pooled over the matched settings, per model and method
    from vimodes.metrics import wilson_interval

    width = 0.8 / max(len(methods), 1)
    for k, method in enumerate(methods):
        for x, model in enumerate(models):
            sub = rows[(rows["model"] == model) & (rows["method"] == method)]
            if sub.empty:
                continue
            n = len(sub)
            hits = int(sub["outcome"].isin(SINGLE_MODE_CLASSES).sum())
            low, high = wilson_interval(hits, n)
            pos = x - 0.4 + width * (k + 0.5)
            axes[2].errorbar([pos], [hits / n], yerr=[[hits / n - low], [high - hits / n]],
                             fmt="o", color=METHOD_COLORS.get(method, "#333333"), markersize=4,
                             capsize=2)
    axes[2].set_xticks(range(len(models)), models, rotation=30, ha="right")
    axes[2].set_xlim(-0.6, len(models) - 0.4)
    axes[2].set_ylim(-0.04, 1.04)
    axes[2].set_title("single-mode rate (95% Wilson)")
    handles = _legend_handles(methods, METHOD_COLORS, METHOD_LABELS)
    handles += [Line2D([], [], color="#228b22", linestyle=":", label="truth"),
                Line2D([], [], color="#555555", linestyle="-.",
                       label="one line through all points")]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    return fig


def fig_budget_curves(fits: pd.DataFrame) -> Figure:
    """Share of fits on a single mode and share still collapsed against the iteration budget,
    one line per cell (optimiser x start x method) with 95% Wilson bands, read from the
    checkpoints of long runs (a checkpoint is what a run of that length returns)."""
    curves = checkpoint_curves(fits)
    if curves.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        return _empty(fig, ax, "no fit stored checkpoints")
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), layout="constrained", sharey=True)
    cells = sorted(curves["cell_id"].unique())
    palette = plt.get_cmap("tab10")
    handles = []
    for index, cell_id in enumerate(cells):
        cell = curves[curves["cell_id"] == cell_id].sort_values("iteration")
        first = cell.iloc[0]
        color = palette(index % 10)
        style = "-" if first["init"] == "default" else "--"
        for ax, name in zip(axes, ("single_mode", "collapsed")):
            ax.plot(cell["iteration"], cell[f"rate_{name}"], style, color=color, marker="o",
                    markersize=3, linewidth=1.2)
            ax.fill_between(cell["iteration"], cell[f"rate_{name}_low"],
                            cell[f"rate_{name}_high"], color=color, alpha=0.15, linewidth=0)
        handles.append(Line2D([], [], color=color, linestyle=style, label=(
            f"{method_label(first['method'])}, {first['model']}, optimiser "
            f"{first['optimizer']}, start {first['init']} (n={int(cell['n_fits'].max())})")))
    for ax, title in zip(axes, ("on a single mode", "collapsed (mode averaging)")):
        ax.set_xscale("log")
        ax.set_xlabel("iterations (checkpoint of one long run)")
        ax.set_title(title, fontsize=10)
        ax.grid(color="#dddddd", linewidth=0.5)
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("share of fits")
    fig.legend(handles=handles, loc="outside lower center", ncols=1, fontsize=7)
    return fig


def fig_regime_map(cells: pd.DataFrame) -> Figure:
    """The rate of every outcome class that occurs in the map (a row each, single mode first)
    against each data-regime axis (a column each), one line per setting, 95% Wilson intervals;
    each axis moves one descriptor of the data away from the default regime, which is the
    common point of every panel."""
    points = regime_map_points(cells)
    if points.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        return _empty(fig, ax, "no one-factor data regime in this study")
    axes_present = [a for a in REGIME_AXES if a.name in set(points["regime_axis"])]
    classes = [name for name in REGIME_MAP_CLASSES
               if name == "single_mode" or (points[f"rate_{name}"] > 0).any()]
    fig, axes = plt.subplots(len(classes), len(axes_present),
                             figsize=(2.6 * len(axes_present) + 1, 2.4 * len(classes) + 0.6),
                             layout="constrained", sharey=True, squeeze=False)
    settings = sorted(points["setting"].unique())
    palette = plt.get_cmap("tab10")
    for col, axis in enumerate(axes_present):
        for index, setting in enumerate(settings):
            line = points[(points["regime_axis"] == axis.name) & (points["setting"] == setting)]
            for row, name in enumerate(classes):
                ax = axes[row, col]
                rate = line[f"rate_{name}"].to_numpy()
                err = np.vstack([rate - line[f"rate_{name}_low"].to_numpy(),
                                 line[f"rate_{name}_high"].to_numpy() - rate])
                ax.errorbar(line["value"], rate, yerr=err, color=palette(index % 10),
                            marker="o", markersize=3, linewidth=1.2, capsize=2)
        for row, name in enumerate(classes):
            ax = axes[row, col]
            if axis.log_scale:
                ax.set_xscale("log")
            ax.set_ylim(-0.03, 1.03)
            ax.grid(color="#dddddd", linewidth=0.5)
            if row == len(classes) - 1:
                ax.set_xlabel(axis.label)
            if col == 0:
                ax.set_ylabel("share:\n" + OUTCOME_LABELS.get(name, name).split(" (")[0],
                              fontsize=8)
    handles = [Line2D([], [], color=palette(i % 10), marker="o", label=setting)
               for i, setting in enumerate(settings)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)),
               fontsize=8)
    return fig


FIGURES: dict[str, Callable[..., Figure]] = {
    "outcome_rates": fig_outcome_rates,
    "slope_draws": fig_slope_draws,
    "loss_traces": fig_loss_traces,
    "errors_by_class": fig_errors_by_class,
    "khat_by_class": fig_khat_by_class,
    "runtime": fig_runtime,
    "minority_share": fig_minority_share,
    "budget_curves": fig_budget_curves,
    "question_model": fig_question_model,
    "adam_non_single": fig_adam_non_single,
    "regime_map": fig_regime_map,
    "elbo_by_class": fig_elbo_by_class,
    "nuts_chains": fig_nuts_chains,
}


def save_figure(fig: Figure, paths: Iterable[str | Path]) -> None:
    """Write ``fig`` to every path (format from the suffix) without run-dependent metadata."""
    for path in paths:
        path = Path(path)
        suffix = path.suffix.lower()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix[1:], metadata=SAVE_METADATA[suffix], dpi=DPI)
            os.chmod(tmp, 0o644)


def figure_function(name: str) -> Callable[..., Figure]:
    """The function that draws figure ``name``: :data:`FIGURES`, else its spec's ``function``."""
    if name in FIGURES:
        return FIGURES[name]
    target = FIGURE_SPECS[name].function if name in FIGURE_SPECS else ""
    if not target:
        raise KeyError(f"figure {name!r} has no function: neither in plots.FIGURES nor named "
                       "by its FigureSpec")
    module_name, _, function_name = target.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def make_figure(name: str, inputs: dict[str, str | Path], outputs: Iterable[str | Path]) -> None:
    """Draw figure ``name`` from the named input tables and save it."""
    function = figure_function(name)
    outputs = list(outputs)
    tables = {key: read_table(path) for key, path in inputs.items()}
    with plt.rc_context(STYLE):
        fig = function(**tables)
        try:
            save_figure(fig, outputs)
        finally:
            plt.close(fig)
    log.info("figure %s written to %s", name, ", ".join(map(str, outputs)))
