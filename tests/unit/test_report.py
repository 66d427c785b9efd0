"""Figures and report from small constructed tables: numbers come from the tables, figures are
byte-identical on rerun, the HTML embeds every figure."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from helpers import REPO, SMOKE, one_worker
from vimodes import figure_tables as tables_layer
from vimodes import plots, report, vocabulary, workflow_plan
from vimodes.classify import OUTCOME_CLASSES
from vimodes.pipeline import HEADLINE_CLASSES, summarise_cells

pytestmark = one_worker(__name__)

TEMPLATES = REPO / "workflow" / "report"

# (model, method, optimizer, outcomes of the fits)
CELLS = [
    ("as_asked", "advi", "default", ["not_converged"] * 4),
    ("as_asked", "fullrank_advi", "default", ["not_converged"] * 3 + ["failed"]),
    ("as_asked_fix_mixture", "advi", "default", ["mode_A", "collapsed", "collapsed", "mode_B"]),
    ("marginal", "advi", "default", ["collapsed", "mode_too_wide", "mode_A", "not_converged"]),
    ("marginal", "advi", "adam", ["mode_A", "mode_B", "mode_B", "mode_A"]),
    ("marginal", "fullrank_advi", "adam", ["mode_A", "spanning", "not_converged", "failed"]),
    ("ordered", "advi", "adam", ["mode_B", "mode_B", "mode_B", "failed"]),
    ("marginal", "cavi", "none", ["mode_A", "mode_B", "mode_A", "mode_A"]),
]
SIGMA = {"as_asked": 0.93, "as_asked_fix_mixture": 0.35, "marginal": 0.1, "ordered": 0.1}


def _fit_row(model, method, optimizer, seed, outcome):
    vi = method in ("advi", "fullrank_advi")
    cell_id = "__".join([model, method] + ([optimizer, "it1000", "init-jitter", "b128"] if vi
                                           else ["it200", "init-jitter"]))
    ok = outcome != "failed"
    sigma = SIGMA[model] * (1 + 0.1 * seed) if ok else np.nan
    minority = {"mode_A": 0.02 * seed, "mode_B": 0.02 * seed, "spanning": 0.3,
                "mode_too_wide": 0.0}.get(outcome, np.nan)
    return {
        "cell_id": cell_id, "grid": "question" if model.startswith("as_asked") else "main",
        "model": model, "method": method, "optimizer": optimizer,
        "optimizer_name": {"default": "adagrad_window", "adam": "adam"}.get(optimizer),
        "learning_rate": {"default": 0.001, "adam": 0.01}.get(optimizer, np.nan),
        "iterations": 1000.0 if vi else 200.0, "init": "jitter",
        "batch_size": 128.0 if vi else np.nan, "chains": np.nan, "data_regime": "default",
        "seed": seed, "status": "ok" if ok else "failed", "level": "fit", "chain": -1,
        "outcome": outcome, "fit_seconds": 0.5 + seed, "setup_seconds": 3.0,
        "psis_khat": (0.4 + seed) if vi and ok else np.nan, "sigma_mean": sigma,
        "sigma_abs_error": abs(sigma - 0.1) if ok else np.nan,
        "slope_abs_error": (0.01 if outcome in ("mode_A", "mode_B") else 2.0) if ok else np.nan,
        "weight_abs_error": 0.02 if ok else np.nan,
        "slopes_0_mean": 3.0 if ok else np.nan, "slopes_1_mean": -1.0 if ok else np.nan,
        "slopes_0_sd": 0.01 * (seed + 1) if ok else np.nan,
        "slopes_1_sd": 0.01 * (seed + 1) if ok else np.nan,
        "minority_share": minority, "n_obs": 100000, "config_hash": "abc123", "version_pymc": "5.28.5",
        "stopped_early": False, "divergences": np.nan, "rhat_max_raw": np.nan,
        "rhat_max_relabelled": np.nan,
    }


def _nuts_rows():
    rows = []
    for chains, labels in ((1, [["mode_A"], ["mode_B"]]), (2, [["mode_A", "mode_B"],
                                                               ["mode_B", "mode_B"]])):
        for seed, chain_labels in enumerate(labels):
            base = _fit_row("marginal", "cavi", "none", seed, "mode_A")
            base.update(cell_id=f"marginal__nuts__c{chains}", grid="nuts", method="nuts",
                        iterations=np.nan, init="none", chains=float(chains),
                        outcome="spanning" if len(set(chain_labels)) > 1 else chain_labels[0],
                        divergences=float(seed), rhat_max_raw=1.8 if chains > 1 else np.nan,
                        rhat_max_relabelled=1.01 if chains > 1 else np.nan)
            rows.append(base)
            if chains > 1:
                rows += [{**base, "level": "chain", "chain": c, "outcome": label}
                         for c, label in enumerate(chain_labels)]
    return rows


@pytest.fixture(scope="module")
def fits() -> pd.DataFrame:
    rows = [_fit_row(model, method, opt, seed, outcome)
            for model, method, opt, outcomes in CELLS for seed, outcome in enumerate(outcomes)]
    return pd.DataFrame(rows + _nuts_rows())


@pytest.fixture(scope="module")
def cells(fits) -> pd.DataFrame:
    return summarise_cells(fits)


@pytest.fixture(scope="module")
def data_summary() -> pd.DataFrame:
    return pd.DataFrame([{
        "seed": 0, "n_obs": 100000, "true_slope_0": 3.0, "true_slope_1": -1.0,
        "true_weight_0": 0.5, "true_weight_1": 0.5, "noise_sd": 0.1, "x_low": -1.0,
        "x_high": 1.0, "ols_slope": 0.9967, "ols_residual_sd": 1.1569,
        "log_density_truth": 0.0, "log_density_one_line": -1e6, "grid_low": -3.5,
        "grid_high": 5.5, "grid_points": 10, "slope_prior_sd": 2.0}])


@pytest.fixture(scope="module")
def figure_tables(fits, cells, data_summary) -> dict[str, pd.DataFrame]:
    grid = np.linspace(-3.5, 5.5, 10)
    w0, w1 = np.meshgrid(grid, grid, indexing="ij")
    delta = (w0 - 3) ** 2 * (w1 + 1) ** 2 * 100
    traces = pd.DataFrame({"cell_id": "marginal__advi__adam__it1000__init-jitter__b128",
                           "seed": np.repeat([0, 1], 5), "model": "marginal", "method": "advi",
                           "optimizer": "adam", "outcome": np.repeat(["mode_A", "mode_B"], 5),
                           "iteration": np.tile(np.arange(1, 6) * 100, 2),
                           "loss": np.tile([500.0, 100.0, 10.0, -5.0, -20.0], 2)})
    draws = pd.DataFrame({"cell_id": "marginal__advi__adam__it1000__init-jitter__b128",
                          "seed": 0, "model": "marginal", "method": "advi", "outcome": "mode_A",
                          "draw": np.arange(20), "chain": 0,
                          "slope_0": 3 + 0.01 * np.arange(20), "slope_1": -1.0,
                          "weight_0": 0.5, "sigma": 0.1})
    # 4 chains, chains 0 and 2 in mode A (slopes 3, -1), chains 1 and 3 in mode B
    chain, draw = np.divmod(np.arange(40), 10)
    nuts = pd.concat([pd.DataFrame({"cell_id": "marginal__nuts__c4", "seed": 0, "chain": chain,
                                    "draw": draw, "variable": f"slopes[{k}]",
                                    "value": np.where(chain % 2 == k, 3.0, -1.0) + 0.01 * draw})
                      for k in range(2)], ignore_index=True)
    return {"cells": cells, "fits": fits, "data_summary": data_summary,
            "loss_traces": traces, "representative_draws": draws, "nuts_chain_draws": nuts,
            "posterior_grid": pd.DataFrame({"w0": w0.ravel(), "w1": w1.ravel(),
                                            "log_density": -delta.ravel(),
                                            "delta": delta.ravel()})}


def _inputs(tmp_path: Path, tables: dict[str, pd.DataFrame], name: str) -> dict[str, Path]:
    import inspect

    out = {}
    for arg in inspect.signature(plots.FIGURES[name]).parameters:
        path = tmp_path / f"{arg}.parquet"
        if not path.exists():
            tables[arg].to_parquet(path)
        out[arg] = path
    return out


# --- cell table --------------------------------------------------------------------------------


def test_too_wide_is_counted_but_not_single_mode(cells):
    cell = cells[cells["cell_id"] == "marginal__advi__default__it1000__init-jitter__b128"].iloc[0]
    assert cell["n_mode_too_wide"] == 1 and cell["n_single_mode"] == 1
    assert cell["rate_mode_too_wide"] == 0.25
    assert (cells[[f"n_{c}" for c in HEADLINE_CLASSES]].sum(axis=1) == cells["n_fits"]).all()
    assert vocabulary.OUTCOME_ORDER == HEADLINE_CLASSES == OUTCOME_CLASSES


def test_equal_modes_test_is_nan_for_the_ordered_model(cells, fits):
    from vimodes.model_specs import MODEL_SPECS

    ordered_cells = cells[cells["model"].map(lambda m: MODEL_SPECS[m].ordered)]
    assert len(ordered_cells) == 1 and ordered_cells["n_mode_B"].iloc[0] == 3
    assert ordered_cells["p_equal_modes"].isna().all()
    exchangeable = cells[cells["cell_id"] == "marginal__advi__adam__it1000__init-jitter__b128"]
    assert exchangeable["p_equal_modes"].iloc[0] == pytest.approx(1.0)
    # the report never shows the test, so it cannot show it for the ordered model
    context = report.build_context(cells, fits, fits.iloc[:0], report.default_provenance("t"))
    text = json.dumps([vars(s) for s in context["sections"]], default=vars)
    assert "p_equal" not in text and "equally likely" not in text
    assert "p_equal_modes" not in report.report_tables(cells, fits)["headline"]


# --- report numbers ----------------------------------------------------------------------------


def test_cell_counts_equal_hand_counts_of_the_fixture(cells):
    """The counting function against counts made by hand from CELLS and _nuts_rows (fit level
    only): single mode is mode A + mode B, never spanning, too wide or collapsed."""
    expected = {  # cell -> (fits, single mode, spanning, too wide, collapsed, failed)
        "as_asked__advi__default__it1000__init-jitter__b128": (4, 0, 0, 0, 0, 0),
        "as_asked__fullrank_advi__default__it1000__init-jitter__b128": (4, 0, 0, 0, 0, 1),
        "as_asked_fix_mixture__advi__default__it1000__init-jitter__b128": (4, 2, 0, 0, 2, 0),
        "marginal__advi__default__it1000__init-jitter__b128": (4, 1, 0, 1, 1, 0),
        "marginal__advi__adam__it1000__init-jitter__b128": (4, 4, 0, 0, 0, 0),
        "marginal__fullrank_advi__adam__it1000__init-jitter__b128": (4, 1, 1, 0, 0, 1),
        "ordered__advi__adam__it1000__init-jitter__b128": (4, 3, 0, 0, 0, 1),
        "marginal__cavi__it200__init-jitter": (4, 4, 0, 0, 0, 0),
        "marginal__nuts__c1": (2, 2, 0, 0, 0, 0),
        "marginal__nuts__c2": (2, 1, 1, 0, 0, 0),
    }
    found = {row["cell_id"]: (row["n_fits"], row["n_single_mode"], row["n_spanning"],
                              row["n_mode_too_wide"], row["n_collapsed"], row["n_failed"])
             for _, row in cells.iterrows()}
    assert found == expected


def test_headline_table_numbers_equal_cell_table(cells):
    table = report.headline_table(cells)
    vi = cells[cells["method"].isin(["advi", "fullrank_advi"])]
    assert len(table.rows) == len(vi)
    rate_column = table.columns.index("single mode (95% CI)")
    for row in table.rows:
        model = row[0].strip("`")
        setting = row[2]
        match = vi[(vi["model"] == model) & (vi["cell_id"].str.endswith(setting.replace(" ", "__")))
                   & (vi["method"].map(vocabulary.method_label) == row[1])]
        assert len(match) == 1
        cell = match.iloc[0]
        k, n = int(cell["n_single_mode"]), int(cell["n_fits"])
        expected = (f"{k}/{n} ({100 * cell['rate_single_mode']:.0f}%, 95% CI "
                    f"{100 * cell['rate_single_mode_low']:.0f}%–"
                    f"{100 * cell['rate_single_mode_high']:.0f}%)")
        assert row[rate_column] == expected
        assert row[table.columns.index("fits")] == str(n)
        assert row[table.columns.index("collapsed")] == str(int(cell["n_collapsed"]))
        assert row[table.columns.index("too wide")] == str(int(cell["n_mode_too_wide"]))


def test_headline_never_pools_rates_over_cells(cells):
    # a rate pooled over cells with different settings only reflects the grid's mix: the
    # headline names the per-cell range and leaves every rate to its own cell
    section = report.headline_section(cells)
    text = section.paragraphs[0]
    vi = cells[cells["method"].isin(report.ADVI_METHODS)]
    for method in ("advi", "fullrank_advi"):
        sub = cells[(cells["model"] == "marginal") & (cells["method"] == method)]
        k, n = int(sub["n_single_mode"].sum()), int(sub["n_fits"].sum())
        assert f"{k}/{n}" not in text
    low, high = vi["rate_single_mode"].min(), vi["rate_single_mode"].max()
    assert f"from {100 * low:.0f}%" in text and f"to {100 * high:.0f}%" in text

def test_question_section_reads_the_ablation_cells(fits, data_summary):
    section = report.question_section(fits, data_summary)
    rows = tables_layer.question_comparison_rows(fits)
    asked = rows[rows["model"] == "as_asked"]
    fix = rows[rows["model"] == "as_asked_fix_mixture"]
    assert report.num(asked["sigma_mean"].median()) in section.paragraphs[0]
    e1 = next(item for item in section.items if item.startswith("**E1"))
    assert f"median sigma {report.num(fix['sigma_mean'].median())}" in e1
    assert report.num(data_summary["ols_residual_sd"].iloc[0]) in e1
    # an ablation that was not run is reported as absent, not invented
    e2 = next(item for item in section.items if item.startswith("**E2"))
    assert "not measured" in e2
    e3 = next(item for item in section.items if item.startswith("**E3"))
    assert report.num(100000 / 128) in e3
    e5 = next(item for item in section.items if item.startswith("**E5"))
    assert "Not reproduced" in e5
    # only the as_asked settings are compared: the adam cells of marginal are left out
    assert set(rows["optimizer"]) == {"default"}


def test_reference_and_other_sections(cells, fits):
    refs = report.reference_section(cells, fits)
    c2 = cells[cells["cell_id"] == "marginal__nuts__c2"].iloc[0]
    assert report.cell_rate(c2, "spanning") in " ".join(refs.paragraphs)
    assert "chains in a single mode" in refs.tables[0].columns
    other = report.other_methods_section(cells)
    cavi = cells[cells["method"] == "cavi"]
    assert f"{int(cavi['n_single_mode'].sum())}/{int(cavi['n_fits'].sum())}" in \
        " ".join(other.paragraphs)
    assert any("SVGD was not run" in p for p in other.paragraphs)


def test_diagnostics_counts_khat_per_class(fits):
    section = report.diagnostics_section(fits)
    rows = tables_layer.fit_rows(fits)
    single = rows[rows["outcome"].isin(["mode_A", "mode_B"]) & rows["psis_khat"].notna()]
    good = int((single["psis_khat"] <= plots.KHAT_OK).sum())
    assert f"{good}/{len(single)}" in section.paragraphs[0]
    assert "minority_share" in section.figures
    too_wide = [row for row in section.tables[0].rows if row[0] == "on a mode, too wide"]
    assert too_wide and too_wide[0][1] == "1"


def test_minority_share_text_reads_the_fit_table(fits):
    rows = tables_layer.fit_rows(fits)
    text = report.minority_text(rows)
    for name, labels in (("single-mode", ["mode_A", "mode_B"]), ("spanning", ["spanning"])):
        share = rows[rows["outcome"].isin(labels)]["minority_share"]
        assert f"of the {len(share)} {name} fits, {int((share > 0).sum())}/{len(share)}" in text
        assert f"median minority share {report.num(share.median())}" in text
    assert "No single-mode" in report.minority_text(rows.iloc[:0])


def test_context_degrades_gracefully_without_vi_or_question(cells, fits, data_summary):
    only_nuts = cells[cells["method"] == "nuts"]
    nuts_fits = fits[fits["method"] == "nuts"]
    context = report.build_context(only_nuts, nuts_fits, data_summary.iloc[:0],
                                   report.default_provenance("t", "abc123", 1))
    text = " ".join(" ".join(map(str, s.paragraphs + s.items + s.notes))
                    for s in context["sections"])
    assert "no meanfield or fullrank ADVI cells" in text
    assert "was not fitted in this study" in text


def test_headline_console(tmp_path, cells):
    path = tmp_path / "cells.csv"
    cells.to_csv(path, index=False)
    text = report.headline_console(path, tmp_path / "missing.html")
    for _, row in cells.iterrows():
        assert row["cell_id"] in text
    assert "not built by this run" in text
    assert "no cell table" in report.headline_console(tmp_path / "absent.csv")


def test_study_command_puts_targets_before_configfile():
    assert workflow_plan.study_command([SMOKE], "figures") == \
        "snakemake figures --cores N --configfile .test/config/smoke.yaml"


def test_seed_ranges():
    assert report.seed_ranges([0, 1, 2, 5, 7, 8]) == "0–2, 5, 7–8"


# --- figures -----------------------------------------------------------------------------------


def test_headline_plot_writes_png_and_svg(tmp_path, figure_tables):
    outputs = [tmp_path / "outcome_rates.png", tmp_path / "outcome_rates.svg"]
    plots.make_figure("outcome_rates", _inputs(tmp_path, figure_tables, "outcome_rates"), outputs)
    assert outputs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = outputs[1].read_text()
    assert svg.lstrip().startswith("<?xml") and "<dc:date>" not in svg
    assert b"Software" not in outputs[0].read_bytes()


# What every figure draws, read back from its matplotlib Figure and compared with the tables
# that feed it (through parquet, as make_figure reads them).


@pytest.fixture
def draw(tmp_path, figure_tables):
    import matplotlib.pyplot as plt

    drawn = []

    def _draw(name, tables=None):
        inputs = _inputs(tmp_path, figure_tables if tables is None else tables, name)
        with plt.rc_context(plots.STYLE):
            fig = plots.FIGURES[name](**{k: tables_layer.read_table(v) for k, v in inputs.items()})
        drawn.append(fig)
        return fig

    yield _draw
    for fig in drawn:
        plt.close(fig)


def _points(ax) -> np.ndarray:
    """The (x, y) of every scatter point of an axes."""
    from matplotlib.collections import PathCollection

    offsets = [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]
    return np.concatenate(offsets) if offsets else np.zeros((0, 2))


def _median_bars(ax) -> dict[float, float]:
    """The strip plots' median bars: {x of the category: y}."""
    bars = {}
    for line in ax.get_lines():
        x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        if len(x) == 2 and np.isclose(x[1] - x[0], 0.7) and y[0] == y[1]:
            bars[round((x[0] + x[1]) / 2, 6)] = y[0]
    return bars


