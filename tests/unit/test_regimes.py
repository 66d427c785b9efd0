"""The regime map: regime descriptors and axes, the reference posterior sd that sets the
classifier's tolerances per regime, the independent-proportion contrasts against the default
regime, and the figure and report section drawn from a hand-built cell table."""

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from helpers import REPO
from vimodes.classify import ClassifierSettings, TrueParameters, classify_draws, slope_tolerances
from vimodes.config import load_study
from vimodes.contrasts import independent_contrast, regime_contrasts
from vimodes.idata import write_posterior
from vimodes.metrics import reference_slope_sd_from_fits, relabelled_slope_sd
from vimodes.pipeline import read_reference_sd, write_reference
from vimodes.records import write_json
from vimodes.regimes import REGIME_AXES, regime_axis, regime_descriptors, regime_map

matplotlib.use("Agg")

BASE = {"n_obs": 100000, "slopes": [3.0, -1.0], "weights": [0.5, 0.5], "noise_sd": 0.1}


# ------------------------------------------------------------------ descriptors and axes

def test_descriptors_of_the_default_regime():
    d = regime_descriptors(BASE)
    assert d == {"n_obs": 1e5, "separation": 4.0, "noise_sd": 0.1, "heavier_weight": 0.5,
                 "x_width": 2.0, "components": 2.0}


@pytest.mark.parametrize("change, axis, value", [
    ({"n_obs": 1000}, "n_obs", 1000.0),
    ({"slopes": [3.0, 1.0]}, "separation", 2.0),
    ({"noise_sd": 1.0}, "noise_sd", 1.0),
    ({"weights": [0.3, 0.7]}, "heavier_weight", 0.7),
    ({"x_low": -0.5, "x_high": 0.5}, "x_width", 1.0),
])
def test_a_one_factor_regime_has_its_axis(change, axis, value):
    assert regime_axis({**BASE, **change}, BASE) == (axis, pytest.approx(value))


def test_base_crossed_and_other_k_regimes():
    name, value = regime_axis(dict(BASE), BASE)
    assert name == "base" and np.isnan(value)
    assert regime_axis({**BASE, "n_obs": 1000, "noise_sd": 1.0}, BASE) is None
    k3 = {**BASE, "slopes": [3.0, -1.0, 1.0], "weights": [0.4, 0.3, 0.3]}
    assert regime_axis(k3, BASE) is None
    # moving both slopes but keeping their separation is neither the base nor an axis
    assert regime_axis({**BASE, "slopes": [4.0, 0.0]}, BASE) is None
    assert regime_axis({**BASE, "x_low": -1.0}, BASE)[0] == "base"  # the schema's default


def test_the_default_config_maps_every_axis():
    study = load_study(REPO / "config" / "config.yaml")
    mapped = regime_map(study.config["data_regimes"])
    axes = {axis for axis, _ in mapped.values()}
    assert axes == {a.name for a in REGIME_AXES} | {"base"}
    assert "k3" not in mapped  # another K: not a point of the K = 2 map
    # every regime of the map has its reference cell, so its tolerances follow NUTS
    regimes = {cell.data_regime for cell in study.cells}
    for name in mapped:
        if name in regimes:
            ref = study.reference_cell(name)
            assert ref is not None and (ref.method, ref.chains, ref.model) == ("nuts", 1,
                                                                                "marginal")
    assert study.reference_cell("k3") is None


# ------------------------------------------------------------------ reference posterior sd

def test_relabelled_sd_measures_one_mode_not_the_distance_between_modes():
    rng = np.random.default_rng(1)
    draws = np.stack([3 + 0.01 * rng.normal(size=4000), -1 + 0.03 * rng.normal(size=4000)], 1)
    draws[::3] = draws[::3, ::-1]  # a chain that switches labels every third draw
    sd = relabelled_slope_sd(draws[None], [3.0, -1.0])
    assert sd == pytest.approx([0.01, 0.03], rel=0.05)
    assert draws.std(axis=0).min() > 1.0  # the raw sd is the distance between the modes
    assert np.isnan(relabelled_slope_sd(draws[:1], [3.0, -1.0])).all()
    with pytest.raises(ValueError, match="K=2"):
        relabelled_slope_sd(draws, [3.0, -1.0, 1.0])


