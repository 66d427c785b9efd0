"""The optional JAX backend: the fused likelihood's JAX implementation and numpyro NUTS (CPU,
small N; the GPU timing is a benchmark, not a test)."""

import numpy as np
import pytest

pytest.importorskip("numpyro")

import pytensor  # noqa: E402
import pytensor.tensor as pt  # noqa: E402

from vimodes.fastlik import (  # noqa: E402
    fused_loglike_and_grad,
    mixture_regression_loglike,
    register_jax_dispatch,
)
from vimodes.fitters import make_fitter  # noqa: E402
from vimodes.fitting import FitSettings  # noqa: E402
from vimodes.simulate import DataRegime, simulate  # noqa: E402

N = 400
SEED_BASE = 5


def test_jax_likelihood_and_gradient_equal_the_numba_kernel():
    register_jax_dispatch()
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, 3000)
    y = np.where(rng.random(3000) < 0.3, 3 * x, -x) + rng.normal(0, 0.2, 3000)
    w, b, s = pt.vector("w"), pt.vector("b"), pt.scalar("s")
    logp = mixture_regression_loglike(pt.as_tensor(x), pt.as_tensor(y), w, b, s)
    fn = pytensor.function([w, b, s], [logp, *pytensor.grad(logp, [w, b, s])], mode="JAX")
    for _ in range(5):
        point = (rng.dirichlet([1, 1]), rng.normal(0, 2, 2), rng.uniform(0.05, 2))
        for got, expected in zip(fn(*point), fused_loglike_and_grad(x, y, *point)):
            np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10, atol=1e-10)
    # far from the data with a small sigma every component's density underflows exp(): the
    # log-sum-exp must shift by the largest term to stay finite and exact
    far = (np.array([0.5, 0.5]), np.array([40.0, -35.0]), 0.01)
    got, expected = fn(*far), fused_loglike_and_grad(x, y, *far)
    assert np.isfinite(expected[0]) and expected[0] < -1e6
    for g, e in zip(got, expected):
        np.testing.assert_allclose(np.asarray(g), e, rtol=1e-10)
    invalid = fn(np.array([0.5, 0.5]), np.array([1.0, 2.0]), -1.0)
    assert np.asarray(invalid[0]) == -np.inf
    assert all(np.all(np.asarray(g) == 0) for g in invalid[1:])
    # a weight of exactly 0 leaves that component out of the value (no NaN from log 0)
    zero = fn(np.array([1.0, 0.0]), np.array([3.0, -1.0]), 0.2)[0]
    assert np.asarray(zero) == pytest.approx(
        fused_loglike_and_grad(x, y, np.array([1.0, 0.0]), np.array([3.0, -1.0]), 0.2)[0],
        rel=1e-12)


def test_jax_likelihood_equals_the_numba_kernel_for_three_components():
    register_jax_dispatch()
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, 2000)
    y = 3 * x + rng.normal(0, 0.1, 2000)
    w, b, s = pt.vector("w"), pt.vector("b"), pt.scalar("s")
    logp = mixture_regression_loglike(pt.as_tensor(x), pt.as_tensor(y), w, b, s)
    fn = pytensor.function([w, b, s], [logp, *pytensor.grad(logp, [w, b, s])], mode="JAX")
    for _ in range(3):
        point = (rng.dirichlet([1, 1, 1]), rng.normal(0, 2, 3), rng.uniform(0.05, 2))
        for got, expected in zip(fn(*point), fused_loglike_and_grad(x, y, *point)):
            np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def datasets():
    return {s: simulate(DataRegime(n_obs=N), seed=s, seed_base=SEED_BASE) for s in (0, 1)}


# ~50 s of JAX compiling per model: make test-slow (numpyro is the optional NUTS backend)
@pytest.mark.slow
@pytest.mark.parametrize("model", ["marginal", "ordered"])
def test_numpyro_nuts_is_seeded_swaps_data_and_finds_a_mode(datasets, model):
    settings = FitSettings(model=model, method="nuts", chains=2, draws=150, tune=150,
                           sampler="numpyro", likelihood="fused")
    chunk = make_fitter(settings, N)
    in_chunk = [chunk.fit(datasets[s], SEED_BASE, s) for s in (0, 1)]
    alone = make_fitter(settings, N).fit(datasets[1], SEED_BASE, 1)
    assert [r.status for r in (*in_chunk, alone)] == ["ok"] * 3
    for name in ("slopes", "weights", "sigma"):
        assert in_chunk[1].draws[name].shape[:2] == (2, 150)
        np.testing.assert_array_equal(in_chunk[1].draws[name], alone.draws[name])
    assert not np.array_equal(in_chunk[0].draws["slopes"], in_chunk[1].draws["slopes"])
    for result in in_chunk:
        slopes = result.draws["slopes"].mean(axis=1)  # per chain
        for chain in slopes:
            assert np.allclose(np.sort(chain), [-1, 3], atol=0.15)
        if model == "ordered":
            assert np.all(np.diff(result.draws["slopes"], axis=-1) > 0)
        assert abs(result.draws["sigma"].mean() - 0.1) < 0.02
        assert result.info["gradient_evaluations"] > 0
        assert result.sample_stats["diverging"].shape == (2, 150)


# one compiled call for every chain of every seed (the GPU path): make test-slow
@pytest.mark.slow
def test_numpyro_fit_many_samples_each_seed_on_its_own(datasets):
    settings = FitSettings(model="marginal", method="nuts", chains=2, draws=150, tune=150,
                           sampler="numpyro", likelihood="fused")
    fitter = make_fitter(settings, N)
    forward = fitter.fit_many([datasets[0], datasets[1]], SEED_BASE, [0, 1])
    backward = fitter.fit_many([datasets[1], datasets[0]], SEED_BASE, [1, 0])
    assert [r.status for r in (*forward, *backward)] == ["ok"] * 4
    for name in ("slopes", "weights", "sigma"):
        assert forward[1].draws[name].shape[:2] == (2, 150)
        np.testing.assert_array_equal(forward[1].draws[name], backward[0].draws[name])
        np.testing.assert_array_equal(forward[0].draws[name], backward[1].draws[name])
    assert not np.array_equal(forward[0].draws["slopes"], forward[1].draws["slopes"])
    alone = fitter.fit_many([datasets[1]], SEED_BASE, [1])[0]  # a chunk of one
    np.testing.assert_array_equal(alone.draws["slopes"], forward[1].draws["slopes"])
    for result in forward:
        for chain in result.draws["slopes"].mean(axis=1):
            assert np.allclose(np.sort(chain), [-1, 3], atol=0.15)
        assert abs(result.draws["sigma"].mean() - 0.1) < 0.02
        assert result.info["gradient_evaluations"] > 0
        assert result.sample_stats["diverging"].shape == (2, 150)
