"""The label-switching figure: one multi-chain NUTS fit whose chains span both permutation
modes is picked from the fit table (spanning, status ok, 4 chains preferred, first cell, smallest
seed), every draw of its slopes is read from its posterior file into a long table, and
az.plot_trace + az.plot_rank draw that table (or say that there is no such fit)."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from vimodes import figure_tables, plots  # noqa: E402
from vimodes.figure_specs import FIGURE_SPECS, TABLE_RULES  # noqa: E402
from vimodes.idata import write_posterior  # noqa: E402

N_DRAW = 30
CELL_4 = "marginal__nuts__chains4"
CELL_2 = "marginal__nuts__chains2"  # sorts before CELL_4: chosen only when no 4-chain fit spans
CELL_1 = "marginal__nuts__chains1"
CELL_VI = "marginal__advi__adam"


def _slopes(n_chain: int, key: int) -> np.ndarray:
    """Chains alternately in mode (3, -1) and mode (-1, 3); distinct values per fit (key)."""
    rng = np.random.default_rng(key)
    modes = np.array([[3.0, -1.0], [-1.0, 3.0]])
    return modes[np.arange(n_chain) % 2][:, None, :] + 0.05 * rng.normal(size=(n_chain, N_DRAW, 2))


def _row(cell_id, seed, method="nuts", chains=4, outcome="spanning", status="ok", level="fit"):
    return {"cell_id": cell_id, "seed": seed, "method": method, "model": "marginal",
            "chains": chains, "outcome": outcome, "status": status, "level": level}


def _write(root, cell_id, chunk, seed, slopes) -> None:
    folder = root / cell_id / f"chunk-{chunk}"
    n_chain = slopes.shape[0]
    draws = {"slopes": slopes, "weights": np.full((n_chain, N_DRAW, 2), 0.5),
             "sigma": np.full((n_chain, N_DRAW), 0.1)}
    write_posterior(folder / f"seed-{seed}.nc", SimpleNamespace(draws=draws, sample_stats={}),
                    {"cell_id": cell_id, "seed": seed, "method": "nuts"})


@pytest.fixture()
def study(tmp_path):
    """Fit files and a fit table with decoys around the expected pick (CELL_4, seed 3)."""
    files = {  # (cell, chunk, seed) -> chains
        (CELL_4, 0, 1): 4, (CELL_4, 0, 2): 4, (CELL_4, 1, 3): 4, (CELL_4, 1, 5): 4, (CELL_4, 2, 7): 4,
        (CELL_2, 0, 0): 2, (CELL_1, 0, 0): 1, (CELL_VI, 0, 0): 1,
    }
    slopes = {}
    for key, (cell, chunk, seed) in enumerate(files):
        slopes[(cell, seed)] = _slopes(files[(cell, chunk, seed)], key)
        _write(tmp_path, cell, chunk, seed, slopes[(cell, seed)])
    rows = [
        _row(CELL_4, 2, outcome="mode_A"),          # smaller seed, but not spanning
        _row(CELL_4, 3),                            # <- the pick
        _row(CELL_4, 5),                            # spanning, larger seed
        _row(CELL_4, 1, status="failed"),           # smaller seed, not ok
        _row(CELL_4, 0),                            # smallest seed, but no posterior file
        _row(CELL_4, 2, level="chain"),             # a per-chain row, not a fit
        _row(CELL_2, 0, chains=2),                  # spanning, earlier cell, only 2 chains
        _row(CELL_1, 0, chains=1),                  # one chain cannot switch between chains
        _row(CELL_VI, 0, method="advi", chains=np.nan),
    ]
    dirs = sorted({tmp_path / cell / f"chunk-{chunk}" for cell, chunk, _ in files})
    return pd.DataFrame(rows), dirs, slopes


def test_picks_the_smallest_seed_of_a_spanning_four_chain_fit(study):
    fits, dirs, slopes = study
    table = figure_tables.make_nuts_chain_draws(fits, dirs)
    assert list(table.columns) == list(figure_tables.NUTS_CHAIN_COLUMNS)
    assert set(table["cell_id"]) == {CELL_4} and set(table["seed"]) == {3}
    expected = slopes[(CELL_4, 3)]
    assert len(table) == expected.size  # 4 chains x N_DRAW draws x 2 slopes, nothing else
    assert sorted(table["variable"].unique()) == ["slopes[0]", "slopes[1]"]
    for k in range(2):
        sub = table[table["variable"] == f"slopes[{k}]"]
        wide = sub.pivot(index="chain", columns="draw", values="value")
        assert list(wide.index) == [0, 1, 2, 3] and list(wide.columns) == list(range(N_DRAW))
        np.testing.assert_array_equal(wide.to_numpy(), expected[:, :, k])


def test_falls_back_to_fewer_chains_and_is_empty_without_a_spanning_fit(study):
    fits, dirs, slopes = study
    two_only = fits[fits["cell_id"] != CELL_4]
    table = figure_tables.make_nuts_chain_draws(two_only, dirs)
    assert set(table["cell_id"]) == {CELL_2} and sorted(table["chain"].unique()) == [0, 1]
    np.testing.assert_array_equal(
        table[table["variable"] == "slopes[1]"].sort_values(["chain", "draw"])["value"],
        slopes[(CELL_2, 0)][:, :, 1].ravel())
    # no multi-chain NUTS fit is spanning (the 1-chain and the VI fit are, here): empty table
    none = fits.assign(outcome=np.where(fits["chains"].fillna(1) >= 2, "mode_B", "spanning"))
    empty = figure_tables.make_nuts_chain_draws(none, dirs)
    assert empty.empty and list(empty.columns) == list(figure_tables.NUTS_CHAIN_COLUMNS)
    assert figure_tables.select_spanning_nuts_fit(fits, available=[]) is None  # no posterior files


def test_the_figure_draws_trace_and_rank_of_every_chain(study):
    fits, dirs, slopes = study
    table = figure_tables.make_nuts_chain_draws(fits, dirs)
    idata = plots.nuts_chain_idata(table)
    assert idata.posterior["slopes"].dims == ("chain", "draw", "component")
    np.testing.assert_array_equal(idata.posterior["slopes"].values, slopes[(CELL_4, 3)])
    with plt.rc_context(plots.STYLE):
        fig = plots.FIGURES["nuts_chains"](nuts_chain_draws=table)
    try:
        assert len(fig.axes) == 6  # per slope: density, trace, rank
        titles = [ax.get_title() for ax in fig.axes]
        assert titles[1] == "slopes[0]: trace of each chain"
        assert titles[2].startswith("slopes[0]: rank plot, R-hat ")
        assert float(titles[2].rsplit(" ", 1)[1]) > 1.5  # chains in different modes
        assert fig._suptitle.get_text() == f"{CELL_4}, seed 3: 4 NUTS chains"
        for row in range(2):  # one trace line per chain holding exactly that chain's draws
            traces = [line.get_ydata() for line in fig.axes[3 * row + 1].get_lines()]
            assert len(traces) == 4
            for chain, values in enumerate(traces):
                np.testing.assert_array_equal(values, slopes[(CELL_4, 3)][chain, :, row])
        assert len(fig.axes[2].patches) > 0  # the rank histograms
    finally:
        plt.close(fig)


def test_the_figure_says_so_for_an_empty_table(study):
    fits, dirs, _ = study
    empty = figure_tables.make_nuts_chain_draws(fits.iloc[:0], dirs)
    fig = plots.FIGURES["nuts_chains"](nuts_chain_draws=empty)
    try:
        (ax,) = fig.axes
        assert not ax.axison and not ax.get_lines()
        (message,) = ax.texts
        assert message.get_text().startswith("no ")
    finally:
        plt.close(fig)


def test_the_figure_is_registered_with_its_table_rule():
    spec = FIGURE_SPECS["nuts_chains"]
    assert spec.inputs == ("nuts_chain_draws",) and "nuts_chain_draws" in TABLE_RULES
    assert spec.section == FIGURE_SPECS["slope_draws"].section
    assert spec.category == FIGURE_SPECS["slope_draws"].category
