"""Tests for the closed-form CAVI reference fit (vimodes.cavi)."""

import numpy as np
import pytest
from scipy import stats

from vimodes.cavi import DEFAULT_TAU_RATE0, DEFAULT_TAU_SHAPE0, fit_cavi, sample_cavi

TRUE_SLOPES = np.array([3.0, -1.0])
TRUE_SIGMA = 0.1


def simulate(n_obs, seed, slopes=TRUE_SLOPES, sigma=TRUE_SIGMA):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, n_obs)
    z = rng.integers(len(slopes), size=n_obs)
    y = slopes[z] * x + sigma * rng.normal(size=n_obs)
    return x, y


def posterior_sigma_median(result):
    """sigma = tau^(-1/2) is monotone in tau, so its median is the transformed tau median."""
    tau_median = stats.gamma.median(result.tau_shape, scale=1.0 / result.tau_rate)
    return tau_median**-0.5


@pytest.mark.parametrize("n_components", [2, 3])
@pytest.mark.parametrize("seed", range(5))
def test_elbo_never_decreases(seed, n_components):
    x, y = simulate(200, seed=100)
    # tol=0: run every sweep, including the tiny steps near convergence.
    result = fit_cavi(x, y, n_components=n_components, rng=seed, max_iter=300, tol=0.0)
    trace = result.elbo_trace
    assert np.all(np.isfinite(trace))
    steps = np.diff(trace)
    assert np.all(steps >= -1e-9 * np.abs(trace[1:])), steps.min()


def test_recovers_truth_from_good_start():
    x, y = simulate(2000, seed=1)
    result = fit_cavi(x, y, init_slopes=[2.8, -0.8])
    assert result.converged
    np.testing.assert_allclose(result.slope_mean, TRUE_SLOPES, atol=0.05)
    assert abs(posterior_sigma_median(result) - TRUE_SIGMA) < 0.02
    weights = result.weight_alpha / result.weight_alpha.sum()
    np.testing.assert_allclose(weights, [0.5, 0.5], atol=0.05)
    # Well-separated lines: almost every point is assigned with near certainty.
    assert np.mean(result.responsibilities.max(axis=1) > 0.99) > 0.8


@pytest.mark.parametrize("n_obs", [2000, 999])  # odd N too: no accidental alignment symmetry
def test_symmetric_start_stays_at_mode_averaging_fixed_point(n_obs):
    x, y = simulate(n_obs, seed=2)
    result = fit_cavi(x, y, init_slopes=[0.0, 0.0])
    assert result.converged
    # Exactly symmetric, not merely close: the updates cannot break a tie on their own.
    assert result.slope_mean[0] == result.slope_mean[1]
    assert result.slope_sd[0] == result.slope_sd[1]
    assert result.weight_alpha[0] == result.weight_alpha[1]
    assert np.all(result.responsibilities == 0.5)
    # Both components are the single least-squares line through all data (in expectation
    # slope E[xy]/E[x^2] = (3 - 1)/2 = 1 and residual sd sqrt(4/3 + 0.01) = 1.159; compared
    # here with this sample's own least-squares fit, which the weak priors barely move).
    ls_slope = np.sum(x * y) / np.sum(x * x)
    ls_sigma = np.sqrt(np.mean((y - ls_slope * x) ** 2))
    assert abs(result.slope_mean[0] - ls_slope) < 0.01
    assert abs(posterior_sigma_median(result) - ls_sigma) < 0.01


def test_sample_cavi_shapes_and_moments():
    x, y = simulate(500, seed=3)
    result = fit_cavi(x, y, init_slopes=[3.0, -1.0])
    draws = 4000
    samples = sample_cavi(result, draws, np.random.default_rng(4))
    assert samples["slopes"].shape == (draws, 2)
    assert samples["weights"].shape == (draws, 2)
    assert samples["sigma"].shape == (draws,)
    np.testing.assert_allclose(samples["weights"].sum(axis=1), 1.0)
    assert np.all(samples["sigma"] > 0)
    standard_error = result.slope_sd / np.sqrt(draws)
    assert np.all(np.abs(samples["slopes"].mean(axis=0) - result.slope_mean) < 5 * standard_error)
    np.testing.assert_allclose(samples["slopes"].std(axis=0), result.slope_sd, rtol=0.05)
    expected_weights = result.weight_alpha / result.weight_alpha.sum()
    np.testing.assert_allclose(samples["weights"].mean(axis=0), expected_weights, atol=0.01)
    assert abs(np.median(samples["sigma"]) - posterior_sigma_median(result)) < 0.01