def test_reference_is_the_median_over_fits_and_skips_non_finite():
    ref = reference_slope_sd_from_fits([[0.1, 0.2], [0.3, 0.4], [np.nan, 1.0], [0.2, 0.3]])
    assert ref == pytest.approx([0.2, 0.3])
    with pytest.raises(ValueError, match="no reference fit"):
        reference_slope_sd_from_fits([[np.nan, 0.1]])


def _fit_files(fit_dir: Path, seed: int, slopes: np.ndarray, status: str = "ok") -> None:
    truth = {"true_slopes": [3.0, -1.0], "true_weights": [0.5, 0.5], "true_noise_sd": 1.0,
             "n_obs": 1000}
    record = {"seed": seed, "status": status, **truth}
    if status == "ok":
        n = slopes.shape[1]

        class Result:
            draws = {"slopes": slopes, "weights": np.full((1, n, 2), 0.5),
                     "sigma": np.full((1, n), 1.0)}
            sample_stats = {}

        write_posterior(fit_dir / f"seed-{seed}.nc", Result, record)
    write_json(record, fit_dir / f"seed-{seed}.json")


def test_write_reference_from_fit_files(tmp_path):
    rng = np.random.default_rng(2)
    chunk = tmp_path / "chunk-0"
    chunk.mkdir()
    widths = [0.10, 0.14, 0.12]
    for seed, width in enumerate(widths):
        slopes = np.array([3.0, -1.0]) + width * rng.normal(size=(1, 3000, 2))
        _fit_files(chunk, seed, slopes)
    _fit_files(chunk, 3, None, status="failed")  # a failed fit gives no sd
    out = tmp_path / "reference.json"
    payload = write_reference("noisy", "marginal__nuts__c1", [chunk], out)
    assert payload["n_fits"] == 3
    assert read_reference_sd(out) == pytest.approx([0.12, 0.12], rel=0.06)
    assert payload["asymptotic_slope_sd"] == pytest.approx([1 / np.sqrt(1000 * 0.5 / 3)] * 2)
    assert read_reference_sd(None) is None


def test_tolerance_follows_a_wide_reference_posterior():
    """A regime whose posterior is wider than the asymptotic sd (small N, large noise): a fit on
    the mode but off-centre by the reference's width is a mode with the reference's tolerance
    and not with the asymptotic one."""
    truth = TrueParameters(slopes=(3.0, -1.0), weights=(0.5, 0.5), noise_sd=1.0, n_obs=1000)
    settings = ClassifierSettings()
    asymptotic = slope_tolerances(truth, settings)
    reference = np.array([0.15, 0.15])
    widened = slope_tolerances(truth, settings, reference)
    assert asymptotic == pytest.approx([5 / np.sqrt(1000 * 0.5 / 3)] * 2)
    assert widened == pytest.approx([0.75, 0.75])
    rng = np.random.default_rng(3)
    slopes = np.array([3.5, -1.0]) + 0.02 * rng.normal(size=(1, 500, 2))
    weights = np.full((1, 500, 2), 0.5)
    sigma = np.full((1, 500), 1.0)
    assert classify_draws(slopes, weights, sigma, truth, settings).label != "mode_A"
    assert classify_draws(slopes, weights, sigma, truth, settings,
                          reference_sd=reference).label == "mode_A"


# ------------------------------------------------------------------ contrasts

def test_independent_contrast_matches_newcombes_published_example():
    # Newcombe (1998, Stat Med 17:873), Table II: 56/70 vs 48/80, method 10: 0.0524 to 0.3339
    c = independent_contrast(56, 70, 48, 80)
    assert c["diff"] == pytest.approx(0.2)
    assert (c["diff_low"], c["diff_high"]) == pytest.approx((0.0524, 0.3339), abs=5e-5)
    assert c["p_fisher"] == pytest.approx(stats.fisher_exact([[56, 14], [48, 32]]).pvalue)
    empty = independent_contrast(0, 0, 3, 10)
    assert np.isnan(empty["diff"]) and np.isnan(empty["p_fisher"])
    with pytest.raises(ValueError):
        independent_contrast(11, 10, 3, 10)


