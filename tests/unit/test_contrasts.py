"""Unit tests of vimodes.contrasts: paired contrasts against hand-computed McNemar examples and
a published interval, Holm's adjustment by hand, and the family built from a small fits table."""

import itertools
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from helpers import REPO
from vimodes.contrasts import (
    CONTRAST_COLUMNS,
    cell_contrasts,
    holm_adjust,
    paired_contrast,
)



def pairs(n11=0, n10=0, n01=0, n00=0):
    """Aligned indicators with the given 2x2 counts (a then b)."""
    a = [True] * n11 + [True] * n10 + [False] * n01 + [False] * n00
    b = [True] * n11 + [False] * n10 + [True] * n01 + [False] * n00
    return np.array(a), np.array(b)


# ---------------------------------------------------------------- paired_contrast


def test_mcnemar_exact_hand_example():
    # 10 pairs, b10 = 6, b01 = 1: p = 2 P(Binom(7, 1/2) <= 1) = 2 * 8 / 128
    c = paired_contrast(*pairs(n11=2, n10=6, n01=1, n00=1))
    assert (c["n_pairs"], c["n_10"], c["n_01"]) == (10, 6, 1)
    assert c["p_mcnemar"] == pytest.approx(0.125)
    assert (c["rate_a"], c["rate_b"]) == pytest.approx((0.8, 0.3))
    assert c["diff"] == pytest.approx(0.5)
    assert c["odds_ratio"] == pytest.approx(6.0)
    assert not c["identical_outcomes"]


def test_mcnemar_more_hand_values():
    # 1 vs 4 discordant: 2 P(X <= 1 | 5, 1/2) = 2 * 6 / 32
    assert paired_contrast(*pairs(n10=1, n01=4, n00=3))["p_mcnemar"] == pytest.approx(12 / 32)
    # 5 vs 0: 2 / 32
    assert paired_contrast(*pairs(n11=3, n10=5))["p_mcnemar"] == pytest.approx(2 / 32)
    # balanced discordance: p = 1
    assert paired_contrast(*pairs(n10=3, n01=3, n00=2))["p_mcnemar"] == pytest.approx(1.0)


def test_no_discordant_pairs():
    c = paired_contrast(*pairs(n11=4, n00=6))
    assert c["p_mcnemar"] == 1.0 and c["diff"] == 0.0
    assert c["identical_outcomes"]
    assert c["diff_low"] < 0 < c["diff_high"]  # no evidence, but not a zero-width interval
    assert all(math.isnan(c[k]) for k in ("odds_ratio", "odds_ratio_low", "odds_ratio_high"))
    c = paired_contrast(*pairs(n11=7))  # both cells always single-mode
    assert c["p_mcnemar"] == 1.0 and c["rate_a"] == c["rate_b"] == 1.0
    # a rate of 1 in 7 seeds is compatible with a true rate down to the Wilson lower end
    assert -1.0 < c["diff_low"] < 0.0 < c["diff_high"] < 1.0
    assert c["diff_low"] == pytest.approx(-c["diff_high"])


def test_no_pairs_is_all_nan():
    c = paired_contrast([], [])
    assert c["n_pairs"] == 0 and not c["identical_outcomes"]
    assert all(math.isnan(c[k]) for k in ("rate_a", "diff", "diff_low", "p_mcnemar"))


def test_newcombe_interval_matches_published_value():
    # Fagerland, Lydersen & Laake (2017) ch. 8, Cavo et al. (2012): table [[59, 6], [16, 80]]
    # Newcombe square-and-add: -0.0621 (95% CI -0.1186 to -0.0046)
    c = paired_contrast(*pairs(n11=59, n10=6, n01=16, n00=80))
    assert c["diff"] == pytest.approx(-0.0621, abs=5e-5)
    assert c["diff_low"] == pytest.approx(-0.1186, abs=5e-5)
    assert c["diff_high"] == pytest.approx(-0.0046, abs=5e-5)


