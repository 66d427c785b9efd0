"""Multi-path Pathfinder fitter (vimodes.pathfinder_fit): per-path draws, reproducibility, and
equality with what ``pymc_extras.fit`` returns for the same seed."""

import numpy as np
import pytest

from vimodes.fitting import FitSettings
from vimodes.pathfinder_fit import PathfinderFitter
from vimodes.simulate import DataRegime, simulate

SEED_BASE = 123
N_OBS = 2000
PATHS = 4
DRAWS = 200
MODES = (np.array([3.0, -1.0]), np.array([-1.0, 3.0]))

# Fit seeds whose paths all reach a permutation mode on this data set. Not every seed does: a
# path can converge to a local optimum instead (e.g. pymc_extras random_seed=1 on this data set:
# one path at slopes ~(-0.14, 3.28), sigma ~0.92, ELBO ~3200 nats below the others) -- a real
# outcome of the method that the classifier has to see, not a bug of the fitter.
FIT_SEEDS = (1, 2)


@pytest.fixture(scope="module")
def data():
    return simulate(DataRegime(n_obs=N_OBS), 0, SEED_BASE)


@pytest.fixture(scope="module")
def fitter():
    settings = FitSettings(model="marginal", method="pathfinder", draws=DRAWS,
                           pathfinder_paths=PATHS, khat_draws=50)
    return PathfinderFitter(settings, N_OBS)


@pytest.fixture(scope="module")
def first_fit(fitter, data):
    return fitter.fit(data, SEED_BASE, FIT_SEEDS[0])


def test_shapes_finite_and_info(first_fit):
    r = first_fit
    assert r.status == "ok", r.error
    assert r.draws["slopes"].shape == (PATHS, DRAWS, 2)
    assert r.draws["weights"].shape == (PATHS, DRAWS, 2)
    assert r.draws["sigma"].shape == (PATHS, DRAWS)
    for values in r.draws.values():
        assert np.all(np.isfinite(values))
    np.testing.assert_allclose(r.draws["weights"].sum(axis=-1), 1.0, atol=1e-12)
    assert np.all(r.draws["sigma"] > 0)
    info = r.info
    assert info["chains_done"] == PATHS and info["draws_done"] == DRAWS
    assert info["paths_failed"] == 0 and len(info["path_status"]) == PATHS
    assert info["fit_seconds"] > 0
    for key in ("lbfgs_iterations", "elbo_argmax", "path_elbo", "path_khat"):
        assert len(info[key]) == PATHS, key
    assert all(np.isfinite(e) for e in info["path_elbo"])


@pytest.mark.parametrize("seed", FIT_SEEDS)
def test_each_path_sits_in_one_permutation_mode(fitter, data, first_fit, seed):
    r = first_fit if seed == FIT_SEEDS[0] else fitter.fit(data, SEED_BASE, seed)
    assert r.status == "ok", r.error
    for path, slopes in enumerate(r.draws["slopes"]):
        near = [bool(np.all(np.abs(slopes - mode) < 0.3)) for mode in MODES]
        assert any(near), f"seed {seed} path {path}: slopes mean {slopes.mean(axis=0)}"
    # sigma and weights of a permutation mode: near the simulated 0.1 and (0.5, 0.5)
    assert np.all(np.abs(r.draws["sigma"] - 0.1) < 0.02)
    assert np.all(np.abs(r.draws["weights"] - 0.5) < 0.1)


def test_same_seed_same_draws_whatever_ran_before(fitter, data, first_fit):
    other = fitter.fit(data, SEED_BASE, FIT_SEEDS[1])
    again = fitter.fit(data, SEED_BASE, FIT_SEEDS[0])
    for name in ("slopes", "weights", "sigma"):
        np.testing.assert_array_equal(again.draws[name], first_fit.draws[name])
        assert not np.allclose(other.draws[name], first_fit.draws[name]), name
    assert again.info["path_elbo"] == first_fit.info["path_elbo"]


def test_draws_equal_pymc_extras_fit(fitter, data, first_fit):
    """The fitter runs what pymc_extras.fit runs (serial paths, no importance sampling)."""
    import pymc_extras

    fitter.set_data(data)
    idata = pymc_extras.fit(
        method="pathfinder", model=fitter.model, num_paths=PATHS, num_draws_per_path=DRAWS,
        importance_sampling=None, random_seed=first_fit.info["pathfinder_random_seed"],
        concurrent=None, progressbar=False, display_summary=False, add_pathfinder_groups=False)
    for name in ("slopes", "weights", "sigma"):
        np.testing.assert_allclose(first_fit.draws[name], idata.posterior[name].values,
                                   rtol=0, atol=1e-12, err_msg=name)


def test_khat_is_worst_path(fitter, data):
    r = fitter.fit(data, SEED_BASE, FIT_SEEDS[0])
    khats = [k for k in r.info["path_khat"] if k is not None]
    assert fitter.khat(data, 50, SEED_BASE, FIT_SEEDS[0]) == (max(khats) if khats else None)
    with pytest.raises(ValueError):
        fitter.khat(data, 50, SEED_BASE, FIT_SEEDS[1])


def test_all_paths_failing_is_a_failed_fit(fitter, data, monkeypatch):
    def boom(seed):
        raise FloatingPointError("overflow in test")

    monkeypatch.setattr(fitter, "_single_path", boom)
    r = fitter.fit(data, SEED_BASE, FIT_SEEDS[0])
    assert r.status == "failed"
    assert "FloatingPointError: overflow in test" in r.error
    assert r.draws == {}
    assert r.info["chains_done"] == 0 and r.info["path_status"] == ["EXCEPTION"] * PATHS


def test_prior_init_is_refused():
    settings = FitSettings(model="marginal", method="pathfinder", init_kind="prior")
    with pytest.raises(ValueError, match="init kinds"):
        PathfinderFitter(settings, 10)
