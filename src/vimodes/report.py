"""The study's report (``report/report.html``, ``report/report.md``) from the tables and figures.

Every number in the report is read from a table -- the per-cell table (``cells``), the per-fit
table (``fits``) and the data summary of the figure tables (``data_summary``) -- or computed
from their counts (pooled rates and their Wilson intervals); the text around them only names
what the numbers are. A part of the study that was not run (no ablation cells, no SVGD ...) is
reported as absent instead of failing.

:func:`build_context` gathers the sections (paragraphs, tables, figures) that both templates in
``workflow/report/`` render; :func:`write_report` renders them; the HTML embeds every figure as a
base64 PNG so that it opens offline.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import os
import platform
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from markdown_it import MarkdownIt

from vimodes.classify import OUTCOME_CLASSES, SINGLE_MODE_CLASSES
from vimodes.contrasts import ALPHA, min_discordant
from vimodes.figure_specs import FIGURE_SPECS, KHAT_OK, figures_in
from vimodes.metrics import wilson_interval
from vimodes.methods import INIT_KINDS, init_meaning, methods_where
from vimodes.figure_tables import (
    adam_fit_rows,
    checkpoint_curves,
    elbo_gap_rows,
    fit_rows,
    numeric,
    question_comparison_rows,
)
from vimodes.records import atomic_path, package_versions
from vimodes.regimes import AXIS_BY_NAME
from vimodes.vocabulary import (
    METHOD_ORDER,
    MODEL_ORDER,
    OUTCOME_LABELS,
    OUTCOME_ORDER,
    method_label,
    ordered,
)

ADVI_METHODS = methods_where(report_group="advi")
OTHER_METHODS = methods_where(report_group="other")
SINGLE = SINGLE_MODE_CLASSES
# the outcome classes after the single modes, in report order
OTHER_CLASSES = tuple(c for c in OUTCOME_CLASSES if c not in SINGLE_MODE_CLASSES)


# ---------------------------------------------------------------------------------------------
# Formatting


def is_missing(value) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def num(value, digits: int = 3) -> str:
    """A number with ``digits`` significant digits; "n/a" when missing."""
    if is_missing(value):
        return "n/a"
    value = float(value)
    if value == 0:
        return "0"
    if abs(value) >= 10 ** digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def integer(value) -> str:
    return "n/a" if is_missing(value) else str(int(value))


def pct(value) -> str:
    return "n/a" if is_missing(value) else f"{100 * float(value):.0f}%"


def rate_text(k: int, n: int, low=None, high=None) -> str:
    """``k/n (p%, 95% CI l%-h%)``; the interval is Wilson's, computed here if not given."""
    if n == 0:
        return "0/0"
    if low is None or high is None:
        low, high = wilson_interval(int(k), int(n))
    return f"{int(k)}/{int(n)} ({pct(k / n)}, 95% CI {pct(low)}–{pct(high)})"


def cell_rate(row, label: str) -> str:
    """The rate of class ``label`` of one cell, as stored in the cell table (a deterministic
    cell's without an interval)."""
    deterministic = row.get("deterministic")  # missing in tables written before it existed
    if deterministic is not None and not pd.isna(deterministic) and bool(deterministic):
        return Pooled(int(row[f"n_{label}"]), int(row["n_fits"]), deterministic=True).text()
    return rate_text(int(row[f"n_{label}"]), int(row["n_fits"]), row[f"rate_{label}_low"],
                     row[f"rate_{label}_high"])


def other_outcomes_text(row) -> str:
    """Where a cell's fits that are not on a single mode went: each such class with its count
    ("collapsed (modes averaged) 100"), in the classifier's order."""
    counts = [f"{OUTCOME_LABELS.get(c, c)} {integer(row[f'n_{c}'])}" for c in OUTCOME_CLASSES
              if c not in SINGLE_MODE_CLASSES and f"n_{c}" in row and row[f"n_{c}"] > 0]
    return ", ".join(counts) or "none"


def setting_text(row) -> str:
    """The settings part of a cell (optimizer, iterations, init, batch, chains)."""
    parts = str(row["cell_id"]).split("__")[2:]
    return " ".join(parts) if parts else "-"


def readable_setting(row, labels: dict) -> str:
    """A cell's settings in words (optimiser with its algorithm and step, iterations, start,
    batch, chains, engine), for sentences; tables use the compact ``setting_text``. ``labels``
    names each optimiser level (``optimizer_labels``)."""
    parts = []

    def present(key):
        return not is_missing(row.get(key))

    if present("optimizer"):
        parts.append(f"optimiser {labels.get(row['optimizer'], row['optimizer'])}")
    if present("iterations"):
        parts.append(f"{integer(row['iterations'])} iterations")
    if present("init"):
        parts.append(f"{row['init']} start")
    if present("batch_size"):
        parts.append("full batch" if int(row["batch_size"]) == 0
                     else f"minibatch {integer(row['batch_size'])}")
    if present("chains"):
        parts.append(f"{integer(row['chains'])} chain(s)")
    if present("engine"):
        parts.append(f"{row['engine']} engine")
    return ", ".join(parts) or "-"


def code(text) -> str:
    return f"`{text}`"


@dataclass
class Item:
    """A bullet with sub-bullets: a finding and its contrasts, one per line."""

    text: str
    sub: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return " ".join([self.text, *self.sub])


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""

    @property
    def empty(self) -> bool:
        return not self.rows

    @property
    def markdown(self) -> str:
        """The table as a Markdown pipe table (cells kept as written: no number parsing)."""
        frame = pd.DataFrame([[md_cell(v) for v in row] for row in self.rows],
                             columns=[md_cell(c) for c in self.columns])
        return frame.to_markdown(index=False, tablefmt="pipe", disable_numparse=True)


@dataclass
class Section:
    id: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)  # a bullet list after the paragraphs
    tables: list[Table] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # paragraphs after tables and figures


# ---------------------------------------------------------------------------------------------
# Counting


@dataclass(frozen=True)
class Pooled:
    """k of n fits; ``cells`` > 1 when they come from cells with different settings, whose
    pooled rate depends on the grid's mix and whose fits are not independent draws of one
    setting (paired seeds): such a rate is shown without an interval."""

    k: int
    n: int
    cells: int = 1
    deterministic: bool = False  # one cell whose outcome is a function of the data set alone

    @property
    def rate(self) -> float:
        return self.k / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.k, self.n) if self.n else (float("nan"), float("nan"))

    def text(self) -> str:
        if self.cells > 1 and self.n:
            return f"{self.k}/{self.n} ({pct(self.k / self.n)}; {self.cells} cells pooled)"
        if self.deterministic and self.n:
            return (f"{self.k}/{self.n} ({pct(self.k / self.n)}; deterministic: the same start "
                    f"for every seed, no interval)")
        low, high = self.interval
        return rate_text(self.k, self.n, low, high)


def pooled_cells(cells: pd.DataFrame, label: str) -> Pooled:
    """Counts of class ``label`` summed over cells (their fits pooled)."""
    if cells.empty:
        return Pooled(0, 0)
    # a cell table written before the class existed has no column for it: none of its fits
    k = int(cells[f"n_{label}"].sum()) if f"n_{label}" in cells else 0
    deterministic = "deterministic" in cells and bool(cells["deterministic"].fillna(False).all())
    return Pooled(k, int(cells["n_fits"].sum()), cells=len(cells), deterministic=deterministic)


def pooled_fits(rows: pd.DataFrame, labels: Sequence[str]) -> Pooled:
    """Fits (per-fit rows) whose outcome is in ``labels``."""
    return Pooled(int(rows["outcome"].isin(list(labels)).sum()), len(rows), cells=n_cells(rows))


def n_cells(rows: pd.DataFrame) -> int:
    return int(rows["cell_id"].nunique()) if "cell_id" in rows and len(rows) else 1


def median_of(rows: pd.DataFrame, column: str) -> float:
    values = numeric(rows, column).dropna()
    return float(values.median()) if len(values) else float("nan")


def sort_cells(cells: pd.DataFrame) -> pd.DataFrame:
    def rank(order):
        return lambda v: order.index(v) if v in order else len(order)

    return (cells.assign(_m=cells["model"].map(rank(MODEL_ORDER)),
                         _k=cells["method"].map(rank(METHOD_ORDER)))
            .sort_values(["_m", "model", "_k", "method", "cell_id"])
            .drop(columns=["_m", "_k"]).reset_index(drop=True))