def _check_strip(ax, frame, category, categories, value):
    """One point per finite value at its category's x (jittered by at most 0.25), one median
    bar per category at the values' median, the categories' labels on the x axis."""
    points = _points(ax)
    values = pd.to_numeric(frame[value], errors="coerce")
    assert len(points) == int(values.notna().sum())
    for x, cat in enumerate(categories):
        mine = points[np.abs(points[:, 0] - x) <= 0.25]
        expected = values[frame[category] == cat].dropna()
        np.testing.assert_allclose(np.sort(mine[:, 1]), np.sort(expected.to_numpy()))
        assert _median_bars(ax)[x] == pytest.approx(expected.median())
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == [vocabulary.OUTCOME_LABELS.get(c, vocabulary.METHOD_LABELS.get(c, c)).split(" (")[0]
                      for c in categories]


def test_outcome_rates_figure_draws_every_cell_rate(draw, cells):
    fig = draw("outcome_rates")
    axes = fig.axes
    classes = list(vocabulary.RATE_CLASSES)
    assert [" ".join(ax.get_title().split()) for ax in axes] == [
        vocabulary.OUTCOME_LABELS[c] for c in classes]
    # the panel titles do not run into each other
    fig.canvas.draw()
    boxes = [ax.title.get_window_extent() for ax in axes]
    assert all(left.x1 < right.x0 for left, right in zip(boxes, boxes[1:])), boxes
    # rows: one per cell, labelled with its grid, label and fit count
    labels = {round(t.get_position()[1], 6): t.get_text() for t in axes[0].get_yticklabels()}
    assert len(labels) == len(cells)
    by_label = {f"[{r['grid']}] {vocabulary.cell_label(r)} (n={int(r['n_fits'])})": r
                for _, r in cells.iterrows()}
    assert set(labels.values()) == set(by_label)
    for ax, outcome in zip(axes, classes):
        (container,) = ax.containers
        data_line, _, (bars,) = container.lines
        xs, ys = data_line.get_xdata(), data_line.get_ydata()
        assert len(xs) == len(cells)
        for x, y, segment in zip(xs, ys, bars.get_segments()):
            cell = by_label[labels[round(y, 6)]]
            assert x == pytest.approx(cell[f"rate_{outcome}"])
            assert segment[:, 0] == pytest.approx([cell[f"rate_{outcome}_low"],
                                                   cell[f"rate_{outcome}_high"]])


