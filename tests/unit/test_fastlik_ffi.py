"""The numba likelihood kernel called from XLA (vimodes.fastlik_ffi): its values are the
kernel's bit for bit, over a vmapped batch, for every input the kernel distinguishes; its
gradient through JAX equals XLA's own form; the vectorised engine's loss uses it."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")

from vimodes import fastlik_ffi  # noqa: E402
from vimodes.fastlik import (  # noqa: E402
    MixtureRegressionLogLike,
    _fused_kernel,
    _fused_kernel_into,
    register_jax_dispatch,
)

from helpers import one_worker  # noqa: E402

pytestmark = one_worker(__name__)


def _batch(n_comp: int, n_seeds: int = 4, n_points: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n_seeds, n_points))
    y = np.where(rng.random(x.shape) < 0.5, 3 * x, -x) + rng.normal(0, 0.1, x.shape)
    w = rng.dirichlet(np.ones(n_comp), n_seeds)
    slopes = rng.normal(0, 2, (n_seeds, n_comp))
    sigma = rng.uniform(0.05, 1.0, n_seeds)
    return x, y, w, slopes, sigma


def _batched_call(log_weights: bool):
    import jax

    return jax.jit(jax.vmap(lambda *args: fastlik_ffi._call(*args, log_weights)))


def test_the_custom_call_is_available_on_this_jaxlib():
    # the pinned jaxlib's CPU backend: a silent fallback to XLA's form would hide a broken ABI
    assert fastlik_ffi.available(), fastlik_ffi._STATE.get("problem")


@pytest.mark.parametrize("n_comp", [2, 3])
@pytest.mark.parametrize("log_weights", [False, True])
def test_custom_call_returns_the_kernels_values_for_every_seed_of_a_batch(n_comp, log_weights):
    assert fastlik_ffi.available()
    x, y, w, slopes, sigma = _batch(n_comp)
    if log_weights:
        w = np.log(w)
    # inputs the kernel treats apart: a zero weight, a negative one, sigma <= 0, NaN
    if not log_weights:
        w[1, 0], w[1, 1] = 0.0, w[1, 0] + w[1, 1]
        w[2, 0] = -0.1
    sigma[3] = 0.0
    slopes[0, 0] = np.nan if n_comp == 3 else slopes[0, 0]
    got = [np.asarray(out) for out in _batched_call(log_weights)(x, y, w, slopes, sigma)]
    for i in range(x.shape[0]):
        want = _fused_kernel(x[i], y[i], w[i], slopes[i], sigma[i], log_weights)
        for out, expected in zip(got, want):
            np.testing.assert_array_equal(out[i], expected)
    assert got[0][3] == -np.inf and not np.any(got[1][3]) and got[3][3] == 0.0


def test_fused_kernel_into_is_the_kernel_bit_for_bit():
    x, y, w, slopes, sigma = _batch(2, n_seeds=1, n_points=2000)
    cases = [(w[0], False), (np.log(w[0]), True), (np.array([0.0, 1.0]), False),
             (np.array([0.6, -0.1]), False), (np.array([-np.inf, 0.0]), True)]
    for weights, log_weights in cases:
        g_w, g_b = np.full(2, 7.0), np.full(2, 7.0)
        value, g_s = _fused_kernel_into(x[0], y[0], weights, slopes[0], sigma[0], log_weights,
                                        g_w, g_b)
        want = _fused_kernel(x[0], y[0], weights, slopes[0], sigma[0], log_weights)
        assert (value, g_s) == (want[0], want[3]) or (np.isnan(value) and np.isnan(want[0]))
        np.testing.assert_array_equal(g_w, want[1])
        np.testing.assert_array_equal(g_b, want[2])


@pytest.mark.parametrize("n_comp", [2, 3])
def test_gradient_through_jax_equals_xlas_own_form(n_comp):
    import jax
    from pytensor.link.jax.dispatch import jax_funcify

    register_jax_dispatch()
    assert fastlik_ffi.available()
    fastlik_ffi._register_jax_dispatch()
    x, y, w, slopes, sigma = _batch(n_comp, n_seeds=3, n_points=128)
    on_kernel = jax_funcify(fastlik_ffi.MixtureRegressionLogLikeOnCPUKernel(False))
    on_xla = jax_funcify(MixtureRegressionLogLike(False))

    def value_and_grad(loglike):
        # a loss of the shape the engine differentiates: scaled, inside vmap and jit
        def loss(w_, slopes_, sigma_, x_, y_):
            return -2.5 * loglike(x_, y_, w_, slopes_, sigma_)

        return jax.jit(jax.vmap(jax.value_and_grad(loss, argnums=(0, 1, 2))))

    kernel_value, kernel_grad = value_and_grad(on_kernel)(w, slopes, sigma, x, y)
    xla_value, xla_grad = value_and_grad(on_xla)(w, slopes, sigma, x, y)
    np.testing.assert_allclose(kernel_value, xla_value, rtol=1e-12)
    for got, want in zip(kernel_grad, xla_grad):
        np.testing.assert_allclose(got, want, rtol=1e-10)


def test_the_vectorised_engines_loss_calls_the_kernel():
    import jax

    from vimodes.fitting import FitSettings
    from vimodes.vectorised import VectorisedVIFitter

    settings = FitSettings(model="marginal", method="advi", optimizer_name="adam",
                           learning_rate=0.01, iterations=100, init_kind="default",
                           batch_size=16, convergence_tolerance=None, khat_draws=10,
                           khat_seeds=0, elbo_draws=5, draws=10, engine="vectorised")
    fitter = VectorisedVIFitter(settings, 200)
    d = fitter.ddim
    params = (np.zeros(d), np.zeros(d))
    batch = np.linspace(-1, 1, 16)
    jaxpr = str(jax.make_jaxpr(fitter.loss_and_grad)(params, np.ones(d), batch, 2 * batch))
    assert fastlik_ffi.TARGETS[False] in jaxpr


def test_a_vectorised_fit_is_the_same_with_either_form_of_the_likelihood(monkeypatch):
    import vimodes.vectorised
    from vimodes.fitting import FitSettings
    from vimodes.simulate import DataRegime, simulate
    from vimodes.vectorised import VectorisedVIFitter

    settings = FitSettings(model="marginal", method="advi", optimizer_name="adagrad_window",
                           learning_rate=0.01, iterations=300, init_kind="jitter",
                           batch_size=32, convergence_tolerance=None, khat_draws=10,
                           khat_seeds=0, elbo_draws=5, draws=10, engine="vectorised")
    regime = DataRegime(n_obs=500)
    datasets = [simulate(regime, seed, 11) for seed in range(3)]
    fits = {True: VectorisedVIFitter(settings, regime.n_obs).fit_many(datasets, 11, [0, 1, 2])}
    monkeypatch.setattr(vimodes.vectorised, "on_cpu_kernel", lambda terms: terms)
    fits[False] = VectorisedVIFitter(settings, regime.n_obs).fit_many(datasets, 11, [0, 1, 2])
    for on_kernel, on_xla in zip(fits[True], fits[False]):
        assert on_kernel.status == on_xla.status == "ok"
        np.testing.assert_allclose(on_kernel.info["approx_mean"], on_xla.info["approx_mean"],
                                   rtol=1e-8)
        np.testing.assert_allclose(on_kernel.info["loss_trace"], on_xla.info["loss_trace"],
                                   rtol=1e-8)


def test_where_the_check_fails_xlas_own_form_runs_with_a_warning(monkeypatch):
    import pytensor.tensor as pt

    from vimodes.fastlik import mixture_regression_loglike

    monkeypatch.setattr(fastlik_ffi, "_STATE", {})
    monkeypatch.setattr(fastlik_ffi, "_register", lambda: None)
    monkeypatch.setattr(fastlik_ffi, "_self_check", lambda: "values differ")
    with pytest.warns(UserWarning, match="values differ"):
        assert not fastlik_ffi.available()
    x, y, w, b = (pt.dvector(name) for name in "xywb")
    outputs = [mixture_regression_loglike(x, y, w, b, pt.dscalar("s"))]
    assert fastlik_ffi.on_cpu_kernel(outputs) is outputs


def test_on_another_backend_xlas_form_runs_without_a_warning(monkeypatch, recwarn):
    import jax

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(fastlik_ffi, "_STATE", {})
    assert not fastlik_ffi.available()
    assert not [w for w in recwarn if "numba likelihood kernel" in str(w.message)]