def corrected_cells(cells: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The cells of the corrected exchangeable model (``marginal``), or of the other non-question
    models when it is absent; with a name for the text."""
    if (cells["model"] == "marginal").any():
        return cells[cells["model"] == "marginal"], "the corrected model (`marginal`)"
    others = cells[~cells["model"].astype(str).str.startswith("as_asked")]
    names = ", ".join(code(m) for m in ordered(others["model"], MODEL_ORDER))
    return others, f"the models {names}" if names else "no corrected model"


# ---------------------------------------------------------------------------------------------
# Sections


def headline_table(cells: pd.DataFrame) -> Table:
    """How often meanfield and fullrank ADVI land on a single mode, per model and setting."""
    vi = sort_cells(cells[cells["method"].isin(ADVI_METHODS)])
    rows = []
    for _, row in vi.iterrows():
        rows.append([code(row["model"]), method_label(row["method"]), setting_text(row),
                     integer(row["n_fits"]), cell_rate(row, "single_mode"),
                     f"{integer(row['n_mode_A'])} / {integer(row['n_mode_B'])}",
                     integer(row.get("n_mode_too_wide")), integer(row["n_spanning"]),
                     integer(row["n_collapsed"]), integer(row["n_not_converged"]),
                     integer(row["n_failed"]), num(row.get("median_sigma"))])
    return Table(["model", "method", "setting", "fits", "single mode (95% CI)", "A / B",
                  "too wide", "spanning", "collapsed", "not converged", "failed",
                  "median sigma"], rows,
                 "Per cell: fits landing on one permutation mode (mode A or B), Wilson 95% "
                 "intervals; the other columns are counts of the other outcome classes (too "
                 "wide: centred on a mode but with too little of its mass in it, not counted as "
                 "single mode).")


def headline_section(cells: pd.DataFrame) -> Section:
    """Every ADVI cell's own rate (rates are never pooled over cells with different settings:
    the pooled number would only reflect the grid's mix)."""
    section = Section("headline", "How often does ADVI land on a single mode? Every cell",
                      figures=figures_in("headline"))
    vi = cells[cells["method"].isin(ADVI_METHODS)]
    if vi.empty:
        section.paragraphs.append("This study has no meanfield or fullrank ADVI cells.")
        return section
    low = vi.loc[vi["rate_single_mode"].idxmin()]
    high = vi.loc[vi["rate_single_mode"].idxmax()]
    section.paragraphs.append(
        f"Per cell, the single-mode rate of ADVI ranges from {pct(low['rate_single_mode'])} "
        f"({code(low['cell_id'])}, {integer(low['n_fits'])} fits) to "
        f"{pct(high['rate_single_mode'])} ({code(high['cell_id'])}, "
        f"{integer(high['n_fits'])} fits): where VI lands depends on the setting, so every "
        f"rate below belongs to its cell.")
    section.tables.append(headline_table(cells))
    return section


@dataclass(frozen=True)
class ModelError:
    id: str
    model: str | None  # the ablation that fixes only this error
    title: str
    what: str
    kept_model: str | None = None  # the ablation that fixes every error but this one


MODEL_ERRORS = (
    ModelError("E1", "as_asked_fix_mixture", "the mixture is over whole batches",
               "`logp_normal` sums over the batch and `logsumexp` is taken over the two "
               "components' batch totals: the model says the whole batch comes from ONE line, "
               "which one is unknown, instead of a mixture per observation.",
               "as_asked_keep_mixture"),
    ModelError("E2", "as_asked_fix_normaliser", "a wrong Gaussian normaliser",
               "the normaliser has `log(sigma)` once per batch where `log(sigma^2)` belongs per "
               "observation, so large sigma costs almost nothing.", "as_asked_keep_normaliser"),
    ModelError("E3", "as_asked_fix_total_size", "the minibatch is not rescaled",
               "`pm.Minibatch` without `total_size`: the likelihood of one minibatch is weighed "
               "as if it were all the data, so the prior is far too strong.",
               "as_asked_keep_total_size"),
    ModelError("E4", "as_asked_fix_sigma_prior", "sigma is capped at 1",
               "`sigma ~ Uniform(0, 1)` puts a hard upper bound of 1 on the noise sd.",
               "as_asked_keep_sigma_prior"),
    ModelError("E5", None, "two unaligned minibatch streams",
               "separate `pm.Minibatch(x)` and `pm.Minibatch(y)` stay aligned in PyMC3 but not "
               "in PyMC 5."),
)


def model_summary(rows: pd.DataFrame) -> dict:
    slope_sd = (numeric(rows, "slopes_0_sd") + numeric(rows, "slopes_1_sd")) / 2
    return {
        "fits": len(rows),
        "single": pooled_fits(rows, SINGLE),
        "sigma": median_of(rows, "sigma_mean"),
        "sigma_min": float(numeric(rows, "sigma_mean").min()) if len(rows) else float("nan"),
        "sigma_max": float(numeric(rows, "sigma_mean").max()) if len(rows) else float("nan"),
        "slope_error": median_of(rows, "slope_abs_error"),
        "slope_sd": float(slope_sd.dropna().median()) if slope_sd.notna().any() else float("nan"),
        "weight_error": median_of(rows, "weight_abs_error"),
        "settings": int(rows["cell_id"].nunique()) if len(rows) else 0,
    }


def question_section(fits: pd.DataFrame, data_summary: pd.DataFrame) -> Section:
    section = Section("question", "The question: is the model specified wrong, and what else?",
                      figures=figures_in("question"))
    rows = question_comparison_rows(fits)
    summary = data_summary.iloc[0] if not data_summary.empty else None
    by_model = {m: model_summary(rows[rows["model"] == m]) for m in ordered(rows["model"],
                                                                             MODEL_ORDER)}
    asked = by_model.get("as_asked")
    if asked is None:
        section.paragraphs.append(
            "The question's model (`as_asked`) was not fitted in this study, so the effect of its "
            "errors is not measured here; the errors are listed below.")
    else:
        truth = slopes = ""
        if summary is not None:
            truth = f" against a true noise sd of {num(summary['noise_sd'])}"
            slopes = (f" (true slopes {num(summary['true_slope_0'])} and "
                      f"{num(summary['true_slope_1'])})")
        section.paragraphs.append(
            f"Yes, the model is specified wrong. As asked (`as_asked`, {asked['fits']} fits in "
            f"{asked['settings']} VI settings), the posterior mean of sigma had median "
            f"{num(asked['sigma'])} (range {num(asked['sigma_min'])}–{num(asked['sigma_max'])})"
            f"{truth}, the slopes had median absolute error {num(asked['slope_error'])} after "
            f"relabelling{slopes}, and {asked['single'].text()} fits landed on a single mode: "
            f"the question's symptom.")
        marginal = by_model.get("marginal")
        if marginal is not None:
            section.paragraphs.append(
                f"In the same settings the corrected model (`marginal`) gives median sigma "
                f"{num(marginal['sigma'])}, median slope error {num(marginal['slope_error'])} "
                f"and a single mode in {marginal['single'].text()} fits.")

    for error in MODEL_ERRORS:
        effect = _error_effect(error, by_model, rows, summary)
        section.items.append(f"**{error.id}: {error.title}.** {error.what} {effect}".strip())
    if "as_asked_fix_all" in by_model:
        fixed = by_model["as_asked_fix_all"]
        section.notes.append(
            f"With E1–E4 all fixed (`as_asked_fix_all`, the question's code path): median sigma "
            f"{num(fixed['sigma'])}, median slope error {num(fixed['slope_error'])}, single mode "
            f"in {fixed['single'].text()} fits.")
    section.notes.append(
        "Anything else: even the corrected model has two exact permutation modes (exchangeable "
        "priors), and ADVI does not avoid label switching -- it has no notion of it. Which mode, "
        "or none, a fit lands on depends on the optimiser, the iteration budget and the "
        "initialisation (next section). The question's `CheckParametersConvergence` callback is "
        "not a model error, but with noisy minibatch gradients it rarely stops a run early"
        + _stopped_early_text(fits) + ".")
    section.tables.append(_question_table(by_model))
    return section


def _stopped_early_text(fits: pd.DataFrame) -> str:
    rows = fit_rows(fits)
    rows = rows[rows["method"].isin(ADVI_METHODS)]
    if rows.empty or "stopped_early" not in rows:
        return ""
    stopped = rows["stopped_early"].map(lambda v: bool(v) if not is_missing(v) else False)
    return f" (here {int(stopped.sum())} of {len(rows)} ADVI fits stopped early)"


def _compare(fix: dict, asked: dict | None) -> str:
    base = (f"median sigma {num(fix['sigma'])}, median slope error {num(fix['slope_error'])}, "
            f"median slope posterior sd {num(fix['slope_sd'])}, single mode in "
            f"{fix['single'].text()} fits")
    if asked is None:
        return base
    return (base + f" (as asked: {num(asked['sigma'])}, {num(asked['slope_error'])}, "
            f"{num(asked['slope_sd'])}, {asked['single'].k}/{asked['single'].n})")


def _error_effect(error: ModelError, by_model: dict, rows: pd.DataFrame, summary) -> str:
    asked = by_model.get("as_asked")
    text = ""
    if error.id == "E1" and summary is not None:
        text = (f"The best single line through all {integer(summary['n_obs'])} points of data "
                f"set {integer(summary['seed'])} has slope {num(summary['ols_slope'])} and "
                f"residual sd {num(summary['ols_residual_sd'])}; neither true slope "
                f"({num(summary['true_slope_0'])}, {num(summary['true_slope_1'])}) is "
                f"identifiable from it.")
    elif error.id == "E3":
        asked_rows = rows[rows["model"] == "as_asked"]
        batch = numeric(asked_rows, "batch_size")
        n_obs = numeric(asked_rows, "n_obs")
        ok = (batch > 0) & n_obs.notna()
        if ok.any():
            ratio = (n_obs[ok] / batch[ok]).median()
            text = (f"With N = {integer(n_obs[ok].median())} and batches of "
                    f"{integer(batch[ok].median())}, the data are weighed {num(ratio)} times too "
                    f"little against the prior (posterior sds about {num(math.sqrt(ratio))} "
                    f"times too wide).")
    elif error.id == "E4" and summary is not None:
        text = (f"The single-line residual sd {num(summary['ols_residual_sd'])} (E1) is above "
                f"the cap, so the cap, not the data, sets sigma.")
    elif error.id == "E5":
        return ("Not reproduced: every minibatch model in this study uses one joint, aligned "
                "`pm.Minibatch(x, y)`, as a faithful PyMC 5 port must.")
    if error.model is None:
        return text
    if error.model in by_model:
        text += (f" Fixing {error.id} alone (`{error.model}`): "
                 f"{_compare(by_model[error.model], asked)}.")
    else:
        text += f" (No `{error.model}` cells in this study: the effect of fixing {error.id} " \
                f"alone is not measured.)"
    return text.strip()


def model_fixes() -> dict[str, str]:
    """Which of the question's errors each ablation model fixes (from ``MODEL_ERRORS``)."""
    errors = [e.id for e in MODEL_ERRORS if e.model]
    fixes = {e.model: e.id for e in MODEL_ERRORS if e.model}
    fixes.update({e.kept_model: ", ".join(i for i in errors if i != e.id) + f" (keeps {e.id})"
                  for e in MODEL_ERRORS if e.kept_model})
    fixes.update({"as_asked": "none (E1–E4)", "as_asked_fix_all": "E1–E4",
                  "marginal": "corrected (NormalMixture)"})
    return fixes


def _question_table(by_model: dict) -> Table:
    fixes = model_fixes()
    rows = [[code(model), fixes.get(model, ""), str(s["fits"]), s["single"].text(),
             num(s["sigma"]), num(s["slope_error"]), num(s["slope_sd"]), num(s["weight_error"])]
            for model, s in by_model.items()]
    return Table(["model", "fixes", "fits", "single mode (95% CI)", "median sigma",
                  "median slope error", "median slope sd", "median weight error"], rows,
                 "The question's model, each one-error ablation and the corrected model, pooled "
                 "over the VI settings in which `as_asked` was run.")


FACTORS = (("optimizer", "optimiser"), ("iterations", "iteration budget"),
           ("init", "initialisation"), ("batch_size", "batch size"))


def _level_text(factor: str, level, labels: dict) -> str:
    if factor == "batch_size":
        return "full batch" if level == 0 else integer(level)
    if factor == "iterations":
        return integer(level)
    if factor == "optimizer":  # the labels describe optimisers: an init level may share a name
        return labels.get(level, str(level))
    return str(level)


def optimizer_labels(fits: pd.DataFrame) -> dict:
    rows = fit_rows(fits)
    labels = {}
    if {"optimizer", "optimizer_name", "learning_rate"} <= set(rows):
        for (opt, name, lr), _ in rows.groupby(["optimizer", "optimizer_name", "learning_rate"]):
            labels[opt] = f"{opt} ({name}, learning rate {num(lr)})"
    return labels


def factor_section(cells: pd.DataFrame, fits: pd.DataFrame) -> Section:
    section = Section("factors", "Dependence on optimiser, iterations and initialisation",
                      figures=figures_in("factors"))
    vi = cells[cells["method"].isin((*ADVI_METHODS, "svgd"))]
    labels = optimizer_labels(fits)
    rows = []
    for factor, name in FACTORS:
        if factor not in vi or vi[factor].nunique(dropna=True) < 2:
            continue
        levels = sorted(vi[factor].dropna().unique(), key=lambda v: (str(type(v)), v))
        corrected, model_name = corrected_cells(vi)
        per_method = []
        for method in ordered(corrected["method"], METHOD_ORDER):
            sub = corrected[corrected["method"] == method]
            if sub[factor].nunique(dropna=True) < 2:
                continue
            per_level = [f"{_level_text(factor, level, labels)} "
                         f"{pooled_cells(sub[sub[factor] == level], 'single_mode').text()}"
                         for level in levels if (sub[factor] == level).any()]
            per_method.append(f"{method_label(method)}: " + ", ".join(per_level))
        if per_method:
            section.paragraphs.append(
                f"By {name}, for {model_name} (other settings pooled), single mode in "
                + "; ".join(per_method) + ".")
        for (model, method), group in sort_cells(vi).groupby(["model", "method"], sort=False):
            if group[factor].nunique(dropna=True) < 2:
                continue
            for level in levels:
                sub = group[group[factor] == level]
                if sub.empty:
                    continue
                rows.append([name, code(model), method_label(method),
                             _level_text(factor, level, labels), str(len(sub)),
                             pooled_cells(sub, "single_mode").text(),
                             pooled_cells(sub, "mode_too_wide").text(),
                             pooled_cells(sub, "collapsed").text(),
                             pooled_cells(sub, "not_converged").text(),
                             pooled_cells(sub, "failed").text()])
    if not rows:
        section.paragraphs.append("No VI factor (optimiser, iterations, initialisation, batch "
                                  "size) has more than one level in this study.")
    else:
        section.tables.append(Table(
            ["factor", "model", "method", "level", "cells", "single mode (95% CI)",
             "too wide", "collapsed", "not converged", "failed"], rows,
            "Per model and method, fits pooled over the cells at each level of one factor "
            "(other factors pooled)."))
    section.notes.append(
        "The loss trajectories show where each fit ended (colour: final outcome class); the "
        "slope draws of representative fits are drawn over the corrected model's log posterior "
        "density (weights and sigma at their true values) for one simulated data set.")
    return section


def reference_section(cells: pd.DataFrame, fits: pd.DataFrame) -> Section:
    section = Section("references", "References: NUTS with one and several chains, and the "
                      "ordered model")
    nuts = sort_cells(cells[cells["method"] == "nuts"])
    rows_all = fit_rows(fits)
    chains_rows = fits[fits["level"] == "chain"] if "level" in fits else fits.iloc[:0]
    table = []
    if nuts.empty:
        section.paragraphs.append("NUTS was not run in this study.")
    for model, group in nuts.groupby("model", sort=False):
        texts = []
        for _, row in group.sort_values("chains").iterrows():
            chains = int(row["chains"]) if not is_missing(row["chains"]) else 1
            fit_sub = rows_all[rows_all["cell_id"] == row["cell_id"]]
            text = (f"with {chains} chain{'s' if chains > 1 else ''}, a single mode in "
                    f"{cell_rate(row, 'single_mode')} fits (A {integer(row['n_mode_A'])}, "
                    f"B {integer(row['n_mode_B'])})")
            if chains > 1:
                text += (f", chains in different modes (spanning) in "
                         f"{cell_rate(row, 'spanning')} fits, median raw R-hat "
                         f"{num(median_of(fit_sub, 'rhat_max_raw'))} (after relabelling "
                         f"{num(median_of(fit_sub, 'rhat_max_relabelled'))})")
            texts.append(text)
            chain_sub = chains_rows[chains_rows["cell_id"] == row["cell_id"]]
            chain_single = pooled_fits(chain_sub, SINGLE) if len(chain_sub) else None
            table.append([code(model), integer(chains), integer(row["n_fits"]),
                          cell_rate(row, "single_mode"),
                          f"{integer(row['n_mode_A'])} / {integer(row['n_mode_B'])}",
                          integer(row["n_spanning"]),
                          chain_single.text() if chain_single else "-",
                          num(median_of(fit_sub, "rhat_max_raw")),
                          num(median_of(fit_sub, "rhat_max_relabelled")),
                          integer(numeric(fit_sub, "divergences").sum())])
        section.paragraphs.append(f"NUTS on `{model}`: " + "; ".join(texts) + ".")
    if not nuts.empty:
        section.paragraphs.append(
            "A single chain stays in one permutation mode and its diagnostics cannot show the "
            "other; several chains reveal the second mode as chains in different modes "
            "(a large raw R-hat that disappears after relabelling each chain).")
        section.tables.append(Table(
            ["model", "chains", "fits", "single mode (95% CI)", "A / B", "spanning",
             "chains in a single mode", "median raw R-hat", "median relabelled R-hat",
             "divergences"], table, "NUTS references; R-hat is the largest over parameters."))
    ordered_cells = sort_cells(cells[cells["model"] == "ordered"])
    if ordered_cells.empty:
        section.notes.append("The ordered-slopes model was not run in this study.")
    else:
        texts = [f"{method_label(m)} {pooled_cells(g, 'single_mode').text()}"
                 for m, g in ordered_cells.groupby("method", sort=False)]
        section.notes.append(
            "The ordered model (slopes under the ordered transform) has one mode; fits in that "
            "mode count as single mode: " + "; ".join(texts) + ".")
    return section


def other_methods_section(cells: pd.DataFrame) -> Section:
    other = sort_cells(cells[cells["method"].isin(OTHER_METHODS)])
    present = set(other["method"])
    run = [method_label(m) for m in OTHER_METHODS if m in present] or ["none"]
    section = Section("other_methods", "Other methods: " + ", ".join(run))
    for method in OTHER_METHODS:
        sub = other[other["method"] == method]
        if sub.empty:
            section.paragraphs.append(f"{method_label(method)} was not run in this study.")
            continue
        extra = "; ".join(f"{OUTCOME_LABELS[label]} {pooled_cells(sub, label).text()}"
                          for label in OTHER_CLASSES if pooled_cells(sub, label).k)
        section.paragraphs.append(
            f"{method_label(method)} ({len(sub)} cell{'s' if len(sub) > 1 else ''}): single mode "
            f"in {pooled_cells(sub, 'single_mode').text()} fits" + (f"; {extra}" if extra else "")
            + ".")
    if not other.empty:
        section.tables.append(Table(
            ["model", "method", "setting", "fits", "single mode (95% CI)", "A / B", "too wide",
             "spanning", "collapsed", "not converged", "failed"],
            [[code(r["model"]), method_label(r["method"]), setting_text(r), integer(r["n_fits"]),
              cell_rate(r, "single_mode"), f"{integer(r['n_mode_A'])} / {integer(r['n_mode_B'])}",
              integer(r.get("n_mode_too_wide")), integer(r["n_spanning"]),
              integer(r["n_collapsed"]), integer(r["n_not_converged"]),
              integer(r["n_failed"])] for _, r in other.iterrows()],
            "Other approximations, per cell."))
    section.notes.append(
        "Multimodal variational families. None of the maintained libraries this study uses "
        "offers a mixture-of-Gaussians family: PyMC 5 has meanfield and full-rank Gaussians and "
        "particles (SVGD); pymc-extras has Pathfinder (one Gaussian per path; pooled and "
        "importance-resampled in its default, the `pathfinder_psis` cells) and DADVI (meanfield); "
        "numpyro's autoguides are Gaussian (diagonal, full, low-rank, Laplace), normalising flows "
        "(IAF, BNAF) and DAIS. Multi-path Pathfinder with resampling and SVGD are the study's "
        "multimodal approximations.")
    return section


def diagnostics_section(fits: pd.DataFrame) -> Section:
    section = Section("diagnostics", "Diagnostics by outcome class",
                      figures=figures_in("diagnostics"))
    rows = fit_rows(fits)
    with_khat = rows[numeric(rows, "psis_khat").notna()]
    table = []
    for outcome in ordered(rows["outcome"], OUTCOME_ORDER):
        sub = rows[rows["outcome"] == outcome]
        khat = numeric(sub, "psis_khat").dropna()
        table.append([OUTCOME_LABELS.get(outcome, outcome), str(len(sub)), str(len(khat)),
                      num(khat.median()) if len(khat) else "n/a",
                      Pooled(int((khat <= KHAT_OK).sum()), len(khat),
                             cells=n_cells(sub)).text() if len(khat) else "n/a",
                      num(median_of(sub, "sigma_abs_error")),
                      num(median_of(sub, "slope_abs_error"))])
    if with_khat.empty:
        section.paragraphs.append("No fit in this study has a PSIS k-hat.")
    else:
        draws = numeric(with_khat, "khat_draws").dropna()
        mcse = numeric(with_khat, "psis_khat_mcse").dropna()
        both = with_khat[numeric(with_khat, "psis_khat_mcse").notna()]
        clear = Pooled(int(((numeric(both, "psis_khat") - KHAT_OK).abs()
                            > 2 * numeric(both, "psis_khat_mcse")).sum()), len(both),
                       cells=n_cells(both)).text()
        if len(draws):
            section.paragraphs.append(
                f"k-hat is computed for {len(with_khat)} fits: the first seeds of every cell of "
                f"a correctly specified model (the question's models are left out: their density "
                f"is not the posterior, so k-hat would not measure approximation quality), from "
                f"{num(draws.median())} draws each; its bootstrap Monte Carlo standard error has "
                f"median {num(mcse.median()) if len(mcse) else 'n/a'} (max "
                f"{num(mcse.max()) if len(mcse) else 'n/a'}); {clear} of them lie more than two "
                f"MCSEs from the {num(KHAT_OK)} threshold.")
        single = with_khat[with_khat["outcome"].isin(SINGLE)]
        good = Pooled(int((numeric(single, "psis_khat") <= KHAT_OK).sum()), len(single),
                      cells=n_cells(single))
        text = (f"PSIS k-hat compares the approximation with the posterior only where the "
                f"approximation puts its draws: it is local and cannot see a missed permutation "
                f"mode. Of the {len(single)} single-mode fits with a k-hat, {good.text()} had "
                f"k-hat at or below {num(KHAT_OK)} although each misses the other mode")
        others = with_khat[~with_khat["outcome"].isin(SINGLE)]
        if len(others):
            bad = Pooled(int((numeric(others, "psis_khat") <= KHAT_OK).sum()), len(others),
                         cells=n_cells(others))
            text += f"; of the {len(others)} other fits with a k-hat, {bad.text()}"
        section.paragraphs.append(text + ".")
    section.tables.append(Table(
        ["outcome", "fits", "with k-hat", "median k-hat", f"k-hat ≤ {num(KHAT_OK)}",
         "median sigma error", "median slope error"], table,
        "Per outcome class over all methods; errors after relabelling to the nearest "
        "permutation."))
    section.notes.append(minority_text(rows))
    elbo = elbo_text(fits)
    if elbo:
        section.notes.append(elbo)
    return section


def elbo_text(fits: pd.DataFrame) -> str:
    """Median full-data ELBO gap to the single-mode fits on the same data set, per method and
    outcome class (the table behind the ``elbo_by_class`` figure)."""
    rows = elbo_gap_rows(fits)
    if rows.empty:
        return ""
    parts = []
    for method in ordered(rows["method"], METHOD_ORDER):
        sub = rows[rows["method"] == method]
        classes = [f"{OUTCOME_LABELS.get(o, o)} {num(sub.loc[sub['outcome'] == o, 'elbo_gap'].median(), 3)}"
                   f" (n={int((sub['outcome'] == o).sum())})"
                   for o in ordered(sub["outcome"], OUTCOME_ORDER)]
        parts.append(f"{method_label(method)}: " + ", ".join(classes))
    return ("Full-data ELBO of the marginal model's fits: median difference (nats) to the best "
            "single-mode fit of a model with the same K on the same data set, by method and "
            "class: " + "; ".join(parts) + ". The more negative, the worse the approximation by "
            "VI's own objective.")


def minority_text(rows: pd.DataFrame) -> str:
    """How the draws in a basin split between the two modes, for single-mode and spanning fits."""
    parts = []
    for name, labels in (("single-mode", SINGLE), ("spanning", ("spanning",))):
        sub = rows[rows["outcome"].isin(labels)]
        share = numeric(sub, "minority_share").dropna()
        if share.empty:
            continue
        mixed = Pooled(int((share > 0).sum()), len(share), cells=n_cells(sub))
        parts.append(f"of the {len(share)} {name} fits, {mixed.text()} had draws in the other "
                     f"mode (median minority share {num(share.median())})")
    if not parts:
        return "No single-mode or spanning fit has a minority share in this study."
    return ("Minority share = min(A, B) / (A + B) of the draws in a basin: "
            + "; ".join(parts) + ".")


def runtime_section(fits: pd.DataFrame) -> Section:
    section = Section("runtime", "Runtime per method", figures=figures_in("runtime"))
    rows = fit_rows(fits)
    if "status" in rows:
        rows = rows[rows["status"] == "ok"]
    table = []
    for method in ordered(rows["method"], METHOD_ORDER):
        sub = rows[rows["method"] == method]
        table.append([method_label(method), str(len(sub)), num(median_of(sub, "fit_seconds")),
                      num(numeric(sub, "fit_seconds").max()), num(median_of(sub, "setup_seconds"))])
    section.tables.append(Table(["method", "successful fits", "median fit s", "max fit s",
                                 "median compile s"], table,
                                "Successful fits; fit time excludes the model compilation (once "
                                "per chunk of seeds). Times depend on the machine (below)."))
    return section


def measured_escape(fits: pd.DataFrame | None) -> str:
    """The budget cells' checkpoints of meanfield ADVI with PyMC's default optimiser on the
    corrected model, per start: single-mode counts at the first and last checkpoint (what the
    escape-time estimates can be checked against); "" without them."""
    curves = checkpoint_curves(fits) if fits is not None else pd.DataFrame()
    if curves.empty:
        return ""
    sub = curves[(curves["method"] == "advi") & (curves["model"] == "marginal")
                 & (curves["optimizer"] == "default")]
    parts = []
    for init, group in sorted(sub.groupby("init"), key=lambda kv: str(kv[0])):
        ends = group.sort_values("iteration").iloc[[0, -1]]
        parts.append(f"from the {init} start " + " and ".join(
            f"{integer(r.n_single_mode)}/{integer(r.n_fits)} at {integer(r.iteration)}"
            for r in ends.itertuples()))
    if not parts:
        return ""
    return ("Measured on the budget cells' checkpoints (meanfield ADVI, default optimiser, "
            "fits on a single mode): " + "; ".join(parts) + ". The estimates linearise the "
            "dynamics at the collapsed point and hold for small offsets; where a count "
            "disagrees with them (e.g. an estimate below 10000 steps with few fits on a mode "
            "at 10000), the count is the result.")


def mechanism_section(mechanism: pd.DataFrame, fits: pd.DataFrame | None = None) -> Section:
    """The collapse mechanism, one paragraph per data seed, from data/tables/mechanism.parquet
    (vimodes.mechanism; quantities and units in workflow/report/columns.md)."""
    section = Section("mechanism", "Why the default optimiser collapses")
    if mechanism.empty:
        section.paragraphs.append("The mechanism table is empty in this study.")
        return section
    for (regime, seed), rows in mechanism.groupby(["data_regime", "seed"], sort=True):
        by_name = rows.set_index("name")

        def value(name, by_name=by_name):
            return by_name["value"].get(name, float("nan"))

        def est(name, by_name=by_name):
            error = by_name["error"].get(name, float("nan"))
            return num(value(name)) + ("" if is_missing(error) else f" ± {num(error, 2)}")

        def steps(name):
            if value(name) == float("inf"):
                return "never (no negative curvature)"
            return "n/a" if is_missing(value(name)) else f"~{float(f'{value(name):.2g}'):,.0f}"

        def beyond_error(name, sign):  # value clearly (2 MCSEs) on the side of `sign`
            return sign * value(name) > 2 * by_name["error"].get(name, float("nan"))

        def point(label):
            return (f"slopes ({num(value(f'{label}_slope_0'))}, {num(value(f'{label}_slope_1'))}),"
                    f" sigma {num(value(f'{label}_sigma'))}")

        first = rows.iloc[0]
        section.paragraphs.append(
            f"Data set {code(regime)} seed {seed} (N = {integer(first['n_obs'])}, model "
            f"{code(first['model'])}, {method_label(first['method'])}): after "
            f"{integer(value('collapsed_iterations'))} steps PyMC's default optimiser from the "
            f"symmetric start ends at {point('collapsed')}, where the full-data ELBO is "
            f"{est('elbo_collapsed')}; adam from a jittered start ends at {point('single_mode')} "
            f"with ELBO {est('elbo_single_mode')}: a difference of {est('elbo_difference')} "
            "nats" + (", so the collapse is not an optimum that the ELBO prefers."
                      if beyond_error("elbo_difference", 1) else "."))
        saddle = beyond_error("curvature_u_symmetric", -1)
        section.paragraphs.append(
            f"The symmetric point is {'a saddle' if saddle else 'not shown to be a saddle'}: "
            f"along u = (slope_0 − slope_1)/√2, the expected "
            f"loss (full data, common draws; loss = −ELBO / {num(value('loss_normaliser'))}) "
            f"has gradient {est('gradient_u_symmetric')} and curvature "
            f"{est('curvature_u_symmetric')} at the exactly symmetric point, gradient "
            f"{est('gradient_u_collapsed')} and curvature {est('curvature_u_collapsed')} at the "
            f"collapsed one. The minibatch gradient along u has sd "
            f"{num(value('gradient_noise_sd_u'))}. adagrad_window's effective rate is "
            f"{num(value('rate_adagrad_window'))} (noise step {num(value('step_noise_adagrad_window'))}"
            f" per step) against adam's {num(value('rate_adam'))} "
            f"({num(value('step_noise_adam'))}), so an offset along u grows by "
            f"{num(value('growth_rate_adagrad_window'))} against {num(value('growth_rate_adam'))} "
            f"per step, and reaching a mode ({num(value('escape_distance'))} away) takes "
            f"{steps('escape_steps_adagrad_window_default_start')} steps with the default "
            f"optimiser from the symmetric start "
            f"({steps('escape_steps_adagrad_window_jitter_start')} from a jittered one) against "
            f"{steps('escape_steps_adam_jitter_start')} with adam from a jittered start "
            f"({steps('escape_steps_adam_default_start')} from the symmetric one).")
        if measured := measured_escape(fits):
            section.paragraphs.append(measured)
    section.notes.append(
        "Escape times linearise the dynamics along u at the collapsed point: log(distance / "
        "offset) / log(1 + rate × |curvature|), the offset being the jitter scale or, from the "
        "symmetric start, the one the gradient noise builds. Every quantity with its Monte Carlo "
        "error: data/tables/mechanism.csv.")
    return section


def seed_ranges(seeds: Iterable[int]) -> str:
    seeds = sorted({int(s) for s in seeds})
    parts, start = [], None
    for i, s in enumerate(seeds):
        if start is None:
            start = s
        if i + 1 == len(seeds) or seeds[i + 1] != s + 1:
            parts.append(f"{start}" if start == s else f"{start}–{s}")
            start = None
    return ", ".join(parts)


def reproduce_section(fits: pd.DataFrame, provenance: dict) -> Section:
    section = Section("reproduce", "How to reproduce")
    rows = fit_rows(fits)
    hashes = sorted(rows["config_hash"].dropna().astype(str).unique()) if "config_hash" in rows \
        else []
    current = provenance.get("config_hash")
    items = [f"Command: `{provenance.get('command', 'snakemake --cores N')}`",
             f"Figures and report only, from the existing tables: "
             f"`{provenance.get('figures_command', 'snakemake --cores 1 figures')}`",
             f"Study `{provenance.get('study_name', '?')}`, config hash `{current}`"
             + ("" if not hashes or hashes == [current] else
                f" (the fits were made with config hash(es) {', '.join(code(h) for h in hashes)})"),
             f"Seed base {provenance.get('seed_base', '?')}; seeds per grid: "
             + "; ".join(f"{grid} {seed_ranges(g['seed'])}"
                         for grid, g in rows.groupby("grid", sort=True))]
    if "version_pymc" in rows:
        items.append("PyMC version of the fits: "
                     + ", ".join(sorted(rows["version_pymc"].dropna().astype(str).unique())))
    versions = provenance.get("versions") or package_versions()
    items.append("Packages (report): " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    items.append(f"Machine: {provenance.get('platform', platform.platform())}, "
                 f"{provenance.get('cpus', os.cpu_count())} CPUs")
    items.append(f"Report written: {provenance.get('date', '?')}")
    section.items = items
    return section


# ---------------------------------------------------------------------------------------------
# Claims backed by paired contrasts (data/tables/contrasts.parquet)


def _points(share: float) -> str:
    """A difference of proportions in signed percentage points; a difference that rounds to 0
    reads +0, never -0."""
    return f"{round(100 * float(share)):+d}"


def _pvalue(value) -> str:
    if is_missing(value):
        return "n/a"
    value = float(value)
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def oriented(row: pd.Series, level_a) -> dict:
    """A contrast row as a dict with side ``a`` at ``level_a`` (the table sorts its sides by
    cell id; a flipped contrast negates the difference and swaps everything paired)."""
    out = row.to_dict()
    if str(row["level_a"]) == str(level_a):
        return out
    swap = {"level_a": "level_b", "cell_a": "cell_b", "rate_a": "rate_b", "n_01": "n_10",
            "odds_ratio_low": "odds_ratio_high"}
    for x, y in swap.items():
        out[x], out[y] = row[y], row[x]
    out["diff"] = -row["diff"]
    out["diff_low"], out["diff_high"] = -row["diff_high"], -row["diff_low"]
    if not is_missing(row["odds_ratio"]):
        out["odds_ratio"] = 1 / row["odds_ratio"] if row["odds_ratio"] else math.inf
        out["odds_ratio_low"] = 1 / row["odds_ratio_high"] if row["odds_ratio_high"] else math.inf
        out["odds_ratio_high"] = 1 / row["odds_ratio_low"] if row["odds_ratio_low"] else math.inf
    return out


def find_contrast(contrasts: pd.DataFrame, cells: pd.DataFrame, axis: str, level_a, level_b,
                  **fixed) -> dict | None:
    """The contrast of ``axis`` between ``level_a`` and ``level_b`` whose cells have the
    ``fixed`` axis values (from the cell table); oriented so that side a is ``level_a``."""
    if contrasts is None or contrasts.empty:
        return None
    by_id = cells.set_index("cell_id")
    rows = contrasts[(contrasts["axis"] == axis)
                     & (contrasts[["level_a", "level_b"]].astype(str)
                        .apply(set, axis=1) == {str(level_a), str(level_b)})]
    for _, row in rows.iterrows():
        ok = True
        for cell_id in (row["cell_a"], row["cell_b"]):
            if cell_id not in by_id.index:
                ok = False
                break
            cell = by_id.loc[cell_id]
            ok &= all(str(cell.get(k)) == str(v) for k, v in fixed.items())
        if ok:
            return oriented(row, level_a)
    return None


def contrast_text(c: dict, label_a: str, label_b: str) -> str:
    """"label_a k/n vs label_b k/n single-mode (paired difference d, 95% CI, p, Holm p)"."""
    n = int(c["n_pairs"])
    k_a, k_b = round(c["rate_a"] * n), round(c["rate_b"] * n)
    verdict = "a difference" if c["p_holm"] < ALPHA else "no difference detectable"
    return (f"{label_a} {k_a}/{n} vs {label_b} {k_b}/{n} seeds on a single mode: {verdict} "
            f"(paired difference {_points(c['diff'])} points, 95% CI "
            f"{_points(c['diff_low'])} to {_points(c['diff_high'])}; exact McNemar "
            f"p {_pvalue(c['p_mcnemar'])}, {_holm_text(c)})")


def _holm_text(c) -> str:
    """The contrast's Holm-adjusted p-value, or why it is not in the Holm family."""
    if c.get("in_family", True):
        return f"Holm-adjusted {_pvalue(c['p_holm'])}"
    discordant = int(c["n_01"] + c["n_10"])
    return (f"{discordant} discordant seed{'s' if discordant != 1 else ''}: no split reaches "
            f"{ALPHA}, not in the Holm family")


def _cell(cells: pd.DataFrame, **axes) -> pd.Series | None:
    mask = pd.Series(True, index=cells.index)
    for key, value in axes.items():
        mask &= cells[key].astype(str) == str(value)
    return cells[mask].iloc[0] if mask.any() else None


def answer_section(cells: pd.DataFrame, fits: pd.DataFrame,
                   contrasts: pd.DataFrame | None) -> Section:
    """The answer first, in a few sentences, each backed by its paired contrast."""
    section = Section("answer", "The answer")
    items: list[str | Item] = []
    labels = optimizer_labels(fits)
    asked = cells[(cells["model"] == "as_asked") & (cells["grid"] == "question")]
    for _, row in asked.iterrows():
        items.append(f"**The question's fit.** The question's model as written, with its "
                     f"settings ({method_label(row['method'])}; "
                     f"{readable_setting(row, labels)}), landed on a single mode in "
                     f"{cell_rate(row, 'single_mode')} of {integer(row['n_fits'])} seeds; "
                     f"median posterior sigma {num(row.get('median_sigma'))} (truth 0.1).")
    if contrasts is not None and not contrasts.empty:
        working = cells[cells["grid"] == "ablation_working"]
        fixes = []

        def compare(model: str, baseline: str, what: str) -> None:
            c = find_contrast(contrasts, working, "model", model, baseline)
            if c is not None:
                fixes.append(f"{what}: " + contrast_text(c, code(model), code(baseline)) + ".")

        for error in (e for e in MODEL_ERRORS if e.model):
            compare(error.model, "as_asked", f"Fixing {error.id} ({error.title}) alone")
        compare("as_asked_fix_all", "as_asked", "Fixing E1-E4 together")
        for error in (e for e in MODEL_ERRORS if e.kept_model):
            compare(error.kept_model, "as_asked_fix_all",
                    f"Keeping {error.id} alone (every other error fixed)")
        if fixes:
            setting = readable_setting(working.iloc[0], labels)
            items.append(Item(f"**Which errors matter**, measured under a setting where the "
                              f"corrected model succeeds ({method_label(working.iloc[0]['method'])}"
                              f"; {setting}), each a paired contrast over the same seeds:",
                              fixes))
    for method in ADVI_METHODS:
        asked_setting = _cell(cells, grid="main", model="marginal", method=method,
                              optimizer="default", init="default")
        if asked_setting is None:
            continue
        item = Item(f"**The corrected model with {method_label(method)}.** With the question's "
                    f"settings ({readable_setting(asked_setting, labels)}) it landed on a "
                    f"single mode in {cell_rate(asked_setting, 'single_mode')}; the others: "
                    f"{other_outcomes_text(asked_setting)}.")
        opt = find_contrast(contrasts, cells[cells["grid"] == "main"], "optimizer",
                            "adam_1e-2", "default", method=method, model="marginal",
                            init="jitter")
        start = find_contrast(contrasts, cells[cells["grid"] == "main"], "init", "jitter",
                              "default", method=method, model="marginal",
                              optimizer="adam_1e-2")
        if opt is not None:
            item.sub.append("Optimiser, from a jittered start: " + contrast_text(
                opt, "adam 1e-2", "the default optimiser") + ".")
        if start is not None:
            item.sub.append("Start, with adam: " + contrast_text(start, "jittered", "symmetric")
                            + ".")
        items.append(item)
    budget = contrasts[(contrasts["axis"] == "iterations")
                       & (contrasts["cell_a"] == contrasts["cell_b"])] \
        if contrasts is not None and not contrasts.empty else pd.DataFrame()
    for _, row in budget.iterrows():
        cell = _cell(cells, cell_id=row["cell_a"])
        if cell is None or cell["optimizer"] != "default":
            continue
        c = oriented(row, row["level_b"])
        items.append(f"**Budget** ({method_label(cell['method'])}, default optimiser, "
                     f"{cell['init']} start, checkpoints of one run per seed): "
                     + contrast_text(c, f"{int(row['level_b'])} iterations",
                                     f"{int(row['level_a'])} iterations") + ".")
    references = []
    for model, chains in (("marginal", 1), ("marginal", 4), ("ordered", 1)):
        row = _cell(cells, method="nuts", model=model, chains=float(chains)) \
            if "chains" in cells else None
        if row is None:
            row = _cell(cells, method="nuts", model=model, chains=chains)
        if row is not None:
            references.append(f"NUTS on `{model}` with {chains} chain(s): single mode in "
                              f"{cell_rate(row, 'single_mode')}, spanning "
                              f"{integer(row['n_spanning'])}/{integer(row['n_fits'])}.")
    if references:
        items.append(Item("**What to do instead.** The references:", references))
    regimes = regime_changes(cells)
    if regimes is not None:
        n, changed = regimes
        items.append(f"**Across data regimes** ({n} comparisons of a one-factor regime with the "
                     "default regime, same setting, Holm-adjusted; section \"Across data "
                     "regimes\"): " + ("the single-mode rate changes at " + "; ".join(changed)
                                       if changed else "no regime changes the single-mode rate "
                                       "detectably") + ".")
    section.items = items or ["This study has none of the cells the answer is drawn from."]
    section.notes.append(
        "Every comparison within one data regime is paired (the same seeds, so the same data "
        "sets, in both cells); intervals are Newcombe's for a paired difference of proportions, "
        "p-values exact McNemar tests, adjusted by Holm over the contrasts of the table at the "
        f"end that can reach p < {ALPHA} at all ({min_discordant(ALPHA)} or more discordant "
        "seeds; the others cannot produce a false claim and are marked as not in the family). "
        "Comparisons across data regimes (different data sets) are of independent "
        "proportions: Newcombe's interval for independent samples, Fisher's exact test, Holm "
        "over the regime map. Rates of "
        "single cells carry 95% Wilson intervals over their seeds; a rate pooled over cells "
        "with different settings (in later sections) says how many cells it pools and has no "
        "interval.")
    return section


STARTS_TITLE = "Starts: what each init kind means for each method"


def _regime_value_text(axis: str, value: float) -> str:
    if axis == "n_obs":
        return f"N = {int(value)}"
    return f"{AXIS_BY_NAME[axis].label} {value:g}"


def regime_changes(cells: pd.DataFrame) -> tuple[int, list[str]] | None:
    """(number of regime-map comparisons, the ones with Holm p < 0.05 as text); None without
    a regime map."""
    from vimodes.contrasts import regime_contrasts

    contrasts = regime_contrasts(cells)
    if contrasts.empty:
        return None
    return len(contrasts), _changed(_sorted_map(contrasts), cells.set_index("cell_id"))


def _sorted_map(contrasts: pd.DataFrame) -> pd.DataFrame:
    return contrasts.sort_values(["regime_axis", "regime_value", "setting"])


def _changed(contrasts: pd.DataFrame, by_id: pd.DataFrame) -> list[str]:
    """The regime-map comparisons with Holm p < 0.05, as text (``by_id``: cells by id)."""
    changed = []
    for _, c in contrasts[contrasts["p_holm"] < 0.05].iterrows():
        cell = by_id.loc[c["cell_id"]]
        others = ", ".join(f"{integer(cell.get(f'n_{name}', 0))} {label}" for name, label in
                           (("collapsed", "collapsed"), ("not_converged", "not converged"))
                           if cell.get(f"n_{name}", 0) > 0)
        changed.append(f"{_regime_value_text(c['regime_axis'], c['regime_value'])} "
                       f"({c['setting']}): {pct(c['rate_a'])} on a single mode against "
                       f"{pct(c['rate_b'])} in the default regime (difference "
                       f"{_points(c['diff'])} points, 95% CI {_points(c['diff_low'])} "
                       f"to {_points(c['diff_high'])}; Holm p {_pvalue(c['p_holm'])})"
                       + (f"; of its {int(c['n_a'])} fits {others}" if others else ""))
    return changed


def regime_section(cells: pd.DataFrame, fits: pd.DataFrame) -> Section:
    """The regime map: each one-factor regime's rates against the default regime's cell of the
    same setting (independent proportions, Holm), where the answer changes, the tolerance each
    regime's classification used, and (unequal weights) which labelling VI prefers."""
    from vimodes.contrasts import regime_contrasts

    section = Section("regimes", "Across data regimes: where the answer changes",
                      figures=figures_in("regimes"))
    contrasts = regime_contrasts(cells)
    if contrasts.empty:
        section.paragraphs.append("This study has no one-factor data regime (see "
                                  "`data_regimes` in the config and `vimodes.regimes`).")
        return section
    section.paragraphs.append(
        "Each regime of the map moves one descriptor of the data (number of points, separation "
        "of the slopes, noise sd, weights, x range) away from the default regime and keeps the "
        "rest. A regime is a different data set for every seed, so its rate is compared with "
        "the default regime's cell of the same setting as two independent proportions "
        "(difference with Newcombe's hybrid score interval, Fisher's exact test, Holm's "
        f"adjustment over all {len(contrasts)} comparisons of the map).")
    rows = []
    by_id = cells.set_index("cell_id")
    contrasts = _sorted_map(contrasts)
    for _, c in contrasts.iterrows():
        label = _regime_value_text(c["regime_axis"], c["regime_value"])
        cell = by_id.loc[c["cell_id"]]
        other = [f"{integer(cell.get(f'n_{name}', 0))}" for name in ("collapsed", "not_converged")]
        rows.append([label, c["setting"], f"{int(c['k_a'])}/{int(c['n_a'])}", *other,
                     f"{int(c['k_b'])}/{int(c['n_b'])}",
                     f"{_points(c['diff'])} ({_points(c['diff_low'])} to "
                     f"{_points(c['diff_high'])})", _pvalue(c["p_holm"])])
    changed = _changed(contrasts, by_id)
    section.tables.append(Table(
        ["regime", "setting", "single mode (regime)", "collapsed", "not converged",
         "single mode (default regime)", "difference, points (95% CI)", "Holm p"], rows,
        "Single-mode fits / fits per regime and setting (and the regime's collapsed and "
        "not-converged fits), against the default regime's cell of the same setting; every "
        "class of every cell is in the table of all cells, each fit's reason in the fit table."))
    if changed:
        section.paragraphs.append("The single-mode rate differs from the default regime "
                                  "(Holm p < 0.05) at: " + "; ".join(changed) + ".")
    else:
        section.paragraphs.append("No regime of the map changes the single-mode rate "
                                  "detectably (every Holm p >= 0.05).")
    stuck = [f"{_regime_value_text(c['regime_axis'], c['regime_value'])} ({c['setting']}): "
             f"{integer(by_id.loc[c['cell_id']].get('n_not_converged', 0))}/{int(c['n_a'])}"
             for _, c in contrasts.iterrows()
             if by_id.loc[c["cell_id"]].get("n_not_converged", 0) > c["n_a"] / 2]
    if "outcome_reason" in fits and "cell_id" in fits:
        map_fits = fits[(fits["level"] == "fit") & fits["cell_id"].isin(contrasts["cell_id"])]
        collapsed = map_fits[map_fits["outcome"] == "collapsed"]
        pruned = collapsed["outcome_reason"].str.startswith("one line through all points")
        if pruned.any():
            where = collapsed[pruned].groupby("data_regime").size()
            section.paragraphs.append(
                f"{int(pruned.sum())} of the map's {len(collapsed)} collapsed fits averaged the "
                "modes by emptying a component (weight near 0) and putting one line through all "
                "points, instead of merging the two slopes: "
                + ", ".join(f"{code(r)} {n}" for r, n in where.items()) + ".")
    if stuck:
        section.paragraphs.append(
            "Mostly not converged (neither on a mode nor at the one-line solution; the fit "
            "table's `outcome_reason` says where each one is): " + "; ".join(stuck) + ".")
    crossed = _crossed_table(cells)
    if crossed is not None:
        section.tables.append(crossed)
    section.notes.extend(_tolerance_notes(fits))
    section.notes.extend(_labelling_notes(cells))
    return section


def _crossed_table(cells: pd.DataFrame) -> Table | None:
    """Regimes that move several descriptors at once (e.g. N x noise x separation in
    config/full.yaml): rates per cell, with their Wilson intervals; they are not compared with
    the default regime (more than one factor changed)."""
    from vimodes.contrasts import setting_label

    if "regime_n_obs" not in cells:
        return None
    rows = cells[cells["regime_axis"].isna() & cells["regime_n_obs"].notna()
                 & (cells["regime_components"] == 2) & cells["components"].isna()]
    if rows.empty:
        return None
    body = []
    for _, r in rows.sort_values(["regime_n_obs", "regime_noise_sd", "regime_separation",
                                  "cell_id"]).iterrows():
        body.append([f"N = {int(r['regime_n_obs'])}, noise {r['regime_noise_sd']:g}, "
                     f"separation {r['regime_separation']:g}, heavier weight "
                     f"{r['regime_heavier_weight']:g}, x width {r['regime_x_width']:g}",
                     setting_label(r), cell_rate(r, "single_mode"), cell_rate(r, "collapsed")])
    return Table(["regime", "setting", "single mode", "collapsed"], body,
                 "Crossed regimes (several descriptors changed at once): rates with 95% Wilson "
                 "intervals over the seeds of each cell.")


def _tolerance_notes(fits: pd.DataFrame) -> list[str]:
    if "slope_tolerance" not in fits:
        return []
    rows = fits[(fits["level"] == "fit") & fits["slope_tolerance"].notna()]
    parts = []
    for regime, group in rows.groupby("data_regime", sort=True):
        sources = sorted(set(group["tolerance_source"].dropna()))
        parts.append(f"{code(regime)} {num(group['slope_tolerance'].median(), 3)} "
                     f"({', '.join(s.replace('_', ' ') for s in sources)})")
    if not parts:
        return []
    return ["Slope tolerance of the classifier per regime (the smallest over the components; "
            "max(5 reference posterior sds, 5% of the separation), the reference sd from the "
            "regime's single-chain NUTS fits where the study has them, else the asymptotic "
            "sd): " + "; ".join(parts) + "."]


def _labelling_notes(cells: pd.DataFrame) -> list[str]:
    """Unequal weights make the two labellings distinguishable (mode A: model component 0 is
    the heavier true component). The model and the starts are exchangeable, so no preference is
    expected; the exact binomial test per cell says whether one shows."""
    from vimodes.contrasts import holm_adjust

    if "regime_axis" not in cells:
        return []
    rows = cells[(cells["regime_axis"] == "heavier_weight")
                 & cells["p_equal_modes"].notna()].sort_values("cell_id")
    if rows.empty:
        return []
    adjusted = holm_adjust(rows["p_equal_modes"].to_numpy(dtype=float))
    parts = [f"{code(r['cell_id'])}: {integer(r['n_mode_A'])} heavier-first vs "
             f"{integer(r['n_mode_B'])} lighter-first (Holm p {_pvalue(p)})"
             for (_, r), p in zip(rows.iterrows(), adjusted)]
    preferred = [r for (_, r), p in zip(rows.iterrows(), adjusted) if p < 0.05]
    verdict = ("VI prefers one labelling in " + ", ".join(code(r["cell_id"]) for r in preferred)
               if preferred else "no cell shows a preference for either labelling")
    return ["With unequal weights the two single modes are distinguishable: mode A gives model "
            "component 0 the heavier true component. Among the single-mode fits, "
            + "; ".join(parts) + f": {verdict} (exact binomial test of A vs B, Holm over these "
            "cells)."]


K_CLASSES = ("single_mode", "spanning", "partial_collapse", "collapsed", "not_converged",
             "failed")
OVERFIT_CLASSES = ("overfit_empty", "overfit_duplicated", "single_mode", "spanning",
                   "collapsed", "not_converged", "failed")


def components_section(cells: pd.DataFrame) -> Section:
    """K = 3 against K = 2, same settings: three-component data fitted with three components
    (compared with the default regime's K = 2 cell of the same setting as independent
    proportions, Holm), and the classes of an over-fitted K = 3 model on the K = 2 data."""
    from vimodes.contrasts import (CONTRAST_AXES, holm_adjust, independent_contrast,
                                   setting_key, setting_label)

    section = Section("components", "K components: three lines instead of two")
    if "regime_components" not in cells:
        section.paragraphs.append("The cell table has no data-regime descriptors; rerun the "
                                  "aggregation.")
        return section
    data_k = cells["regime_components"]
    model_k = cells["components"].fillna(data_k) if "components" in cells else data_k

    def key(row):  # the setting without the model's K: K = 3 is compared with K = 2
        return setting_key(row, CONTRAST_AXES)

    base = {key(r): r for _, r in cells[(cells["regime_axis"] == "base")
                                        & cells["components"].isna()].iterrows()}
    k3 = cells[(data_k == 3) & (model_k == 3)]
    rows, contrasts = [], []
    for _, r in k3.sort_values("cell_id").iterrows():
        b = base.get(key(r))
        c = (independent_contrast(int(r["n_single_mode"]), int(r["n_fits"]),
                                  int(b["n_single_mode"]), int(b["n_fits"]))
             if b is not None else None)
        contrasts.append(c)
        rows.append((r, b, c))
    adjusted = holm_adjust([c["p_fisher"] if c else float("nan") for c in contrasts]) \
        if contrasts else []
    table = []
    statements = []
    for (r, b, c), p in zip(rows, adjusted):
        table.append([setting_label(r), code(r["data_regime"]),
                      *[cell_rate(r, label) for label in K_CLASSES],
                      cell_rate(b, "single_mode") if b is not None else "–",
                      (f"{_points(c['diff'])} ({_points(c['diff_low'])} to "
                       f"{_points(c['diff_high'])}); Holm p {_pvalue(p)}") if c else "–"])
        if c:
            statements.append(f"{setting_label(r)}: {pct(c['rate_a'])} with K = 3 against "
                              f"{pct(c['rate_b'])} with K = 2 ("
                              + ("a difference" if p < 0.05 else "no difference detectable")
                              + f": {_points(c['diff'])} points, 95% CI "
                              f"{_points(c['diff_low'])} to {_points(c['diff_high'])}; "
                              f"Holm p {_pvalue(p)})")
    if table:
        section.paragraphs.append(
            "With K = 3 components there are 3! = 6 labellings; a fit is on a single mode when "
            "its draws sit in one labelling's basin (optimal assignment of model to true "
            "components). Single-mode rates with three-component data against the default "
            "regime's two-component data, same setting (different data sets: independent "
            "proportions, Newcombe's interval, Fisher's test, Holm over these rows): "
            + "; ".join(statements) + ".")
        section.tables.append(Table(
            ["setting", "data", *[OUTCOME_LABELS.get(c, c.replace("_", " ")) for c in K_CLASSES],
             "K = 2, same setting: single mode", "difference, points (95% CI)"], table,
            "K = 3 data fitted with K = 3 components; rates with 95% Wilson intervals."))
    over = cells[(data_k == 2) & (model_k == 3)]
    if not over.empty:
        body = []
        for _, r in over.sort_values("cell_id").iterrows():
            b = base.get(key(r))
            body.append([setting_label(r), *[cell_rate(r, label) for label in OVERFIT_CLASSES],
                         cell_rate(b, "single_mode") if b is not None else "–"])
        section.tables.append(Table(
            ["setting", *[OUTCOME_LABELS.get(c, c.replace("_", " ")) for c in OVERFIT_CLASSES],
             "K = 2 model, same data: single mode"], body,
            "An over-fitted K = 3 model on the two-component data: recovering the truth with the "
            "extra component empty, or with one true line shared by two components, is the "
            "over-fitted model's success. The last column, the K = 2 model on the same data "
            "sets, is shown beside it and not tested against it: success is a different class "
            "for the two models."))
    if not section.tables:
        section.paragraphs.append("This study has no K = 3 cell.")
    return section


def starts_section(cells: pd.DataFrame) -> Section:
    """The methods part's table of starting points (one vocabulary: the method registry, vimodes.methods)."""
    section = Section("starts", STARTS_TITLE)
    section.paragraphs.append(
        "An init level of the config names a kind (`default`, `jitter`, `prior`) and a scale "
        "s. What the kind means depends on what the method starts from; every method starts "
        "from PyMC's initial point or a seeded spread around it. The marginal model's initial "
        "point has both slopes at 0, the symmetric point between the two labellings. The "
        "ordered model cannot start there (its transform needs distinct slopes); it starts at "
        "(-0.5, 0.5): centred on the prior mean, unconstrained log-gap 0, no true slope and "
        "no labelling favoured, the same information as the marginal model's start.")
    methods = list(METHOD_ORDER)
    used = set(cells["method"]) if "method" in cells else set()
    section.tables.append(Table(
        ["method", *[code(kind) for kind in INIT_KINDS]],
        [[method_label(m) + ("" if m in used else " (not in this study)"),
          *[init_meaning(m, kind) for kind in INIT_KINDS]] for m in methods],
        "Starting points per method and init kind (both VI engines share the ADVI starts)."))
    return section


def engine_section(cells: pd.DataFrame, contrasts: pd.DataFrame | None) -> Section:
    """PyMC's engine against the vectorised one on the same cells and seeds."""
    section = Section("engines", "Cross-check: PyMC's engine against the vectorised engine")
    rows = contrasts[contrasts["axis"] == "engine"] if contrasts is not None and \
        not contrasts.empty else pd.DataFrame()
    if rows.empty:
        section.paragraphs.append("This study runs no cell on both engines.")
        return section
    table, disagree = [], []
    for _, row in rows.iterrows():
        c = oriented(row, "pymc")
        n = int(c["n_pairs"])
        table.append([code(c["cell_a"]), str(n), f"{round(c['rate_a'] * n)}/{n}",
                      f"{round(c['rate_b'] * n)}/{n}",
                      f"{_points(c['diff'])} ({_points(c['diff_low'])} to "
                      f"{_points(c['diff_high'])})", _pvalue(c["p_mcnemar"]),
                      _pvalue(c["p_holm"]) if c.get("in_family", True) else "–"])
        if c["p_holm"] < ALPHA:
            disagree.append(code(c["cell_a"]))
    section.tables.append(Table(
        ["cell (PyMC engine)", "paired seeds", "PyMC single mode", "vectorised single mode",
         "difference, points (95% CI)", "McNemar p", "Holm p"], table,
        "The same cells fitted by both engines on the same seeds and data sets. The engines "
        "draw different random numbers, so they agree in distribution, not fit by fit."))
    section.paragraphs.append(
        f"Of {len(rows)} cells run by both engines, "
        + (f"the engines disagree beyond chance (Holm-adjusted p < {ALPHA}) on "
           f"{', '.join(disagree)}." if disagree else
           f"none differs beyond chance (no Holm-adjusted p below {ALPHA})."))
    return section


def adam_section(fits: pd.DataFrame) -> Section:
    """Every ADVI fit of the corrected models under adam that is not on a single mode, per
    cell: its class, where its centre is and how much of its mass lies in that basin."""
    section = Section("adam", "Why some adam fits are not on a single mode",
                      figures=figures_in("adam"))
    rows = adam_fit_rows(fits)
    if rows.empty:
        section.paragraphs.append("This study has no ADVI fit of the corrected models with adam.")
        return section
    rows["single"] = rows["outcome"].isin(SINGLE_MODE_CLASSES)
    table, sentences = [], []
    for cell_id, sub in sorted(rows.groupby("cell_id"), key=lambda kv: kv[0]):
        other = sub[~sub["single"]]
        counts = other["outcome"].value_counts()
        on_mode = other["centre_class"].astype(str).str.startswith("mode").sum() \
            if "centre_class" in other else 0
        single = sub[sub["single"]]
        sigma_single = numeric(single, "sigma_mean").median()
        sigma_other = numeric(other, "sigma_mean").median()
        elbo_gap = numeric(other, "elbo_full").median() - numeric(single, "elbo_full").median()
        centres = other["centre_class"].value_counts() if "centre_class" in other else {}
        table.append([
            code(cell_id), integer(len(sub)), integer(int(sub["single"].sum())),
            "; ".join(f"{OUTCOME_LABELS.get(k, k)} {v}" for k, v in counts.items()) or "-",
            "; ".join(f"{k} {v}" for k, v in centres.items()) if len(other) else "-",
            num(numeric(other, "centre_mass").median()) if len(other) else "-",
            num(numeric(single, "slope_sd_max").median()),
            num(numeric(other, "slope_sd_max").median()) if len(other) else "-",
            f"{num(sigma_single)} / {num(sigma_other)}" if len(other) else num(sigma_single),
            num(elbo_gap) if len(other) else "-"])
        if len(other):
            top, n_top = counts.index[0], int(counts.iloc[0])
            sentence = (f"`{cell_id}`: {len(other)} of {len(sub)} not single mode, {n_top} of "
                        f"them {OUTCOME_LABELS.get(top, top)}; centre on a mode in {on_mode}")
            if math.isfinite(sigma_other) and math.isfinite(sigma_single):
                sentence += (f"; their median sigma {num(sigma_other)} against "
                             f"{num(sigma_single)} in the single-mode fits")
            if math.isfinite(elbo_gap):
                sentence += (f"; median full-data ELBO {num(elbo_gap)} relative to the "
                             f"single-mode fits' median")
            sentences.append(sentence)
    n_other = int((~rows["single"]).sum())
    section.paragraphs.append(
        f"{n_other} of {len(rows)} ADVI fits of the corrected models with adam (every step size, "
        f"start and budget of the study) are not on a single mode. The table splits them by "
        f"class and says where their centre is (the class of the approximation's mean) and how "
        f"much of the mass lies in that basin (the share of the draws in the centre's basin, or "
        f"in the collapsed region for a symmetric centre; none for a centre elsewhere); the "
        f"slope sd, sigma and full-data ELBO columns compare them with the single-mode fits of "
        f"the same cell. A fit whose sigma stays near the spread of y and whose ELBO is far below "
        f"the single-mode fits' has stopped in a wide, high-noise solution of the ELBO: an "
        f"optimisation outcome, which the classifier reports as it is.")
    if sentences:
        section.items = [s + "." for s in sentences]
    section.tables.append(Table(
        ["cell", "fits", "single mode", "the others, by class", "centre of the others",
         "median mass in the centre's region (others)", "median slope sd (single)",
         "median slope sd (others)", "median sigma (single / others)",
         "full-data ELBO, others - single (medians)"],
        table, "ADVI with adam on the corrected models: the fits that are not on a single mode."))
    return section


def budget_section(fits: pd.DataFrame) -> Section:
    """Single-mode and collapsed shares at each checkpoint of the long runs."""
    section = Section("budget", "Budget, optimiser and start, deconfounded",
                      figures=figures_in("budget"))
    curves = checkpoint_curves(fits)
    if curves.empty:
        section.paragraphs.append("No cell of this study stored checkpoints.")
        return section
    budgets = sorted(curves["iteration"].unique())
    rows = []
    for cell_id, group in curves.groupby("cell_id", sort=True):
        by = group.set_index("iteration")
        first = group.iloc[0]
        rows.append([code(first["method"]), code(first["optimizer"]), code(first["init"])]
                    + [f"{integer(by.loc[b, 'n_single_mode'])}/{integer(by.loc[b, 'n_fits'])}"
                       f" ({integer(by.loc[b, 'n_collapsed'])})" if b in by.index else "–"
                       for b in budgets])
    section.tables.append(Table(
        ["method", "optimiser", "start"] + [f"{int(b)} it." for b in budgets], rows,
        "Fits on a single mode / fits (in brackets: still collapsed) at each checkpoint of one "
        "long run per seed; a checkpoint is what a run of that many iterations returns."))
    section.paragraphs.append(
        "PyMC's default optimiser is only run for 10000 iterations in the question. These runs "
        "go on to the longest budget from both starts, so that the optimiser, the budget and "
        "the start are no longer confounded; the paired budget contrasts (shortest vs longest "
        "checkpoint of the same runs) are in the contrast table.")
    return section


def contrasts_section(contrasts: pd.DataFrame | None) -> Section:
    section = Section("contrasts", "Every paired contrast")
    if contrasts is None or contrasts.empty:
        section.paragraphs.append("No pair of cells differs in exactly one factor.")
        return section
    rows = []
    for _, c in contrasts.sort_values(["axis", "cell_a"]).iterrows():
        n = int(c["n_pairs"])
        same_runs = " (checkpoints of one run)" if c["cell_a"] == c["cell_b"] else ""
        rows.append([c["axis"], f"{c['level_a']} vs {c['level_b']}{same_runs}", c["shared"],
                     str(n),
                     f"{round(c['rate_a'] * n)} vs {round(c['rate_b'] * n)}",
                     f"{_points(c['diff'])} ({_points(c['diff_low'])} to "
                     f"{_points(c['diff_high'])})", _pvalue(c["p_mcnemar"]),
                     (_pvalue(c["p_holm"]) if c.get("in_family", True)
                      else f"– ({int(c['n_01'] + c['n_10'])} discordant)")
                     + (" (deterministic)" if c.get("deterministic") else "")])
    in_family = int(contrasts["in_family"].sum()) if "in_family" in contrasts else len(contrasts)
    section.tables.append(Table(
        ["factor", "levels (a vs b)", "held fixed", "seeds", "single mode (a vs b)",
         "difference, points (95% CI)", "McNemar p", "Holm p"], rows,
        f"All {len(contrasts)} pairs of cells of one data regime that differ in exactly one "
        "factor, matched on seed (and, for the budget, the checkpoints of the same runs). "
        f"Holm's adjustment runs over the {in_family} contrasts whose exact test can reach "
        f"p < {ALPHA} at all (at least {min_discordant(ALPHA)} discordant seeds); with "
        "fewer, no split of the "
        "discordant seeds is significant, so those contrasts (marked –) cannot produce a false "
        "claim and are left out of the family (Tarone 1990)."))
    return section


# ---------------------------------------------------------------------------------------------
# Context and rendering

class _FigureInfo(Mapping):
    """name -> (title, caption) of every figure of the registry, read live (a figure registered
    after this import is included); the templates read it as ``figure_info``."""

    def __getitem__(self, name: str) -> tuple[str, str]:
        spec = FIGURE_SPECS[name]
        return spec.title, spec.caption

    def __iter__(self):
        return iter(FIGURE_SPECS)

    def __len__(self) -> int:
        return len(FIGURE_SPECS)


FIGURE_INFO = _FigureInfo()


def build_context(cells: pd.DataFrame, fits: pd.DataFrame, data_summary: pd.DataFrame,
                  provenance: dict, contrasts: pd.DataFrame | None = None) -> dict:
    sections = [
        answer_section(cells, fits, contrasts),
        headline_section(cells),
        question_section(fits, data_summary),
        budget_section(fits),
        regime_section(cells, fits),
        components_section(cells),
        adam_section(fits),
        factor_section(cells, fits),
        reference_section(cells, fits),
        other_methods_section(cells),
        diagnostics_section(fits),
        starts_section(cells),
        engine_section(cells, contrasts),
        runtime_section(fits),
        contrasts_section(contrasts),
        reproduce_section(fits, provenance),
    ]
    # a registered figure whose section is not above is still shown, before "How to reproduce"
    shown = {name for section in sections for name in section.figures}
    other = [name for name in FIGURE_SPECS if name not in shown]
    if other:
        sections.insert(-1, Section("other_figures", "Other figures", figures=other))
    n_fits = int(cells["n_fits"].sum()) if len(cells) else 0
    return {
        "title": f"Where does VI land? Study {provenance.get('study_name', '')}".strip(),
        "subtitle": (f"{n_fits} fits in {len(cells)} cells; a 2-component mixture of linear "
                     f"regressions, posterior modes counted per fit."),
        "sections": sections,
        "figure_info": FIGURE_INFO,
        "provenance": provenance,
    }


# CommonMark without raw HTML: the report's text is Markdown (report.md shows it as written),
# and the HTML report renders the same text the same way; anything like a tag is escaped
_INLINE_MARKDOWN = MarkdownIt("commonmark", {"html": False})


def inline_html(text: str) -> str:
    """One line of the report's Markdown (`code`, **bold**, ...) as escaped inline HTML."""
    return _INLINE_MARKDOWN.renderInline(str(text))


def md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def figure_data_uri(path: str | Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render(context: dict, template_dir: str | Path, template: str) -> str:
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True)
    env.filters["inline"] = lambda text: Markup(inline_html(text))
    return env.get_template(template).render(**context)


def _write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)


def default_provenance(study_name: str = "", config_hash: str = "", seed_base=None,
                       command: str = "", figures_command: str = "") -> dict:
    return {
        "study_name": study_name, "config_hash": config_hash, "seed_base": seed_base,
        "command": command, "figures_command": figures_command,
        "versions": package_versions(),
        "platform": f"{platform.platform()} ({platform.machine()})",
        "cpus": os.cpu_count(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def report_tables(cells: pd.DataFrame, fits: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Machine-readable companions of the report's main tables (numbers, not text)."""
    vi = sort_cells(cells[cells["method"].isin(ADVI_METHODS)])
    keep = [c for c in ("cell_id", "model", "method", "optimizer", "iterations", "init",
                        "batch_size", "n_fits", "n_single_mode", "rate_single_mode",
                        "rate_single_mode_low", "rate_single_mode_high", "n_mode_A", "n_mode_B",
                        "n_mode_too_wide", "n_spanning", "n_collapsed", "n_not_converged",
                        "n_failed", "median_sigma", "median_fit_seconds") if c in vi]
    rows = question_comparison_rows(fits)
    question = []
    for model in ordered(rows["model"], MODEL_ORDER):
        s = model_summary(rows[rows["model"] == model])
        low, high = s["single"].interval
        question.append({"model": model, "n_fits": s["fits"], "n_single_mode": s["single"].k,
                         "rate_single_mode": s["single"].rate, "rate_single_mode_low": low,
                         "rate_single_mode_high": high, "median_sigma": s["sigma"],
                         "median_slope_abs_error": s["slope_error"],
                         "median_slope_sd": s["slope_sd"],
                         "median_weight_abs_error": s["weight_error"]})
    return {"headline": vi[keep],
            "question": pd.DataFrame(question, columns=[
                "model", "n_fits", "n_single_mode", "rate_single_mode", "rate_single_mode_low",
                "rate_single_mode_high", "median_sigma", "median_slope_abs_error",
                "median_slope_sd", "median_weight_abs_error"])}


def write_report(cells_path, fits_path, data_summary_path, figures: dict[str, str | Path],
                 template_dir: str | Path, html_path, md_path, provenance: dict,
                 table_paths: dict[str, str | Path] | None = None,
                 mechanism_path: str | Path | None = None,
                 contrasts_path: str | Path | None = None) -> dict:
    """Render report.html (figures embedded) and report.md (figures linked) from the tables."""
    cells = pd.read_parquet(cells_path)
    fits = pd.read_parquet(fits_path)
    data_summary = pd.read_parquet(data_summary_path)
    contrasts = pd.read_parquet(contrasts_path) if contrasts_path is not None else None
    context = build_context(cells, fits, data_summary, provenance, contrasts)
    if mechanism_path is not None:  # before "How to reproduce", which stays last
        context["sections"].insert(-1, mechanism_section(pd.read_parquet(mechanism_path),
                                                         fits))
    md_dir = Path(md_path).resolve().parent
    context["figures"] = {
        name: {"uri": figure_data_uri(path),
               "link": os.path.relpath(Path(path).resolve(), md_dir),
               "svg_link": os.path.relpath(Path(path).resolve().with_suffix(".svg"), md_dir)}
        for name, path in figures.items()}
    for section in context["sections"]:
        section.figures = [f for f in section.figures if f in figures]
    _write_text(html_path, render(context, template_dir, "report.html.j2"))
    _write_text(md_path, render(context, template_dir, "report.md.j2"))
    for name, path in (table_paths or {}).items():
        frame = report_tables(cells, fits)[name]
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
            os.chmod(tmp, 0o644)
    return context


README_START = "<!-- results:start (generated by `make readme` from report/report.md) -->"
README_END = "<!-- results:end -->"


README_SECTIONS = ("The answer", STARTS_TITLE)


def update_readme(report_md: str | Path, readme: str | Path) -> str:
    """Replace the README's results block with the report's answer section and its table of
    starts, so that the summary a reader sees first is regenerated from the tables, never
    edited by hand."""
    text = Path(report_md).read_text()
    parts = []
    for title in README_SECTIONS:
        match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
        if match is None:
            raise ValueError(f"'{report_md}' has no '## {title}' section")
        parts.append(match.group(1).strip() if title == README_SECTIONS[0]
                     else f"### {title}\n\n{match.group(1).strip()}")
    report_title = text.splitlines()[0].lstrip("# ").strip()
    body = (f"{README_START}\nFrom *{report_title}* (`report/report.md`):\n\n"
            + "\n\n".join(parts) + f"\n{README_END}")
    readme_text = Path(readme).read_text()
    if README_START not in readme_text or README_END not in readme_text:
        raise ValueError(f"'{readme}' has no results block ({README_START} ... {README_END})")
    head, rest = readme_text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    updated = head + body + tail
    Path(readme).write_text(updated)
    return updated


def headline_console(cells_csv: str | Path, report_path: str | Path | None = None) -> str:
    """The headline table for the terminal (printed by the Snakefile's ``onsuccess``)."""
    cells_csv = Path(cells_csv)
    if not cells_csv.is_file():
        return f"(no {cells_csv}: no cell table yet)"
    cells = sort_cells(pd.read_csv(cells_csv))
    width = max([len("cell")] + [len(str(c)) for c in cells["cell_id"]])
    lines = [f"{'cell':<{width}}  {'fits':>4}  single mode (95% CI)                 "
             "too wide  collapsed  not conv.  failed"]
    for _, row in cells.iterrows():
        lines.append(f"{row['cell_id']:<{width}}  {int(row['n_fits']):>4}  "
                     f"{cell_rate(row, 'single_mode'):<36} "
                     f"{integer(row.get('n_mode_too_wide')):>8}  {int(row['n_collapsed']):>9}  "
                     f"{int(row['n_not_converged']):>9}  {int(row['n_failed']):>6}")
    if report_path is not None:
        path = Path(report_path)
        lines.append(f"Report: {path.resolve()}" if path.is_file()
                     else f"Report: {path} (not built by this run)")
    return "\n".join(lines)