def test_interval_contains_estimate_and_stays_in_range():
    # every 2x2 table with 7 pairs
    for n11, n10, n01 in itertools.product(range(8), repeat=3):
        n00 = 7 - n11 - n10 - n01
        if n00 < 0:
            continue
        c = paired_contrast(*pairs(n11, n10, n01, n00))
        assert -1.0 <= c["diff_low"] <= c["diff"] <= c["diff_high"] <= 1.0
        assert c["diff_low"] < c["diff_high"]
        assert 0.0 <= c["p_mcnemar"] <= 1.0


def test_swapping_the_cells_mirrors_the_contrast():
    a, b = pairs(n11=5, n10=7, n01=2, n00=6)
    ab, ba = paired_contrast(a, b), paired_contrast(b, a)
    assert ba["diff"] == pytest.approx(-ab["diff"])
    assert (ba["diff_low"], ba["diff_high"]) == pytest.approx((-ab["diff_high"], -ab["diff_low"]))
    assert ba["p_mcnemar"] == pytest.approx(ab["p_mcnemar"])
    assert ba["odds_ratio"] == pytest.approx(1 / ab["odds_ratio"])
    assert ba["odds_ratio_low"] == pytest.approx(1 / ab["odds_ratio_high"])


def test_odds_ratio_interval_is_exact_clopper_pearson():
    c = paired_contrast(*pairs(n11=5, n10=7, n01=2, n00=6))
    assert c["odds_ratio"] == pytest.approx(3.5)
    assert c["odds_ratio_low"] < c["odds_ratio"] < c["odds_ratio_high"]
    pl = c["odds_ratio_low"] / (1 + c["odds_ratio_low"])
    pu = c["odds_ratio_high"] / (1 + c["odds_ratio_high"])
    # the Clopper-Pearson ends solve P(X >= 7 | 9, pl) = 0.025 and P(X <= 7 | 9, pu) = 0.025
    assert stats.binom.sf(6, 9, pl) == pytest.approx(0.025, rel=1e-6)
    assert stats.binom.cdf(7, 9, pu) == pytest.approx(0.025, rel=1e-6)
    one_sided = paired_contrast(*pairs(n10=4, n00=3))
    assert one_sided["odds_ratio"] == math.inf and one_sided["odds_ratio_high"] == math.inf
    assert one_sided["odds_ratio_low"] > 0


def test_misaligned_input_is_an_error():
    with pytest.raises(ValueError):
        paired_contrast([True, False], [True])


# ---------------------------------------------------------------- holm_adjust