def test_slope_draws_figure_draws_every_representative_fit(draw, figure_tables):
    draws = figure_tables["representative_draws"]
    summary = figure_tables["data_summary"].iloc[0]
    fig = draw("slope_draws")
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    methods = vocabulary.ordered(draws["method"], vocabulary.METHOD_ORDER)
    outcomes = vocabulary.ordered(draws["outcome"], vocabulary.OUTCOME_ORDER)
    assert len(panels) == len(methods) * len(outcomes)
    for ax, (method, outcome) in zip(panels, [(m, o) for m in methods for o in outcomes]):
        sub = draws[(draws["method"] == method) & (draws["outcome"] == outcome)]
        np.testing.assert_allclose(_points(ax), sub[["slope_0", "slope_1"]].to_numpy())
        assert ax.get_title() == vocabulary.OUTCOME_LABELS[outcome]
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend == ["marginal seed 0"]
        truth = [line for line in ax.get_lines() if line.get_marker() == "x"]
        assert sorted(map(tuple, truth[0].get_xydata())) == sorted(
            [(summary["true_slope_0"], summary["true_slope_1"]),
             (summary["true_slope_1"], summary["true_slope_0"])])
    assert panels[0].get_ylabel().startswith(vocabulary.METHOD_LABELS["advi"])