def _cell(cell_id, regime, axis, value, k, n, optimizer="default", init="default",
          collapsed=0, n_a=None, n_b=None):
    row = {"cell_id": cell_id, "model": "marginal", "method": "advi", "optimizer": optimizer,
           "iterations": 10000, "init": init, "batch_size": 128, "chains": np.nan,
           "engine": "vectorised", "components": None, "data_regime": regime,
           "regime_axis": axis, "regime_value": value, "n_fits": n, "n_single_mode": k,
           "n_collapsed": collapsed, "n_mode_A": n_a if n_a is not None else k // 2,
           "n_mode_B": n_b if n_b is not None else k - k // 2,
           "p_equal_modes": stats.binomtest(n_a, n_a + n_b).pvalue if n_a is not None
           else np.nan}
    base = regime_descriptors(BASE)
    for name in base:
        row[f"regime_{name}"] = base[name]
    if axis not in ("base", None):
        row[f"regime_{axis}"] = value
    for name, count in (("single_mode", k), ("collapsed", collapsed)):
        row[f"rate_{name}"] = count / n
        row[f"rate_{name}_low"], row[f"rate_{name}_high"] = (
            stats.binomtest(count, n).proportion_ci(method="wilson"))
    return row


@pytest.fixture()
def map_cells():
    return pd.DataFrame([
        _cell("base_asked", "default", "base", np.nan, 0, 100, collapsed=100),
        _cell("base_adam", "default", "base", np.nan, 100, 100, "adam_1e-2", "jitter"),
        _cell("small_asked", "n_1e3", "n_obs", 1000.0, 60, 100, collapsed=40),
        _cell("small_adam", "n_1e3", "n_obs", 1000.0, 98, 100, "adam_1e-2", "jitter"),
        _cell("heavy_adam", "weights_90", "heavier_weight", 0.9, 100, 100, "adam_1e-2",
              "jitter", n_a=80, n_b=20),
        _cell("crossed", "crossed", None, np.nan, 10, 100),
    ])


def test_regime_contrasts_pair_each_regime_with_its_base_setting(map_cells):
    c = regime_contrasts(map_cells).set_index("cell_id")
    assert set(c.index) == {"small_asked", "small_adam", "heavy_adam"}
    assert c.loc["small_asked", "base_cell_id"] == "base_asked"
    assert c.loc["small_adam", "base_cell_id"] == "base_adam"
    assert c.loc["small_asked", "diff"] == pytest.approx(0.6)
    assert c.loc["small_asked", "p_holm"] < 1e-6
    assert c.loc["small_adam", "p_holm"] > 0.05
    # Holm over the three rows: the adjusted value is at least the raw one
    assert (c["p_holm"] >= c["p_fisher"] - 1e-15).all()


def test_regime_map_figure_draws_one_line_per_setting_and_axis(map_cells):
    from vimodes.plots import fig_regime_map
    from vimodes.figure_tables import regime_map_points

    points = regime_map_points(map_cells)
    # the base cells are the common point of the two varied axes; the crossed regime is left out
    assert set(points["regime_axis"]) == {"n_obs", "heavier_weight"}
    assert len(points[points["regime_axis"] == "n_obs"]) == 4
    fig = fig_regime_map(map_cells)
    try:
        axes = fig.axes
        assert len(axes) == 4  # 2 rows x 2 varied axes
        for ax in axes:
            assert len(ax.containers) == 2  # one errorbar line per setting
        xs = sorted(axes[0].containers[0].lines[0].get_xdata()) + sorted(
            axes[0].containers[1].lines[0].get_xdata())
        assert set(xs) <= {1000.0, 1e5, 0.5, 0.9}
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_regime_section_states_where_the_answer_changes(map_cells):
    from vimodes.report import regime_section

    fits = pd.DataFrame({"level": ["fit"] * 2, "data_regime": ["default", "n_1e3"],
                         "slope_tolerance": [0.2, 0.2],
                         "tolerance_source": ["nuts_reference", "nuts_reference"]})
    section = regime_section(map_cells, fits)
    text = " ".join(section.paragraphs)
    assert "N = 1000 (advi, default, default): 60% on a single mode against 0%" in text
    assert "advi, adam_1e-2, jitter): 98%" not in text  # not a detectable change
    notes = " ".join(section.notes)
    assert "`heavy_adam`: 80 heavier-first vs 20 lighter-first" in notes
    assert "VI prefers one labelling in `heavy_adam`" in notes
    assert "`n_1e3` 0.2 (nuts reference)" in notes
    assert len(section.tables[0].rows) == 3
    crossed = section.tables[1]  # the crossed regime: rates only, no contrast with the base
    # Wilson 95% interval of 10/100: 0.055 to 0.174
    assert [row[1:3] for row in crossed.rows] == [["advi, default, default",
                                                    "10/100 (10%, 95% CI 6%–17%)"]]