def test_holm_hand_examples():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    np.testing.assert_allclose(holm_adjust([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    # 0.2 * 2 = 0.4; 0.6 * 1 = 0.6
    np.testing.assert_allclose(holm_adjust([0.6, 0.2]), [0.6, 0.4])
    # capped at 1, and monotone after the cap
    np.testing.assert_allclose(holm_adjust([0.5, 0.7]), [1.0, 1.0])
    np.testing.assert_allclose(holm_adjust([0.3, 0.4, 0.5]), [0.9, 0.9, 0.9])
    np.testing.assert_allclose(holm_adjust([0.02]), [0.02])


def test_holm_passes_nan_through_and_leaves_it_out_of_the_family():
    out = holm_adjust([0.01, np.nan, 0.04, 0.03])  # m = 3: 0.01 * 3, 0.03 * 2, max(0.04, 0.06)
    np.testing.assert_allclose(out, [0.03, np.nan, 0.06, 0.06])
    assert np.isnan(holm_adjust([np.nan, np.nan])).all()
    assert holm_adjust([]).shape == (0,)


# ---------------------------------------------------------------- cell_contrasts

ADVI = {"model": "marginal", "method": "advi", "optimizer": "adam_1e-2", "iterations": 10000.0,
        "init": "jitter", "batch_size": 128.0, "chains": np.nan, "data_regime": "default"}
NUTS = {**ADVI, "method": "nuts", "optimizer": "none", "iterations": np.nan, "init": "none",
        "batch_size": np.nan}
CAVI = {**ADVI, "method": "cavi", "optimizer": "none", "iterations": 500.0, "init": "default",
        "batch_size": np.nan}

CELLS = {
    "marginal-advi-it10000": (ADVI, ["mode_A", "mode_B", "spanning", "failed", "mode_A"]),
    "marginal-advi-it10000-hard": ({**ADVI, "data_regime": "hard"}, ["mode_A"] * 5),
    # seed 4 missing; differs from the first cell in iterations only
    "marginal-advi-it50000": ({**ADVI, "iterations": 50000.0},
                              ["mode_B", "mode_A", "mode_A", "not_converged"]),
    "marginal-cavi-default": (CAVI, ["mode_A", "mode_A", "mode_B", "mode_A", "mode_B"]),
    "marginal-cavi-jitter": ({**CAVI, "init": "jitter"},
                             ["mode_B", "mode_A", "mode_A", "mode_B", "mode_A"]),
    # differs from the first cell in method, from the it50000 cell in method AND iterations
    "marginal-fullrank-it10000": ({**ADVI, "method": "fullrank_advi"},
                                  ["collapsed", "mode_A", "mode_B", "mode_B", "spanning"]),
    "marginal-nuts-c1": ({**NUTS, "chains": 1.0}, ["mode_A"] * 5),
    "marginal-nuts-c4": ({**NUTS, "chains": 4.0}, ["spanning"] * 5),
}


@pytest.fixture()
def fits():
    rows = []
    for cell_id, (axes, outcomes) in CELLS.items():
        for seed, outcome in enumerate(outcomes):
            rows.append({"cell_id": cell_id, "grid": "g", **axes, "seed": seed, "level": "fit",
                         "chain": -1, "outcome": outcome})
            if axes["method"] == "nuts":  # chain rows must be ignored
                rows += [{"cell_id": cell_id, **axes, "seed": seed, "level": "chain",
                          "chain": c, "outcome": "mode_B"} for c in range(int(axes["chains"]))]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # order must not matter


def test_cell_contrasts_builds_the_one_factor_family(fits):
    table = cell_contrasts(fits)
    assert list(table.columns) == list(CONTRAST_COLUMNS)
    got = {(r.cell_a, r.cell_b): r for r in table.itertuples()}
    assert set(got) == {
        ("marginal-advi-it10000", "marginal-advi-it50000"),
        ("marginal-advi-it10000", "marginal-fullrank-it10000"),
        ("marginal-cavi-default", "marginal-cavi-jitter"),
        ("marginal-nuts-c1", "marginal-nuts-c4"),
    }  # not: it50000 vs fullrank (two axes), the "hard" regime, nuts/cavi vs advi

    iters = got["marginal-advi-it10000", "marginal-advi-it50000"]
    assert (iters.axis, iters.level_a, iters.level_b) == ("iterations", "10000", "50000")
    assert iters.shared == ("model=marginal, method=advi, optimizer=adam_1e-2, init=jitter, "
                            "batch_size=128")
    # seeds 0-3 only: a = 1 1 0 0 (failed counts as not single-mode), b = 1 1 1 0
    assert (iters.n_pairs, iters.n_10, iters.n_01) == (4, 0, 1)
    assert (iters.rate_a, iters.rate_b, iters.diff) == pytest.approx((0.5, 0.75, -0.25))
    assert iters.p_mcnemar == pytest.approx(1.0)
    assert iters.odds_ratio == 0.0

    method = got["marginal-advi-it10000", "marginal-fullrank-it10000"]
    assert (method.axis, method.level_a, method.level_b) == ("method", "advi", "fullrank_advi")
    assert (method.n_pairs, method.n_10, method.n_01) == (5, 2, 2)
    assert method.diff == 0.0 and method.p_mcnemar == pytest.approx(1.0)

    chains = got["marginal-nuts-c1", "marginal-nuts-c4"]  # NaN axes compare equal
    assert (chains.axis, chains.level_a, chains.level_b) == ("chains", "1", "4")
    assert chains.shared == "model=marginal, method=nuts"
    assert (chains.n_pairs, chains.n_10, chains.n_01) == (5, 5, 0)
    assert chains.p_mcnemar == pytest.approx(2 / 32)
    assert chains.rate_a == 1.0 and chains.rate_b == 0.0
    assert not chains.deterministic and not chains.identical_outcomes  # NUTS is random

    cavi = got["marginal-cavi-default", "marginal-cavi-jitter"]
    assert (cavi.axis, cavi.level_a, cavi.level_b) == ("init", "default", "jitter")
    assert cavi.identical_outcomes and cavi.deterministic and cavi.p_mcnemar == 1.0

    # no contrast here has the 6 discordant seeds an exact test needs to reach p < 0.05
    # (chains: 5, min p 0.0625): none is in the Holm family, and none can be significant
    assert not table["in_family"].any()
    assert (table["p_holm"] == 1.0).all()
    assert chains.p_holm == 1.0


def test_budget_levels_read_upwards_and_a_checkpointed_pair_counts_once():
    """Cell ids sort "it200000" before "it20000": the levels still read 20000 vs 200000. A
    200000-iteration cell that stored its 10000-iteration checkpoint is compared with it once
    (its checkpoint contrast), not again with the separate 10000-iteration cell."""
    rows = []
    for cell_id, iterations, outcomes in (
            ("m-it10000__x", 10000.0, ["collapsed"] * 4), ("m-it20000__x", 20000.0, ["mode_A"] * 4),
            ("m-it200000__x", 200000.0, ["mode_A", "mode_B", "mode_A", "mode_A"])):
        rows += [{"cell_id": cell_id, **ADVI, "iterations": iterations, "seed": seed,
                  "level": "fit", "chain": -1, "outcome": outcome}
                 for seed, outcome in enumerate(outcomes)]
    rows += [{"cell_id": "m-it200000__x", **ADVI, "iterations": 200000.0, "seed": seed,
              "level": "checkpoint", "chain": -1, "checkpoint_iteration": budget,
              "outcome": "collapsed" if budget == 10000 else "mode_A"}
             for seed in range(4) for budget in (10000.0, 200000.0)]
    table = cell_contrasts(pd.DataFrame(rows))
    got = {(r.cell_a, r.cell_b, r.level_a, r.level_b) for r in table.itertuples()}
    assert got == {("m-it10000__x", "m-it20000__x", "10000", "20000"),
                   ("m-it20000__x", "m-it200000__x", "20000", "200000"),
                   ("m-it200000__x", "m-it200000__x", "10000", "200000")}
    same_runs = table[table["cell_a"] == table["cell_b"]].iloc[0]
    assert (same_runs.rate_a, same_runs.rate_b) == (0.0, 1.0)


def test_cell_contrasts_survives_parquet_and_empty_input(fits, tmp_path):
    table = cell_contrasts(fits)
    table.to_parquet(tmp_path / "c.parquet", index=False)
    back = pd.read_parquet(tmp_path / "c.parquet")
    pd.testing.assert_frame_equal(back, table)
    one_cell = fits[fits["cell_id"] == "marginal-nuts-c1"]
    empty = cell_contrasts(one_cell)
    assert empty.empty and list(empty.columns) == list(CONTRAST_COLUMNS)
    empty.to_parquet(tmp_path / "e.parquet", index=False)


def test_cell_contrasts_rejects_duplicate_seeds(fits):
    with pytest.raises(ValueError, match="more than one fit row"):
        cell_contrasts(pd.concat([fits, fits[fits["level"] == "fit"].head(1)]))


def test_every_contrast_column_is_documented():
    text = (REPO / "workflow" / "report" / "columns.md").read_text()
    section = text.split("## `data/tables/contrasts.{csv,parquet}`", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([a-z_0-9]+)`", section))
    assert set(CONTRAST_COLUMNS) <= documented


def test_aggregate_writes_the_contrast_tables(fits, tmp_path):
    from vimodes.pipeline import aggregate

    fits = fits.assign(fit_seconds=1.0)
    half = len(fits) // 2
    paths = [tmp_path / "one.parquet", tmp_path / "two.parquet"]
    fits.iloc[:half].to_parquet(paths[0], index=False)  # chunks split the seeds of a cell
    fits.iloc[half:].to_parquet(paths[1], index=False)
    out = {name: {ext: str(tmp_path / f"{name}.{ext}") for ext in ("csv", "parquet")}
           for name in ("fits", "cells", "by_class", "contrasts")}
    aggregate([str(p) for p in paths], out["fits"], out["cells"], out["by_class"],
              out["contrasts"])
    written = pd.read_parquet(out["contrasts"]["parquet"])
    pd.testing.assert_frame_equal(written, cell_contrasts(fits), check_dtype=False)
    assert list(pd.read_csv(out["contrasts"]["csv"]).columns) == list(CONTRAST_COLUMNS)


def test_min_attainable_p_is_the_most_extreme_split_of_the_exact_test():
    from scipy import stats

    from vimodes.contrasts import min_attainable_mcnemar_p, min_discordant

    for d in range(0, 12):
        extreme = stats.binomtest(d, d, 0.5).pvalue if d else 1.0
        assert min_attainable_mcnemar_p(d) == pytest.approx(min(1.0, extreme))
    assert min_attainable_mcnemar_p(5) == pytest.approx(0.0625)
    assert min_discordant(0.05) == 6 and min_discordant(0.01) == 8
    with pytest.raises(ValueError):
        min_attainable_mcnemar_p(-1)


def test_holm_family_leaves_out_contrasts_that_cannot_reach_alpha():
    """Tarone's refinement: one contrast with 7 of 7 discordant seeds one way (p = 0.0156) among
    cells that agree on every seed. Plain Holm over all 4 contrasts would give 0.0625 (no
    difference at 0.05); only the one contrast can reach 0.05, so it alone is the family."""
    rows = []
    outcomes = {"m-a": ["mode_A"] * 10, "m-b": ["mode_A"] * 3 + ["collapsed"] * 7}
    for cell_id, init in (("m-a", "default"), ("m-b", "jitter")):
        rows += [{"cell_id": cell_id, **ADVI, "init": init, "seed": seed, "level": "fit",
                  "chain": -1, "outcome": outcome}
                 for seed, outcome in enumerate(outcomes[cell_id])]
    for cell_id, optimizer in (("m-c", "adam_1e-3"), ("m-d", "adam_5e-2")):
        rows += [{"cell_id": cell_id, **ADVI, "optimizer": optimizer, "init": "default",
                  "seed": seed, "level": "fit", "chain": -1, "outcome": "mode_A"}
                 for seed in range(10)]
    table = cell_contrasts(pd.DataFrame(rows)).set_index(["cell_a", "cell_b"])
    assert len(table) == 4
    tested = table.loc[("m-a", "m-b")]
    assert (tested.n_10, tested.n_01) == (7, 0)
    assert tested.in_family and tested.p_holm == pytest.approx(tested.p_mcnemar)
    assert tested.p_mcnemar == pytest.approx(2 * 0.5 ** 7)
    assert holm_adjust(table["p_mcnemar"]).min() == pytest.approx(4 * 2 * 0.5 ** 7)
    others = table.drop(index=("m-a", "m-b"))
    assert not others["in_family"].any() and (others["p_holm"] == 1.0).all()