def test_loss_traces_figure_draws_one_line_per_fit(draw, figure_tables):
    traces = figure_tables["loss_traces"]
    fig = draw("loss_traces")
    (ax,) = [ax for ax in fig.axes if ax.axison]
    assert ax.get_title() == "marginal · meanfield ADVI"
    lines = ax.get_lines()
    assert len(lines) == traces.groupby(["cell_id", "seed"]).ngroups == 2
    for line, (_, fit) in zip(lines, traces.groupby(["cell_id", "seed"], sort=True)):
        np.testing.assert_array_equal(line.get_xdata(), fit["iteration"])
        np.testing.assert_array_equal(line.get_ydata(), fit["loss"])
        assert line.get_color() == vocabulary.OUTCOME_COLORS[fit["outcome"].iloc[0]]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [vocabulary.OUTCOME_LABELS[o] for o in ("mode_A", "mode_B")]


def test_errors_by_class_figure_draws_every_fit_error(draw, fits):
    fig = draw("errors_by_class")
    rows = tables_layer.fit_rows(fits)
    columns = ["sigma_abs_error", "slope_abs_error", "weight_abs_error"]
    rows = rows[rows[columns].notna().any(axis=1)]
    outcomes = vocabulary.ordered(rows["outcome"], vocabulary.OUTCOME_ORDER)
    assert len(fig.axes) == 3
    for ax, column in zip(fig.axes, columns):
        _check_strip(ax, rows, "outcome", outcomes, column)
        assert ax.get_yscale() == "log"
    methods = vocabulary.ordered(rows["method"], vocabulary.METHOD_ORDER)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == \
        [vocabulary.METHOD_LABELS[m] for m in methods]


