"""Paired contrasts of the single-mode rate between cells fitted on the same seeds.

Every cell of a study is fitted on the same seeds, and seed s means the same data set and the
same random stream in every cell. Two cells' outcomes on one seed are therefore a matched pair,
and the question "does changing this one factor change how often VI lands on a single mode?" is
a comparison of paired proportions: only the seeds where the two cells disagree (discordant
pairs) carry information about the difference. Treating the two cells as independent samples
(e.g. overlapping Wilson intervals) throws that pairing away and is too conservative when the
outcomes are positively correlated, as they are when the data set decides much of the outcome.

* ``paired_contrast``: one contrast (difference with Newcombe's hybrid score interval, exact
  McNemar test, conditional odds ratio with an exact interval);
* ``holm_adjust``: Holm's step-down adjustment of a family of p-values;
* ``cell_contrasts``: the family of contrasts the design supports (pairs of cells that differ in
  exactly one factor) from the per-fit table, with Holm-adjusted p-values over the contrasts
  that can reach significance (``min_attainable_mcnemar_p``; Tarone 1990).

Why the Holm family leaves out contrasts that cannot reach ``ALPHA``: the exact McNemar test is
conditional on the number of discordant pairs d, and with d pairs no outcome gives a p-value
below 2 * 0.5**d (d <= 5: >= 0.0625). Given the discordant counts, such a contrast is never
rejected at ``ALPHA`` whatever the split, so it cannot cause a false rejection, and Holm over the
others controls the family-wise error rate at ``ALPHA`` (conditionally on the counts, hence also
unconditionally) -- Tarone's (1990, Biometrics 46:515) observation for discrete tests. Counting
them, as plain Holm does, only makes every other adjusted p-value larger: in a study where
many pairs of cells agree on every seed, most of the family has d = 0.

Conventions: ``a`` and ``b`` are the single-mode indicators of cell_a and cell_b on the same
seeds; ``n_10`` counts seeds where a is single-mode and b is not, ``n_01`` the reverse;
``diff = rate_a - rate_b = (n_10 - n_01) / n`` and ``odds_ratio = n_10 / n_01`` (> 1 when cell_a
lands on a single mode more often), so the two always agree in sign.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

from vimodes.classify import SINGLE_MODE_CLASSES
from vimodes.methods import methods_where

__all__ = [
    "CONTRAST_AXES",
    "CONTRAST_COLUMNS",
    "ALPHA",
    "DETERMINISTIC_METHODS",
    "cell_contrasts",
    "holm_adjust",
    "independent_contrast",
    "min_attainable_mcnemar_p",
    "min_discordant",
    "paired_contrast",
]

# the factors of the design; a contrast changes exactly one of them (data_regime must be shared:
# seed s is the same data set only within one regime)
CONTRAST_AXES = ("model", "method", "optimizer", "iterations", "init", "batch_size", "chains",
                 "engine")
SINGLE_MODE = SINGLE_MODE_CLASSES  # mode_A, mode_B and (K > 2) mode_single
# methods whose result is a deterministic function of the data set and the start (CAVI's
# updates are exact; ADVI/SVGD/Pathfinder/NUTS draw random numbers while fitting)
DETERMINISTIC_METHODS = methods_where(deterministic_from_start=True)

#: the family-wise error rate the report's statements control ("a difference" means p_holm < ALPHA)
ALPHA = 0.05

CONTRAST_COLUMNS = (
    "axis", "level_a", "level_b", "cell_a", "cell_b", "data_regime", "shared", "n_pairs",
    "rate_a", "rate_b", "diff", "diff_low", "diff_high", "n_01", "n_10", "p_mcnemar",
    "in_family", "p_holm",
    "odds_ratio", "odds_ratio_low", "odds_ratio_high", "identical_outcomes", "deterministic",
)


def _wilson(k: int, n: int, level: float) -> tuple[float, float]:
    from vimodes.metrics import wilson_interval

    return wilson_interval(k, n, level)


def _newcombe_paired_interval(n11: int, n10: int, n01: int, n00: int,
                              level: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 - p2 from paired data (Newcombe 1998, Stat Med
    17:2635, method 10; Fagerland, Lydersen & Laake 2017, "Statistical Analysis of Contingency
    Tables", sec. 8.5: the "Newcombe square-and-add" interval).

    Square-and-add of the two marginal Wilson intervals, with the correlation of the marginals
    estimated by phi = (n11 n00 - n10 n01) / sqrt(product of the four margins), shrunk by n/2
    towards 0 when positive and set to 0 when a margin is empty (Newcombe's correction).
    Chosen over Tango's score interval because it is closed form and its coverage is close to
    nominal down to small n (Newcombe 1998; Fagerland et al. 2014), with a sensible width when
    there are no discordant pairs (not a zero-width interval at 0).
    """
    n = n11 + n10 + n01 + n00
    p1, p2 = (n11 + n10) / n, (n11 + n01) / n
    l1, u1 = _wilson(n11 + n10, n, level)
    l2, u2 = _wilson(n11 + n01, n, level)
    margins = (n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00)
    cross = n11 * n00 - n10 * n01
    if margins == 0 or 0 <= cross <= n / 2:
        phi = 0.0
    elif cross > n / 2:
        phi = (cross - n / 2) / math.sqrt(margins)
    else:
        phi = cross / math.sqrt(margins)
    diff = p1 - p2
    below = (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)
    above = (p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1)
    low = diff - math.sqrt(max(below, 0.0))
    high = diff + math.sqrt(max(above, 0.0))
    return max(-1.0, low), min(1.0, high)


