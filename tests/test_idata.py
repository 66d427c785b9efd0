"""Fit files are plain ArviZ InferenceData: az.summary and az.plot_trace work on them without
project code, with the components as a named dimension; the project's reader gets the arrays
back unchanged."""

import json

import arviz as az
import matplotlib
import numpy as np
import pytest

from vimodes.idata import read_posterior, write_posterior

matplotlib.use("Agg")


class _Result:
    def __init__(self, draws, sample_stats=None):
        self.draws, self.sample_stats = draws, sample_stats or {}


@pytest.fixture()
def fit_file(tmp_path):
    rng = np.random.default_rng(0)
    draws = {"slopes": np.array([3.0, -1.0]) + 0.01 * rng.normal(size=(2, 300, 2)),
             "weights": np.full((2, 300, 2), 0.5) + 0.001 * rng.normal(size=(2, 300, 2)),
             "sigma": 0.1 + 0.001 * rng.normal(size=(2, 300))}
    path = tmp_path / "seed-0.nc"
    write_posterior(path, _Result(draws), {"seed": 0, "method": "nuts", "fit_seconds": 1.0})
    return path, draws


def test_arviz_reads_a_fit_file_with_named_components(fit_file):
    path, draws = fit_file
    idata = az.from_netcdf(path)
    assert idata.posterior["slopes"].dims == ("chain", "draw", "component")
    assert list(idata.posterior["component"].values) == [0, 1]
    summary = az.summary(idata, kind="stats")
    assert {"slopes[0]", "slopes[1]", "weights[0]", "weights[1]", "sigma"} == set(summary.index)
    assert summary.loc["slopes[0]", "mean"] == pytest.approx(3.0, abs=0.01)
    assert summary.loc["slopes[1]", "mean"] == pytest.approx(-1.0, abs=0.01)
    axes = az.plot_trace(idata, var_names=["slopes"])
    assert axes.shape == (1, 2)  # one row (slopes, both components), density and trace
    import matplotlib.pyplot as plt

    plt.close("all")
    record = json.loads(idata.posterior.attrs["fit_record"])
    assert record == {"method": "nuts", "seed": 0}  # timings stay out of the file


def test_the_project_reader_returns_the_arrays_written(fit_file):
    path, draws = fit_file
    back = read_posterior(path)
    assert set(back) == set(draws)
    for name, values in draws.items():
        np.testing.assert_array_equal(back[name], values)