def test_khat_by_class_figure_draws_every_khat_and_the_thresholds(draw, fits):
    fig = draw("khat_by_class")
    (ax,) = fig.axes
    rows = tables_layer.fit_rows(fits)
    rows = rows[rows["psis_khat"].notna()]
    assert len(rows) > 0
    _check_strip(ax, rows, "outcome", vocabulary.ordered(rows["outcome"], vocabulary.OUTCOME_ORDER),
                 "psis_khat")
    levels = sorted(line.get_ydata()[0] for line in ax.get_lines()
                    if line.get_linestyle() in (":", "--"))
    assert levels == [plots.KHAT_GOOD, plots.KHAT_OK]
    assert ax.get_ylabel() == "PSIS k-hat"


def test_runtime_figure_draws_every_successful_fit(draw, fits):
    fig = draw("runtime")
    (ax,) = fig.axes
    rows = tables_layer.fit_rows(fits)
    rows = rows[(rows["status"] == "ok") & (rows["fit_seconds"] > 0)]
    assert (tables_layer.fit_rows(fits)["status"] == "failed").any()  # left out below
    _check_strip(ax, rows, "method", vocabulary.ordered(rows["method"], vocabulary.METHOD_ORDER),
                 "fit_seconds")
    assert ax.get_ylabel() == "fit time per fit (s)"


def test_question_model_figure_draws_the_compared_fits(draw, fits, data_summary):
    fig = draw("question_model")
    sigma_ax, slopes_ax, rate_ax = fig.axes
    rows = tables_layer.question_comparison_rows(fits)
    models = vocabulary.ordered(rows["model"], vocabulary.MODEL_ORDER)
    ok = rows[rows["sigma_mean"].notna()]
    assert len(_points(sigma_ax)) == len(ok)
    np.testing.assert_allclose(np.sort(_points(sigma_ax)[:, 1]), np.sort(ok["sigma_mean"]))
    slopes = np.concatenate([ok["slopes_0_mean"], ok["slopes_1_mean"]])
    np.testing.assert_allclose(np.sort(_points(slopes_ax)[:, 1]), np.sort(slopes))
    hlines = {line.get_ydata()[0] for line in sigma_ax.get_lines() if len(line.get_xdata()) == 2
              and line.get_linestyle() != "-"}
    assert {data_summary["noise_sd"].iloc[0], data_summary["ols_residual_sd"].iloc[0], 1.0} <= \
        hlines
    # (c) one single-mode rate per (model, method) compared
    rates = sorted(c.lines[0].get_ydata()[0] for c in rate_ax.containers)
    expected = sorted(g["outcome"].isin(["mode_A", "mode_B"]).mean()
                      for _, g in rows.groupby(["model", "method"]))
    assert rates == pytest.approx(expected)
    assert [t.get_text() for t in rate_ax.get_xticklabels()] == models


@pytest.mark.parametrize("name", sorted(plots.FIGURES))
def test_every_figure_survives_empty_tables(tmp_path, figure_tables, draw, name):
    """Empty tables: a figure that says there is nothing to draw, and a file."""
    empty = {key: frame.iloc[:0] for key, frame in figure_tables.items()}
    out = tmp_path / "empty" / f"{name}.png"
    (tmp_path / "empty").mkdir()
    plots.make_figure(name, _inputs(tmp_path / "empty", empty, name), [out])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (ax,) = draw(name, empty).axes
    assert not ax.axison and len(_points(ax)) == 0 and not ax.get_lines()
    (message,) = ax.texts
    assert message.get_text().startswith("no ")


def _sha(paths):
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]