def test_regime_section_without_a_map():
    from vimodes.report import regime_section

    cells = pd.DataFrame([_cell("base_asked", "default", "base", np.nan, 0, 100)])
    section = regime_section(cells, pd.DataFrame({"level": []}))
    assert "no one-factor data regime" in section.paragraphs[0]


def test_the_answer_names_the_regimes_where_it_changes(map_cells):
    """The answer's regime bullet reads these (report.answer_section)."""
    from vimodes.report import regime_changes

    n, changed = regime_changes(map_cells)
    assert n == 3
    assert len(changed) == 1
    assert changed[0].startswith("N = 1000 (advi, default, default): 60% on a single mode "
                                 "against 0% in the default regime (difference +60 points, "
                                 "95% CI +")
    assert regime_changes(map_cells[map_cells["regime_axis"] == "base"]) is None


def test_components_section_compares_k3_with_the_same_setting_at_k2(map_cells):
    from vimodes.report import components_section

    k3 = _cell("k3_adam", "k3", None, np.nan, 48, 50, "adam_1e-2", "jitter")
    k3["regime_components"] = 3.0
    over = _cell("over_adam", "default", "base", np.nan, 0, 50, "adam_1e-2", "jitter")
    over["components"] = 3.0
    cells = pd.concat([map_cells, pd.DataFrame([k3, over])], ignore_index=True)
    for name in ("spanning", "partial_collapse", "not_converged", "failed", "overfit_empty",
                 "overfit_duplicated"):
        cells[f"n_{name}"] = 0
        for suffix in ("", "_low", "_high"):
            cells[f"rate_{name}{suffix}"] = 0.0
    cells.loc[cells["cell_id"] == "over_adam", "n_overfit_empty"] = 45
    section = components_section(cells)
    text = " ".join(section.paragraphs)
    # 48/50 with K = 3 against the base adam cell's 100/100 with K = 2
    assert "advi, adam_1e-2, jitter: 96% with K = 3 against 100% with K = 2" in text
    assert "(no difference detectable: -4 points, 95% CI " in text
    k3_table, over_table = section.tables
    assert [row[0] for row in k3_table.rows] == ["advi, adam_1e-2, jitter"]
    assert over_table.rows[0][1].startswith("45/50")  # extra component empty
    assert over_table.rows[0][-1].startswith("100/100")  # the K = 2 model on the same data


def test_regime_map_draws_a_row_per_outcome_class_that_occurs(map_cells):
    from vimodes.plots import fig_regime_map

    cells = map_cells.copy()
    cells["rate_not_converged"] = 0.0
    cells["rate_not_converged_low"] = 0.0
    cells["rate_not_converged_high"] = 0.0
    cells.loc[cells["cell_id"] == "small_asked", ["rate_not_converged",
                                                  "rate_not_converged_high"]] = [0.4, 0.5]
    fig = fig_regime_map(cells)
    try:
        assert len(fig.axes) == 6  # single mode, collapsed, not converged x 2 varied axes
        labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
        assert labels == ["share:\nsingle mode", "share:\ncollapsed", "share:\nnot converged"]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
