"""Deterministic ADVI (vimodes.dadvi_fit): the objective and optimum of pymc-extras' fit_dadvi,
a fit record like the other methods', and failures as data."""

import numpy as np
import pytest

from vimodes.fitters import make_fitter
from vimodes.fitting import FitSettings
from vimodes.simulate import DataRegime, simulate

from helpers import one_worker

pytestmark = one_worker(__name__)

N_OBS = 300
SEED_BASE = 11


@pytest.fixture(scope="module")
def data():
    return simulate(DataRegime(n_obs=N_OBS), 0, SEED_BASE)


@pytest.fixture(scope="module")
def fitter():
    settings = FitSettings(model="marginal", method="dadvi", draws=200, khat_draws=200,
                           elbo_draws=20, likelihood="fused")  # as in the study
    return make_fitter(settings, N_OBS)


def test_optimum_equals_pymc_extras_fit_dadvi(fitter, data):
    """Same fixed draws (pymc-extras draws them from default_rng(random_seed)) and the same
    start (the marginal model's initial point is 0 in every unconstrained coordinate, where
    fit_dadvi starts): the same optimum."""
    from pymc_extras.inference.dadvi.dadvi import fit_dadvi

    fitter.set_data(data)
    assert np.all(fitter.default_start == 0.0)
    idata = fit_dadvi(model=fitter.model, random_seed=7, optimizer_method="L-BFGS-B",
                      progressbar=False)
    fixed = np.random.default_rng(7).standard_normal((30, fitter.n_params))
    ours = fitter.optimise(fixed, fitter.default_start)
    assert ours.success
    np.testing.assert_allclose(ours.x, idata.optimizer_result["x"].values, atol=1e-4)
    np.testing.assert_allclose(ours.fun, float(idata.optimizer_result["fun"]), rtol=1e-8)


def test_fit_lands_on_a_mode_with_a_full_record(fitter, data):
    result = fitter.fit(data, SEED_BASE, 0)
    assert result.status == "ok", result.error
    assert result.draws["slopes"].shape == (1, 200, 2)
    means = np.sort(result.draws["slopes"].mean(axis=(0, 1)))
    # one line per true slope; the optimum of the fixed-draw objective differs from the exact
    # ELBO optimum by its Monte Carlo error, so not to the posterior sd (0.01 here)
    np.testing.assert_allclose(means, [-1.0, 3.0], atol=0.25)
    info = result.info
    assert info["khat_draws"] == 200 and info["psis_khat"] is not None
    assert np.isfinite(info["elbo_full"]) and info["iterations_done"] > 0
    again = fitter.fit(data, SEED_BASE, 0)
    np.testing.assert_array_equal(again.draws["slopes"], result.draws["slopes"])
    other = fitter.fit(data, SEED_BASE, 1)
    assert not np.array_equal(other.info["flat_start"], info["flat_start"]) or \
        not np.array_equal(other.draws["slopes"], result.draws["slopes"])


def test_an_optimiser_error_is_a_failed_record(fitter, data, monkeypatch):
    def broken(*args, **kwargs):
        raise FloatingPointError("overflow")

    monkeypatch.setattr(fitter, "optimise", broken)
    result = fitter.fit(data, SEED_BASE, 0)
    assert result.status == "failed" and "FloatingPointError" in result.error