def test_figure_bytes_identical_when_written_twice(tmp_path, figure_tables):
    inputs = _inputs(tmp_path, figure_tables, "slope_draws")
    first = [tmp_path / "a.png", tmp_path / "a.svg"]
    plots.make_figure("slope_draws", inputs, first)
    second = [tmp_path / "b.png", tmp_path / "b.svg"]
    plots.make_figure("slope_draws", inputs, second)
    assert _sha(first) == _sha(second)
    # and in a fresh process (SVG ids come from svg.hashsalt, not from the process)
    third = [tmp_path / "c.png", tmp_path / "c.svg"]
    code = ("import json, sys; from vimodes.plots import make_figure; "
            "make_figure('slope_draws', json.loads(sys.argv[1]), sys.argv[2:])")
    subprocess.run([sys.executable, "-c", code, json.dumps({k: str(v) for k, v in inputs.items()}),
                    *map(str, third)], check=True)
    assert _sha(first) == _sha(third)


# --- figure tables -----------------------------------------------------------------------------


def test_profile_log_density_matches_direct_sum():
    from scipy import stats

    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, 50)
    y = np.where(rng.random(50) < 0.5, 3 * x, -x) + 0.1 * rng.standard_normal(50)
    w = np.array([-1.0, 0.5, 3.0])
    got = tables_layer.profile_log_density(x, y, w, w, weights=(0.3, 0.7), sigma=0.2, prior_sd=2.0,
                                    chunk=7)
    for i, a in enumerate(w):
        for j, b in enumerate(w):
            like = np.log(0.3 * stats.norm.pdf(y, x * a, 0.2) + 0.7 * stats.norm.pdf(y, x * b, 0.2))
            prior = stats.norm.logpdf(a, 0, 2) + stats.norm.logpdf(b, 0, 2)
            assert got[i, j] == pytest.approx(like.sum() + prior, rel=1e-10)


def test_posterior_grid_peaks_at_the_modes():
    from vimodes.simulate import DataRegime, simulate

    data = simulate(DataRegime(n_obs=500), 0, 20180913)
    low, high, points = workflow_plan.grid_limits(data.regime.slopes)
    grid, summary = tables_layer.make_posterior_grid(data, low, high, points)
    assert len(grid) == points ** 2 and (grid["delta"] >= 0).all()
    best = grid.loc[grid["delta"].idxmin()]
    assert {round(best["w0"], 6), round(best["w1"], 6)} == {3.0, -1.0}
    assert summary["ols_slope"].iloc[0] == pytest.approx(1.0, abs=0.15)


def _write_fit(folder: Path, cell_id: str, seed: int, method: str, outcome_draws: np.ndarray,
               trace):
    from vimodes.idata import write_posterior

    folder.mkdir(parents=True, exist_ok=True)
    record = {"cell_id": cell_id, "seed": seed, "method": method, "model": "marginal",
              "optimizer": "adam", "iterations_done": 100 * len(trace), "loss_trace": trace}
    (folder / f"seed-{seed}.json").write_text(json.dumps(record))
    n_chain, n_draw = outcome_draws.shape[:2]
    draws = {"slopes": outcome_draws, "weights": np.full((n_chain, n_draw, 2), 0.5),
             "sigma": np.full((n_chain, n_draw), 0.1)}
    write_posterior(folder / f"seed-{seed}.nc", SimpleNamespace(draws=draws, sample_stats={}),
                    record)


def test_loss_traces_and_representative_draws_from_fit_files(tmp_path):
    cell = "marginal__advi__adam__it1000__init-jitter__b128"
    folder = tmp_path / cell / "chunk-0"
    mode_a = np.tile([3.0, -1.0], (1, 500, 1))
    for seed in range(4):
        _write_fit(folder, cell, seed, "advi", mode_a, [10.0 - seed, 5.0, 1.0])
    fits = pd.DataFrame([{**_fit_row("marginal", "advi", "adam", s, "mode_A"),
                          "cell_id": cell} for s in range(4)])
    traces = tables_layer.make_loss_traces(fits, [folder])
    assert len(traces) == 12
    assert traces[traces["seed"] == 0]["iteration"].tolist() == [100, 200, 300]
    assert set(traces["outcome"]) == {"mode_A"}
    draws = tables_layer.make_representative_draws(fits, [folder], per_class=3, n_draws=50)
    assert draws.groupby(["cell_id", "seed"]).ngroups == 3
    assert draws.groupby("seed").size().max() == 50
    assert np.allclose(draws["slope_0"], 3.0)


# --- the rendered report -----------------------------------------------------------------------


def test_html_embeds_every_figure_and_md_links_them(tmp_path, figure_tables, fits, cells,
                                                     data_summary):
    figures = {}
    for name in plots.FIGURES:
        png, svg = tmp_path / "figures" / f"{name}.png", tmp_path / "figures" / f"{name}.svg"
        plots.make_figure(name, _inputs(tmp_path, figure_tables, name), [png, svg])
        figures[name] = png
    html_path, md_path = tmp_path / "report" / "report.html", tmp_path / "report" / "report.md"
    paths = {}
    for key, frame in (("cells", cells), ("fits", fits), ("data_summary", data_summary)):
        paths[key] = tmp_path / f"{key}.parquet"
        frame.to_parquet(paths[key])
    report.write_report(paths["cells"], paths["fits"], paths["data_summary"], figures,
                        TEMPLATES, html_path, md_path,
                        report.default_provenance("test", "abc123", 1, "snakemake --cores N",
                                                  "snakemake figures --cores N"),
                        table_paths={"headline": tmp_path / "report" / "headline.csv"})
    html = html_path.read_text()
    sources = re.findall(r'<img[^>]*\bsrc="([^"]*)"', html)
    assert len(sources) == len(plots.FIGURES)
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert not re.search(r'<(script|link|iframe)\b[^>]*\b(src|href)=', html)
    assert not re.search(r'url\((?!data:)', html)
    md = md_path.read_text()
    for name in plots.FIGURES:
        assert f"](../figures/{name}.png)" in md
    # the headline CSV holds the cell table's numbers
    headline = pd.read_csv(tmp_path / "report" / "headline.csv")
    merged = headline.merge(cells, on="cell_id", suffixes=("", "_cells"))
    assert len(merged) == len(headline) > 0
    assert np.allclose(merged["rate_single_mode"], merged["rate_single_mode_cells"])