def paired_contrast(a, b, level: float = 0.95) -> dict:
    """Compare two cells' single-mode indicators on the same seeds (``a[i]``, ``b[i]``: seed i).

    Returns a dict with
      n_pairs, rate_a, rate_b;
      diff = rate_a - rate_b with its ``level`` interval diff_low, diff_high: Newcombe's hybrid
        score interval for paired proportions (Newcombe 1998, method 10), within [-1, 1];
      n_10 (a single-mode, b not), n_01 (b single-mode, a not): the discordant pairs;
      p_mcnemar: the exact McNemar test, i.e. the two-sided binomial test of n_10 out of
        n_10 + n_01 discordant pairs with p = 1/2 (``scipy.stats.binomtest``); concordant pairs
        carry no information about the difference. 1.0 when there are no discordant pairs;
      odds_ratio = n_10 / n_01, the conditional (matched-pairs) odds ratio, with its exact
        interval odds_ratio_low, odds_ratio_high: the Clopper-Pearson interval (pl, pu) of the
        discordant proportion n_10 / (n_10 + n_01), mapped by p / (1 - p). inf when n_01 = 0 (and
        the upper end when n_01 = 0), NaN without discordant pairs;
      identical_outcomes: every pair concordant (the two cells agree on every seed).
    With no pairs every statistic is NaN (p_mcnemar too, so that Holm leaves it out).

    The interval and the test are different procedures and can disagree near the boundary:
    10 pairs with n_10 = 6, n_01 = 1 give p_mcnemar = 0.125 (the exact test is conservative)
    while the interval, 0.02 to 0.76, excludes 0. Read the p-value (Holm-adjusted across the
    family) for "is there a difference", and the interval for "how large is it".
    """
    a = np.asarray(a, dtype=bool).ravel()
    b = np.asarray(b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a and b must be aligned on the same seeds; got {a.size} and {b.size}")
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    n = int(a.size)
    n11, n10 = int(np.sum(a & b)), int(np.sum(a & ~b))
    n01, n00 = int(np.sum(~a & b)), int(np.sum(~a & ~b))
    nan = float("nan")
    out = {"n_pairs": n, "n_01": n01, "n_10": n10, "identical_outcomes": n > 0 and n01 + n10 == 0}
    if n == 0:
        return {**out, "rate_a": nan, "rate_b": nan, "diff": nan, "diff_low": nan,
                "diff_high": nan, "p_mcnemar": nan, "odds_ratio": nan, "odds_ratio_low": nan,
                "odds_ratio_high": nan}
    out["rate_a"], out["rate_b"] = (n11 + n10) / n, (n11 + n01) / n
    out["diff"] = (n10 - n01) / n
    out["diff_low"], out["diff_high"] = _newcombe_paired_interval(n11, n10, n01, n00, level)
    discordant = n10 + n01
    if discordant == 0:
        out.update(p_mcnemar=1.0, odds_ratio=nan, odds_ratio_low=nan, odds_ratio_high=nan)
        return out
    test = stats.binomtest(n10, discordant, 0.5, alternative="two-sided")
    ci = test.proportion_ci(confidence_level=level, method="exact")
    out["p_mcnemar"] = min(1.0, float(test.pvalue))
    out["odds_ratio"] = n10 / n01 if n01 else math.inf
    out["odds_ratio_low"] = _odds(float(ci.low))
    out["odds_ratio_high"] = _odds(float(ci.high))
    return out


def independent_contrast(k_a: int, n_a: int, k_b: int, n_b: int, level: float = 0.95) -> dict:
    """Compare two rates estimated on DIFFERENT data sets (e.g. two data regimes: seed s is a
    different data set in each, so the outcomes are not pairs).

    diff = k_a / n_a - k_b / n_b with Newcombe's hybrid score interval for independent
    proportions (Newcombe 1998, Stat Med 17:873, method 10: square-and-add of the two Wilson
    intervals) and the two-sided Fisher exact test (``scipy.stats.fisher_exact``, conditional
    on both margins: conservative, valid at any n). NaN everything when a side has no fits.
    """
    nan = float("nan")
    out = {"n_a": n_a, "n_b": n_b, "k_a": k_a, "k_b": k_b}
    if n_a == 0 or n_b == 0:
        return {**out, "rate_a": nan, "rate_b": nan, "diff": nan, "diff_low": nan,
                "diff_high": nan, "p_fisher": nan}
    if not (0 <= k_a <= n_a and 0 <= k_b <= n_b):
        raise ValueError(f"need 0 <= k <= n, got {k_a}/{n_a} and {k_b}/{n_b}")
    p_a, p_b = k_a / n_a, k_b / n_b
    l_a, u_a = _wilson(k_a, n_a, level)
    l_b, u_b = _wilson(k_b, n_b, level)
    diff = p_a - p_b
    low = diff - math.sqrt((p_a - l_a) ** 2 + (u_b - p_b) ** 2)
    high = diff + math.sqrt((u_a - p_a) ** 2 + (p_b - l_b) ** 2)
    p = stats.fisher_exact([[k_a, n_a - k_a], [k_b, n_b - k_b]], alternative="two-sided").pvalue
    return {**out, "rate_a": p_a, "rate_b": p_b, "diff": diff, "diff_low": max(-1.0, low),
            "diff_high": min(1.0, high), "p_fisher": min(1.0, float(p))}


def min_attainable_mcnemar_p(discordant: int) -> float:
    """The smallest two-sided exact McNemar p-value any split of ``discordant`` discordant pairs
    can give (all of them on one side): 2 * 0.5**d, capped at 1 (1 for d = 0 or 1)."""
    if discordant < 0:
        raise ValueError(f"a count of discordant pairs cannot be negative: {discordant}")
    return min(1.0, 2.0 * 0.5 ** discordant)


def min_discordant(alpha: float) -> int:
    """The fewest discordant pairs whose exact McNemar test can give p <= ``alpha``."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    d = 0
    while min_attainable_mcnemar_p(d) > alpha:
        d += 1
    return d


def _odds(p: float) -> float:
    return math.inf if p >= 1.0 else p / (1.0 - p)


def holm_adjust(pvalues) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values, controlling the family-wise error rate.

    With the m non-NaN p-values sorted, p_(1) <= ... <= p_(m), the adjusted value of p_(i) is
    max_{j <= i} min(1, (m - j + 1) p_(j)): monotone in the raw p-values and capped at 1. NaN
    entries (contrasts with no pairs) are passed through and do not count in m. Returns an array
    of the input's shape. Holm rather than Bonferroni: same guarantee, never less powerful.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    flat_p, flat_out = p.ravel(), out.reshape(-1)
    valid = np.flatnonzero(~np.isnan(flat_p))
    m = valid.size
    if m == 0:
        return out
    order = valid[np.argsort(flat_p[valid], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * flat_p[order])
    flat_out[order] = np.maximum.accumulate(scaled)
    return out


def _level(value):
    """A factor level in a form that compares equal to itself: missing (None, NaN, pd.NA: the
    axis does not apply to the method) becomes None, integral floats (parquet stores an integer
    column with missing values as float) become ints."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _text(level) -> str:
    return "none" if level is None else str(level)


def cell_contrasts(fits: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Every paired contrast the design supports, one row each (columns ``CONTRAST_COLUMNS``).

    A contrast is a pair of cells (``level == "fit"`` rows of the fits table) that share the
    data regime and differ in exactly one of ``CONTRAST_AXES``, so that the difference in the
    single-mode rate is attributable to that one factor. Pairs differing in two or more axes
    are confounded and left out (e.g. NUTS vs ADVI, which also differ in optimiser and batch
    size because those axes do not apply to NUTS; missing levels compare equal to each other).
    The two cells are matched on the seeds both have (inner join on seed); a fit that failed
    or did not converge counts as not single-mode (single_mode = outcome in mode_A, mode_B,
    mode_single). Cells with different model K (``components``) are never paired.
    Pairs with no seed in common are left out.

    cell_a is the cell whose cell_id sorts first (for a numeric axis, the lower level).
    A budget pair is left out when the longer cell stored a checkpoint at the shorter budget:
    the checkpoint contrast of the same runs (``checkpoint_contrasts``) is that comparison,
    and a second row would count it twice in the family. level_a/level_b are the differing axis's
    levels as text ("none" where the axis does not apply), and ``shared`` lists the axes the
    two cells have in common (axes that do not apply to either are left out). ``in_family``:
    the row's exact test can reach ``ALPHA`` (``min_attainable_mcnemar_p`` of its discordant
    pairs <= ALPHA); p_holm is Holm's adjustment over those rows (module docstring), and 1 for
    the others, which no split of their discordant pairs could make significant. ``deterministic``: both cells'
    outcomes are constant over the paired seeds (rates 0 or 1) and both methods are in
    ``DETERMINISTIC_METHODS``, so the outcome is a function of the data set and start alone and
    the contrast describes those, not fitting noise; its p-value is computed as for any other
    row.
    """
    rows_fit = fits[fits["level"] == "fit"]
    cells = []
    for cell_id, group in rows_fit.groupby("cell_id", sort=True):
        if group["seed"].duplicated().any():
            raise ValueError(f"cell {cell_id} has more than one fit row for a seed")
        first = group.iloc[0]
        single = pd.Series(group["outcome"].isin(SINGLE_MODE).to_numpy(),
                           index=group["seed"].to_numpy())
        cells.append({"cell_id": cell_id, "regime": _level(first["data_regime"]),
                      # a K = 3 model on K = 2 data has no single mode to compare: the model's
                      # K, like the data regime, must be shared by the two cells
                      "components": _level(first.get("components")),
                      "levels": {axis: _level(first.get(axis)) for axis in CONTRAST_AXES},
                      "single": single})
    checkpointed = _checkpoint_budgets(fits)
    rows = []
    for x, y in itertools.combinations(cells, 2):
        if x["regime"] != y["regime"] or x["components"] != y["components"]:
            continue
        differing = [axis for axis in CONTRAST_AXES if x["levels"][axis] != y["levels"][axis]]
        if len(differing) != 1:
            continue
        seeds = x["single"].index.intersection(y["single"].index).sort_values()
        if len(seeds) == 0:
            continue
        axis = differing[0]
        low, high = x["levels"][axis], y["levels"][axis]
        if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high:
            x, y = y, x  # numeric levels read in increasing order
        if axis == "iterations" and x["levels"][axis] in checkpointed.get(y["cell_id"], ()):
            # the longer run stored its state at this budget, which equals a run of that
            # budget (tested): that cell's own checkpoint contrast is this comparison
            continue
        result = paired_contrast(x["single"].loc[seeds].to_numpy(),
                                 y["single"].loc[seeds].to_numpy(), level)
        shared = ", ".join(f"{name}={_text(value)}" for name, value in x["levels"].items()
                           if name != axis and value not in (None, "none"))
        constant = all(r in (0.0, 1.0) for r in (result["rate_a"], result["rate_b"]))
        deterministic = constant and all(c["levels"]["method"] in DETERMINISTIC_METHODS
                                         for c in (x, y))
        rows.append({"axis": axis, "level_a": _text(x["levels"][axis]),
                     "level_b": _text(y["levels"][axis]), "cell_a": x["cell_id"],
                     "cell_b": y["cell_id"], "data_regime": _text(x["regime"]), "shared": shared,
                     **result, "deterministic": deterministic})
    rows.extend(checkpoint_contrasts(fits, level))
    table = pd.DataFrame(rows, columns=[c for c in CONTRAST_COLUMNS
                                        if c not in ("in_family", "p_holm")])
    table = table.astype({"n_pairs": int, "n_01": int, "n_10": int, "identical_outcomes": bool,
                          "deterministic": bool})
    in_family = np.array([min_attainable_mcnemar_p(d) <= ALPHA
                          for d in table["n_01"] + table["n_10"]], dtype=bool)
    in_family &= table["p_mcnemar"].notna().to_numpy()
    p_holm = np.where(in_family, holm_adjust(table["p_mcnemar"].where(in_family)), 1.0)
    p_holm[table["p_mcnemar"].isna().to_numpy()] = np.nan
    position = CONTRAST_COLUMNS.index("in_family")
    table.insert(position, "in_family", in_family)
    table.insert(position + 1, "p_holm", p_holm)
    return table


def _checkpoint_budgets(fits: pd.DataFrame) -> dict[str, set]:
    """The budgets at which each cell stored checkpoints (its shortest one included)."""
    if "level" not in fits or "checkpoint_iteration" not in fits:
        return {}
    rows = fits[fits["level"] == "checkpoint"]
    return {cell_id: {_level(b) for b in group["checkpoint_iteration"].dropna().unique()}
            for cell_id, group in rows.groupby("cell_id")}


def checkpoint_contrasts(fits: pd.DataFrame, level: float = 0.95) -> list[dict]:
    """The budget contrasts within a cell that stored checkpoints: its shortest checkpoint
    against the full budget, on the same seeds -- the same runs, so the pairing is exact.

    Rows use ``axis = "iterations"`` and the cell id on both sides, with the budgets as
    levels; a fit that failed counts as not single-mode at every budget.
    """
    if "level" not in fits or "checkpoint_iteration" not in fits:
        return []
    rows = fits[fits["level"] == "checkpoint"]
    out = []
    for cell_id, group in rows.groupby("cell_id", sort=True):
        budgets = sorted(group["checkpoint_iteration"].dropna().unique())
        if len(budgets) < 2:
            continue
        first, last = budgets[0], budgets[-1]
        single = {b: pd.Series(group.loc[group["checkpoint_iteration"] == b, "outcome"]
                               .isin(SINGLE_MODE).to_numpy(),
                               index=group.loc[group["checkpoint_iteration"] == b, "seed"])
                  for b in (first, last)}
        seeds = sorted(set(fits.loc[(fits["level"] == "fit") & (fits["cell_id"] == cell_id),
                                    "seed"]))
        a = single[first].reindex(seeds, fill_value=False).to_numpy()
        b = single[last].reindex(seeds, fill_value=False).to_numpy()
        result = paired_contrast(a, b, level)
        head = group.iloc[0]
        shared = ", ".join(f"{name}={_text(_level(head.get(name)))}" for name in CONTRAST_AXES
                           if name != "iterations" and _level(head.get(name)) not in
                           (None, "none"))
        out.append({"axis": "iterations", "level_a": str(int(first)),
                    "level_b": str(int(last)), "cell_a": cell_id, "cell_b": cell_id,
                    "data_regime": _text(_level(head["data_regime"])), "shared": shared,
                    **result, "deterministic": False})
    return out


# the axes that define a setting of the regime map (everything but the data regime)
SETTING_AXES = (*CONTRAST_AXES, "components")

REGIME_CONTRAST_COLUMNS = (
    "setting", "regime_axis", "regime_value", "data_regime", "cell_id", "base_cell_id",
    "k_a", "n_a", "k_b", "n_b", "rate_a", "rate_b", "diff", "diff_low", "diff_high", "p_fisher",
    "p_holm",
)


def setting_key(row, axes: tuple[str, ...] = SETTING_AXES) -> tuple:
    """A cell's setting: its levels of ``axes`` (missing levels compare equal)."""
    return tuple(_level(row.get(axis)) for axis in axes)


def regime_contrasts(cells: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """The regime map's contrasts: for every cell of a one-factor data regime (``regime_axis``
    set by ``pipeline.summarise_cells``, not "base"), its single-mode rate against the cell of
    the same setting in the base regime (``regime_axis == "base"``). Different regimes are
    different data sets, so the comparison is of independent proportions
    (``independent_contrast``: a = this regime, b = base); p_holm is Holm's adjustment over
    every row. Settings without a base cell are left out."""
    if cells.empty or "regime_axis" not in cells:
        return pd.DataFrame(columns=REGIME_CONTRAST_COLUMNS)
    mapped = cells[cells["regime_axis"].notna()]
    base = {setting_key(r): r for _, r in mapped[mapped["regime_axis"] == "base"].iterrows()}
    rows = []
    for _, r in mapped[mapped["regime_axis"] != "base"].iterrows():
        b = base.get(setting_key(r))
        if b is None:
            continue
        c = independent_contrast(int(r["n_single_mode"]), int(r["n_fits"]),
                                 int(b["n_single_mode"]), int(b["n_fits"]), level)
        rows.append({"setting": setting_label(r), "regime_axis": r["regime_axis"],
                     "regime_value": float(r["regime_value"]), "data_regime": r["data_regime"],
                     "cell_id": r["cell_id"], "base_cell_id": b["cell_id"], **c})
    out = pd.DataFrame(rows, columns=[c for c in REGIME_CONTRAST_COLUMNS if c != "p_holm"])
    out["p_holm"] = holm_adjust(out["p_fisher"].to_numpy(dtype=float)) if len(out) else []
    return out.sort_values(["setting", "regime_axis", "regime_value"]).reset_index(drop=True)


def setting_label(row) -> str:
    """A short readable name of a setting: method, and where they apply optimiser, start,
    chains and engine (e.g. "advi, adam_1e-2, jitter")."""
    parts = [str(row["method"])]
    for axis in ("optimizer", "init"):
        value = _level(row.get(axis))
        if value is not None and value != "none":  # "none": the axis does not apply (NUTS)
            parts.append(str(value))
    chains = _level(row.get("chains"))
    if chains is not None:
        parts.append(f"{chains} chain" + ("s" if chains != 1 else ""))
    return ", ".join(parts)