def test_same_seed_same_fit():
    x, y = simulate(300, seed=5)
    first = fit_cavi(x, y, rng=7)
    second = fit_cavi(x, y, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(first.slope_mean, second.slope_mean)
    np.testing.assert_array_equal(first.elbo_trace, second.elbo_trace)


def test_requires_init_slopes_or_rng():
    x, y = simulate(50, seed=6)
    with pytest.raises(ValueError, match="init_slopes or rng"):
        fit_cavi(x, y)


def monte_carlo_elbo(result, x, y, *, draws, seed, prior_slope_sd, dirichlet_alpha, tau_shape0, tau_rate0):
    """E_q[log p(y, z, w, pi, tau) - log q(z, w, pi, tau)] from draws of q, written with
    scipy.stats densities, independently of the module's closed-form expressions."""
    rng = np.random.default_rng(seed)
    resp = result.responsibilities  # (N, K)
    n_components = resp.shape[1]

    slopes = rng.normal(result.slope_mean, result.slope_sd, size=(draws, n_components))
    weights = rng.dirichlet(result.weight_alpha, size=draws)
    tau = rng.gamma(result.tau_shape, 1.0 / result.tau_rate, size=draws)
    # z_n ~ Categorical(r_n) by inverting the cumulative responsibilities.
    cumulative = np.cumsum(resp, axis=1)[:, :-1]
    labels = (rng.random((draws, x.size, 1)) > cumulative[None, :, :]).sum(axis=2)  # (draws, N)

    slope_of_point = np.take_along_axis(slopes, labels, axis=1)
    weight_of_point = np.take_along_axis(weights, labels, axis=1)
    sigma = 1.0 / np.sqrt(tau)

    log_joint = (
        stats.norm.logpdf(y, slope_of_point * x, sigma[:, None]).sum(axis=1)
        + np.log(weight_of_point).sum(axis=1)
        + stats.dirichlet.logpdf(weights.T, np.full(n_components, dirichlet_alpha))
        + stats.norm.logpdf(slopes, 0.0, prior_slope_sd).sum(axis=1)
        + stats.gamma.logpdf(tau, tau_shape0, scale=1.0 / tau_rate0)
    )
    log_q = (
        np.log(resp[np.arange(x.size), labels]).sum(axis=1)
        + stats.norm.logpdf(slopes, result.slope_mean, result.slope_sd).sum(axis=1)
        + stats.dirichlet.logpdf(weights.T, result.weight_alpha)
        + stats.gamma.logpdf(tau, result.tau_shape, scale=1.0 / result.tau_rate)
    )
    integrand = log_joint - log_q
    return integrand.mean(), integrand.std(ddof=1) / np.sqrt(draws)


@pytest.mark.parametrize(
    ("n_components", "fit_kwargs"),
    [
        (2, {"init_slopes": [3.0, -1.0]}),  # converged, one mode
        (2, {"init_slopes": [0.0, 0.0]}),  # converged, symmetric fixed point
        (2, {"rng": 11, "max_iter": 1}),  # far from converged: the formula must hold for any q
        (3, {"rng": 12, "max_iter": 3}),
    ],
)
def test_closed_form_elbo_matches_monte_carlo(n_components, fit_kwargs):
    x, y = simulate(50, seed=8)
    # Non-default priors so that a hyperparameter dropped from the closed form would show.
    priors = {"prior_slope_sd": 1.5, "dirichlet_alpha": 2.0, "tau_shape0": 2.0, "tau_rate0": 0.5}
    result = fit_cavi(x, y, n_components=n_components, **priors, **fit_kwargs)
    estimate, standard_error = monte_carlo_elbo(result, x, y, draws=20000, seed=9, **priors)
    # The check has teeth only if MC error is far below a typical slip (e.g. log(2 pi)/2 = 0.92).
    assert standard_error < 0.1
    assert abs(result.elbo_trace[-1] - estimate) < 4 * standard_error, (result.elbo_trace[-1], estimate)


def test_closed_form_elbo_matches_monte_carlo_default_priors():
    x, y = simulate(50, seed=10)
    result = fit_cavi(x, y, init_slopes=[2.5, -0.5])
    estimate, standard_error = monte_carlo_elbo(
        result,
        x,
        y,
        draws=20000,
        seed=11,
        prior_slope_sd=2.0,
        dirichlet_alpha=1.0,
        tau_shape0=DEFAULT_TAU_SHAPE0,
        tau_rate0=DEFAULT_TAU_RATE0,
    )
    assert standard_error < 0.1
    assert abs(result.elbo_trace[-1] - estimate) < 4 * standard_error, (result.elbo_trace[-1], estimate)