@pytest.mark.render
def test_report_renders_in_headless_chromium(tmp_path, figure_tables, fits, cells, data_summary):
    """tests/check_report_render.sh on a report built here (`make test-render`, which installs
    chromium when it is missing; not part of `make test`). Fails without chromium."""
    import shutil

    assert any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")), \
        "chromium is not installed: run `make test-render` as root (apt-get install -y chromium)"
    figures = {}
    for name in plots.FIGURES:
        png = tmp_path / "figures" / f"{name}.png"
        plots.make_figure(name, _inputs(tmp_path, figure_tables, name),
                          [png, png.with_suffix(".svg")])
        figures[name] = png
    paths = {}
    for key, frame in (("cells", cells), ("fits", fits), ("data_summary", data_summary)):
        paths[key] = tmp_path / f"{key}.parquet"
        frame.to_parquet(paths[key])
    html = tmp_path / "report" / "report.html"
    report.write_report(paths["cells"], paths["fits"], paths["data_summary"], figures, TEMPLATES,
                        html, tmp_path / "report" / "report.md",
                        report.default_provenance("test", "abc123", 1))
    result = subprocess.run([str(REPO / "tests" / "check_report_render.sh"), str(html),
                             str(tmp_path / "shot.png")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"OK: {len(plots.FIGURES)} embedded images" in result.stdout
    assert (tmp_path / "shot.png").stat().st_size > 10_000


def test_factor_sentence_reads_the_corrected_cells(cells, fits):
    section = report.factor_section(cells, fits)
    text = " ".join(section.paragraphs)
    for optimizer in ("adam", "default"):
        sub = cells[(cells["model"] == "marginal") & (cells["method"] == "advi")
                    & (cells["optimizer"] == optimizer)]
        k, n = int(sub["n_single_mode"].sum()), int(sub["n_fits"].sum())
        assert f"{k}/{n} (" in text
    assert "learning rate 0.01" in text  # the optimiser's settings, from the fit table
    # an init level named like an optimiser ("default") is not labelled as the optimiser
    labels = report.optimizer_labels(fits)
    assert "learning rate" in report._level_text("optimizer", "default", labels)
    assert report._level_text("init", "default", labels) == "default"


def test_summary_markdown_counts_too_wide(cells):
    from vimodes.summary import summary_markdown

    text = summary_markdown(cells, "t", "abc123")
    assert "| too wide |" in text
    cell = cells[cells["n_mode_too_wide"] > 0].iloc[0]
    line = next(x for x in text.splitlines() if f"`{cell['cell_id']}`" in x)
    assert line.split(" | ")[4] == str(int(cell["n_mode_too_wide"]))


def test_every_registered_figure_has_a_report_section(cells, fits, data_summary, monkeypatch):
    """Sections list their figures from the registry; a figure whose section the report does
    not have is still shown, under "Other figures"."""
    from vimodes.figure_specs import FIGURE_SPECS, FigureSpec

    def shown(context):
        return {s.id: s.figures for s in context["sections"] if s.figures}

    provenance = report.default_provenance("test", "abc123", 1)
    sections = shown(report.build_context(cells, fits, data_summary, provenance))
    assert sorted(f for figures in sections.values() for f in figures) == sorted(FIGURE_SPECS)
    # the package's figures each have their section; the test plugin's names none
    assert sections["other_figures"] == ["plugin_share"]
    monkeypatch.setitem(FIGURE_SPECS, "dummy", FigureSpec("dummy", "Dummy", "A test.", "9. Test",
                                                          ("fits",), section="nowhere"))
    context = report.build_context(cells, fits, data_summary, provenance)
    assert shown(context)["other_figures"] == ["plugin_share", "dummy"]
    assert context["sections"][-1].id == "reproduce"


def test_starts_table_has_every_method_and_init_kind():
    """One row per method with a meaning for every init kind; the ADVI engines share one."""
    from vimodes.methods import INIT_KINDS, init_meaning

    cells = pd.DataFrame({"method": ["advi", "nuts"]})
    table = report.starts_section(cells).tables[0]
    assert len(table.columns) == 1 + len(INIT_KINDS)
    labels = [row[0] for row in table.rows]
    assert labels[0] == "meanfield ADVI" and "SVGD (not in this study)" in labels
    assert all(len(row) == len(table.columns) and all(row) for row in table.rows)
    assert init_meaning("fullrank_advi", "jitter") == init_meaning("advi", "jitter")


def _adam_fits() -> pd.DataFrame:
    """Six adam fits of one cell (4 single mode, 1 too wide, 1 collapsed), one adam fit of the
    question's model and one default-optimiser fit: only the first six are adam fits of a
    corrected model."""
    rows = []
    for seed, (outcome, centre, mass, sd, sigma, elbo) in enumerate([
            ("mode_A", "mode_A", 1.0, 0.001, 0.1, 20.0), ("mode_B", "mode_B", 1.0, 0.001, 0.1, 22.0),
            ("mode_A", "mode_A", 0.99, 0.002, 0.1, 21.0), ("mode_B", "mode_B", 1.0, 0.001, 0.1, 23.0),
            ("mode_too_wide", "mode_A", 0.6, 0.2, 0.5, -100.0),
            ("collapsed", "collapsed", np.nan, 0.05, 1.1, -300.0)]):
        rows.append({"level": "fit", "cell_id": "m_adam", "model": "marginal",
                     "method": "fullrank_advi", "optimizer_name": "adam", "seed": seed,
                     "outcome": outcome, "centre_class": centre, "centre_mass": mass,
                     "slopes_0_sd": sd, "slopes_1_sd": sd / 2, "sigma_mean": sigma,
                     "elbo_full": elbo})
    rows.append({**rows[0], "cell_id": "q_adam", "model": "as_asked"})
    rows.append({**rows[4], "cell_id": "m_default", "optimizer_name": "adagrad_window"})
    return pd.DataFrame(rows)


def test_adam_section_explains_every_non_single_adam_fit():
    fits = _adam_fits()
    section = report.adam_section(fits)
    table = section.tables[0]
    assert [row[0] for row in table.rows] == ["`m_adam`"]  # not the question's, not adagrad
    cell, n, single, classes, centres, mass, sd_single, sd_other, sigmas, gap = table.rows[0]
    assert (n, single) == ("6", "4")
    assert "on a mode, too wide 1" in classes and "collapsed (modes averaged) 1" in classes
    assert sorted(centres.split("; ")) == ["collapsed 1", "mode_A 1"]
    assert float(mass) == 0.6  # the only finite one among the others
    assert float(sd_other) > float(sd_single)
    assert sigmas == "0.1 / 0.8"  # single-mode median / the others' median
    assert float(gap) == pytest.approx(-200.0 - 21.5, rel=0.01)  # median ELBO of the others minus the single-mode fits'
    assert section.paragraphs[0].startswith("2 of 6 ")
    assert "centre on a mode in 1; their median sigma 0.8 against 0.1" in section.items[0]


def test_adam_figure_draws_every_adam_fit_once():
    fits = _adam_fits()
    fig = plots.fig_adam_non_single(fits)
    (points,) = [_points(ax) for ax in fig.axes if ax.get_title()]
    assert len(points) == 6
    assert fig.axes[0].get_title() == "fullrank ADVI: 2 of 6 not single mode"
    assert sorted(points[:, 1].round(2)) == [0.0, 0.6, 0.99, 1.0, 1.0, 1.0]


def test_inline_markup_is_commonmark_and_escapes_html():
    from vimodes.report import inline_html

    assert inline_html("**Answer.** `as_asked_fix_all` in 3/5 < 4") == (
        "<strong>Answer.</strong> <code>as_asked_fix_all</code> in 3/5 &lt; 4")
    assert "<script>" not in inline_html("a <script>alert(1)</script> b")
    assert inline_html("slopes_0 and slopes_1") == "slopes_0 and slopes_1"  # no emphasis


def test_markdown_tables_keep_cells_as_written_and_escape_pipes():
    from markdown_it import MarkdownIt

    from vimodes.report import Table

    text = Table(["setting", "rate"], [["a|b", "0.50"], ["`c`", "1/2"]]).markdown
    assert "0.50" in text and "a\\|b" in text  # no number parsing; a pipe stays in its cell
    html = MarkdownIt("commonmark").enable("table").render(text)
    assert html.count("<tr>") == 3 and html.count("<td") == 4 and "<td style=\"text-align:left\">a|b<" in html


def test_a_deterministic_cell_is_reported_without_an_interval():
    """CAVI from the model's initial point starts every seed at the same point: its cell is
    marked deterministic and its rate has no interval; from a random start it is an estimate,
    as is any method from the initial point that is not deterministic."""
    rows = []
    for cell_id, method, init in (("cavi-d", "cavi", "symmetric"), ("cavi-j", "cavi", "shaken"),
                                  ("advi-d", "advi", "symmetric")):
        rows += [{"level": "fit", "cell_id": cell_id, "model": "marginal", "method": method,
                  "init": init, "data_regime": "default", "seed": seed, "chain": -1,
                  "outcome": "collapsed", "fit_seconds": 1.0} for seed in range(5)]
    inits = {"symmetric": {"kind": "default"}, "shaken": {"kind": "jitter", "scale": 1.0}}
    cells = summarise_cells(pd.DataFrame(rows), inits=inits).set_index("cell_id")
    assert cells["deterministic"].to_dict() == {"advi-d": False, "cavi-d": True,
                                                "cavi-j": False}
    text = report.pooled_cells(cells.loc[["cavi-d"]], "single_mode").text()
    assert text.startswith("0/5 (0%; deterministic") and "CI" not in text
    assert "95% CI" in report.pooled_cells(cells.loc[["cavi-j"]], "single_mode").text()
    assert report.cell_rate(cells.loc["cavi-d"], "single_mode") == text  # the per-cell tables
    assert "95% CI" in report.cell_rate(cells.loc["advi-d"], "single_mode")
    assert not summarise_cells(pd.DataFrame(rows))["deterministic"].any()  # no inits: unknown


def test_a_bullet_with_sub_bullets_renders_as_a_nested_list_in_both_formats():
    from markdown_it import MarkdownIt

    section = report.Section("answer", "The answer", items=[
        "plain", report.Item("**Finding.** the contrasts:", ["first `a`", "second"])])
    context = {"title": "t", "subtitle": "s", "sections": [section], "figures": {},
               "figure_info": {}}
    md = report.render(context, TEMPLATES, "report.md.j2")
    html = MarkdownIt("commonmark").render(md)
    assert re.search(r"<li>plain</li>\s*<li><strong>Finding.</strong> the contrasts:\s*<ul>\s*"
                     r"<li>first <code>a</code></li>\s*<li>second</li>\s*</ul>\s*</li>", html)
    page = report.render(context, TEMPLATES, "report.html.j2")
    assert re.search(r"<li><strong>Finding.</strong> the contrasts:<ul>\s*"
                     r"<li>first <code>a</code></li>\s*<li>second</li>\s*</ul></li>", page)
    assert str(section.items[1]) == "**Finding.** the contrasts: first `a` second"
