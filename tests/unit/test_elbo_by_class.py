"""The ELBO-by-class figure and text: gaps to the best single-mode fit on the same data set,
computed per data set and per fitted K, read back from what is drawn."""

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")


def _fits():
    rows = []
    for seed, offset in ((0, 0.0), (1, 1e5)):  # two data sets with very different ELBO levels
        for method, outcome, elbo in (("advi", "mode_A", 10.0), ("advi", "mode_B", 4.0),
                                      ("fullrank_advi", "mode_A", -990.0),
                                      ("advi", "collapsed", -2e5)):
            rows.append({"level": "fit", "model": "marginal", "data_regime": "default",
                         "seed": seed, "method": method, "outcome": outcome,
                         "model_components": 2, "elbo_full": elbo + offset})
    rows.append({"level": "fit", "model": "as_asked", "data_regime": "default", "seed": 0,
                 "method": "advi", "outcome": "mode_A", "model_components": 2,
                 "elbo_full": 1e9})  # another model's density: not compared
    rows.append({"level": "chain", "model": "marginal", "data_regime": "default", "seed": 0,
                 "method": "advi", "outcome": "mode_A", "model_components": 2,
                 "elbo_full": 1e9})  # a chain row: not a fit
    return pd.DataFrame(rows)


def test_gaps_are_to_the_best_single_mode_fit_of_the_same_data_set():
    from vimodes.figure_tables import elbo_gap_rows

    rows = elbo_gap_rows(_fits())
    assert len(rows) == 8
    gaps = rows.groupby(["method", "outcome"])["elbo_gap"].agg(["min", "max"])
    assert tuple(gaps.loc[("advi", "mode_A")]) == (0.0, 0.0)
    assert tuple(gaps.loc[("advi", "mode_B")]) == (-6.0, -6.0)
    assert tuple(gaps.loc[("fullrank_advi", "mode_A")]) == (-1000.0, -1000.0)
    assert tuple(gaps.loc[("advi", "collapsed")]) == pytest.approx((-200010.0, -200010.0))


def test_figure_draws_every_fit_and_the_text_states_the_medians():
    from vimodes.plots import fig_elbo_by_class
    from vimodes.report import elbo_text

    fig = fig_elbo_by_class(_fits())
    try:
        points = sum(len(c.get_offsets()) for c in fig.axes[0].collections)
        assert points == 8
        drawn = np.concatenate([c.get_offsets()[:, 1] for c in fig.axes[0].collections])
        assert sorted(set(np.round(drawn, 6))) == [-200010.0, -1000.0, -6.0, 0.0]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    text = elbo_text(_fits())
    assert "meanfield ADVI: mode A 0 (n=2), mode B -6 (n=2)" in text
    assert "collapsed (modes averaged) -200,010 (n=2)" in text
    assert "fullrank ADVI: mode A -1,000 (n=2)" in text
