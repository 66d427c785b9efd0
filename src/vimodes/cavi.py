"""Closed-form coordinate-ascent VI (CAVI) for a K-component mixture of linear regressions.

This is the conjugate, mean-field reference against which the study's PyMC/ADVI runs are
compared: every update is exact, so whatever mode CAVI lands on is decided by the
initialisation alone, not by optimiser noise or an iteration budget.

Model (slopes only, no intercept, one covariate)
------------------------------------------------
    x_n given (data),                          n = 1..N
    pi            ~ Dirichlet(alpha0, ..., alpha0)              (K entries)
    w_k           ~ Normal(0, s0^2)                             k = 1..K
    tau           ~ Gamma(a0, b0)        (shape a0, rate b0; tau = 1/sigma^2)
    z_n | pi      ~ Categorical(pi)
    y_n | z_n=k   ~ Normal(w_k x_n, 1/tau)

Defaults: s0 = 2 and alpha0 = 1, as in the PyMC model used elsewhere in the pipeline.
a0 = b0 = 1e-3 (the conventional vague Gamma on a precision). A Gamma prior on tau is not
the same as the PyMC model's prior on sigma, but it is the one that keeps the updates
conjugate, and its influence is negligible: q(tau) has shape a0 + N/2 and rate
b0 + (expected residual sum of squares)/2, so a0 and b0 matter only when N is tiny or the
fit is almost exact.

Variational family (fully factorised)
-------------------------------------
    q(z, w, pi, tau) = prod_n Cat(z_n; r_n) * prod_k N(w_k; m_k, v_k) * Dir(pi; alpha) * Gamma(tau; a, b)

Expectations used below (psi = digamma, alpha_hat = sum_k alpha_k):
    E[log pi_k] = psi(alpha_k) - psi(alpha_hat)
    E[tau]      = a / b
    E[log tau]  = psi(a) - log b
    E[(y_n - w_k x_n)^2] = (y_n - m_k x_n)^2 + v_k x_n^2
Weighted sufficient statistics of the responsibilities:
    N_k = sum_n r_nk,  Sxx_k = sum_n r_nk x_n^2,  Sxy_k = sum_n r_nk x_n y_n,  Syy_k = sum_n r_nk y_n^2
so that the expected residual sum of squares of component k is
    R_k = sum_n r_nk E[(y_n - w_k x_n)^2] = Syy_k - 2 m_k Sxy_k + (m_k^2 + v_k) Sxx_k.

Updates (each is log q*(.) = E_{-.}[log p(y, z, w, pi, tau)] + const)
--------------------------------------------------------------------
q(z_n): log q(z_n = k) = E[log pi_k] + E[log p(y_n | z_n = k, w_k, tau)] + const, so
    log rho_nk = E[log pi_k] + (E[log tau] - log 2 pi)/2 - E[tau] ((y_n - m_k x_n)^2 + v_k x_n^2)/2
    r_nk       = exp(log rho_nk - logsumexp_j log rho_nj)          (stable normalisation)

q(w_k): the terms in w_k are -w_k^2/(2 s0^2) - E[tau]/2 sum_n r_nk (y_n - w_k x_n)^2, a
quadratic in w_k, hence Normal with
    1/v_k = 1/s0^2 + E[tau] Sxx_k,      m_k = v_k E[tau] Sxy_k

q(pi): the terms in pi are sum_k (alpha0 - 1 + N_k) log pi_k, hence Dirichlet with
    alpha_k = alpha0 + N_k

q(tau): the terms in tau are (a0 - 1 + N/2) log tau - tau (b0 + sum_k R_k / 2), hence Gamma with
    a = a0 + N/2,      b = b0 + (sum_k R_k)/2

One sweep updates q(w), q(tau), q(pi), q(z) in that order. Each update maximises the ELBO
exactly in its own factor with the others held fixed, so the ELBO cannot decrease from one
sweep to the next (the tests check this).

ELBO = E_q[log p(y, z, w, pi, tau)] - E_q[log q(z, w, pi, tau)], term by term
-----------------------------------------------------------------------------
    E[log p(y | z, w, tau)] = sum_k [ N_k (E[log tau] - log 2 pi)/2 - E[tau] R_k / 2 ]
    E[log p(z | pi)]        = sum_k N_k E[log pi_k]
    E[log p(pi)]            = log Gamma(K alpha0) - K log Gamma(alpha0) + (alpha0 - 1) sum_k E[log pi_k]
    E[log p(w)]             = sum_k [ -log(2 pi s0^2)/2 - (m_k^2 + v_k) / (2 s0^2) ]
    E[log p(tau)]           = a0 log b0 - log Gamma(a0) + (a0 - 1) E[log tau] - b0 E[tau]
    -E[log q(z)]            = -sum_n sum_k r_nk log r_nk
    -E[log q(w)]            = sum_k log(2 pi e v_k) / 2
    -E[log q(pi)]           = sum_k log Gamma(alpha_k) - log Gamma(alpha_hat)
                              + (alpha_hat - K) psi(alpha_hat) - sum_k (alpha_k - 1) psi(alpha_k)
    -E[log q(tau)]          = a - log b + log Gamma(a) + (1 - a) psi(a)
These formulas hold for any q in the family, not only at a coordinate optimum, so the ELBO
reported here is a genuine bound at every sweep (the tests compare it with a Monte Carlo
estimate).

Initialisation
--------------
The state starts at slopes m_k = init_slopes (or, if init_slopes is None, m_k drawn from the
slope prior N(0, s0^2) with `rng`), v_k = 0, equal weights and a noise scale sigma_init.
By default sigma_init is the root mean square residual of each point to its nearest initial
line, sqrt(mean_n min_k (y_n - m_k x_n)^2): small when the initial lines are good, about
rms(y) when they are not, so the first responsibilities are neither needlessly hard nor
needlessly flat. The responsibilities are computed from that state, and the first sweep
starts from them. The first sweep's q(w) update uses E[tau] = 1/sigma_init^2.

Equal initial slopes give exactly equal responsibilities (r_nk = 1/K), and every update then
treats the components identically: the fit stays on the symmetric "one line for all data"
fixed point, the mode-averaging solution, whatever the number of sweeps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, gammaln

from vimodes.config import FitSettings
from vimodes.fit_result import NUMERICAL_ERRORS, FitResult, fit_rng
from vimodes.simulate import Dataset

_LOG_2PI = float(np.log(2.0 * np.pi))

DEFAULT_TAU_SHAPE0 = 1e-3
DEFAULT_TAU_RATE0 = 1e-3


@dataclass(frozen=True)
class CaviResult:
    """Variational posterior after the last sweep of `fit_cavi`.

    q(w_k) = Normal(slope_mean[k], slope_sd[k]^2), q(pi) = Dirichlet(weight_alpha),
    q(tau) = Gamma(shape=tau_shape, rate=tau_rate) with tau = 1/sigma^2,
    q(z_n = k) = responsibilities[n, k].
    """

    slope_mean: np.ndarray
    slope_sd: np.ndarray
    weight_alpha: np.ndarray
    tau_shape: float
    tau_rate: float
    elbo_trace: np.ndarray
    iterations: int
    converged: bool
    responsibilities: np.ndarray


# Internal layout: per-point arrays over components are (K, N), one contiguous row per
# component, because numpy reduces and broadcasts over a short leading axis much faster than
# over a length-K trailing one. Only the returned responsibilities are transposed to (N, K).


@dataclass(frozen=True)
class _SufficientStats:
    """Responsibility-weighted sums, one entry per component."""

    counts: np.ndarray  # N_k
    sxx: np.ndarray
    sxy: np.ndarray
    syy: np.ndarray

    @classmethod
    def from_responsibilities(cls, resp: np.ndarray, features: np.ndarray) -> _SufficientStats:
        """resp is (K, N); features is (N, 3) with columns x^2, x y, y^2."""
        # einsum without BLAS on purpose: OpenBLAS's worker threads keep spinning after a
        # (K, N) @ (N, 3) product and slow the elementwise work of the sweep about 3x.
        weighted = np.einsum("kn,nf->kf", resp, features)
        return cls(counts=resp.sum(axis=1), sxx=weighted[:, 0], sxy=weighted[:, 1], syy=weighted[:, 2])

    def expected_rss(self, slope_mean: np.ndarray, slope_var: np.ndarray) -> np.ndarray:
        """R_k = sum_n r_nk E_q[(y_n - w_k x_n)^2], per component."""
        return self.syy - 2.0 * slope_mean * self.sxy + (slope_mean**2 + slope_var) * self.sxx


def _log_rho(
    x: np.ndarray,
    y: np.ndarray,
    x2: np.ndarray,
    slope_mean: np.ndarray,
    slope_var: np.ndarray,
    e_log_pi: np.ndarray,
    e_tau: float,
    e_log_tau: float,
) -> np.ndarray:
    """Unnormalised log responsibilities, shape (K, N)."""
    # In-place steps: at N = 1e5 the (K, N) temporaries dominate the cost of a sweep.
    log_rho = y[None, :] - slope_mean[:, None] * x[None, :]
    log_rho *= log_rho
    log_rho += slope_var[:, None] * x2[None, :]
    log_rho *= -0.5 * e_tau
    log_rho += (e_log_pi + 0.5 * (e_log_tau - _LOG_2PI))[:, None]
    return log_rho


def _normalise_log(log_rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Responsibilities and their logs, (K, N), via a max-shifted logsumexp over components.

    Overwrites log_rho (it becomes the returned log responsibilities).
    """
    log_rho -= log_rho.max(axis=0)
    resp = np.exp(log_rho)
    total = resp.sum(axis=0)
    resp /= total
    log_rho -= np.log(total)
    return resp, log_rho


def _dirichlet_e_log(alpha: np.ndarray) -> np.ndarray:
    return digamma(alpha) - digamma(alpha.sum())


def _elbo(
    *,
    stats: _SufficientStats,
    resp: np.ndarray,
    log_resp: np.ndarray,
    slope_mean: np.ndarray,
    slope_var: np.ndarray,
    alpha: np.ndarray,
    tau_shape: float,
    tau_rate: float,
    prior_slope_sd: float,
    dirichlet_alpha: float,
    tau_shape0: float,
    tau_rate0: float,
) -> float:
    """ELBO for an arbitrary member of the variational family (formulas in module docstring)."""
    n_components = slope_mean.size
    e_log_pi = _dirichlet_e_log(alpha)
    e_tau = tau_shape / tau_rate
    e_log_tau = digamma(tau_shape) - np.log(tau_rate)
    prior_var = prior_slope_sd**2
    alpha_hat = alpha.sum()

    log_lik = np.sum(
        0.5 * stats.counts * (e_log_tau - _LOG_2PI) - 0.5 * e_tau * stats.expected_rss(slope_mean, slope_var)
    )
    log_p_z = np.sum(stats.counts * e_log_pi)
    log_p_pi = (
        gammaln(n_components * dirichlet_alpha)
        - n_components * gammaln(dirichlet_alpha)
        + (dirichlet_alpha - 1.0) * e_log_pi.sum()
    )
    log_p_w = np.sum(-0.5 * np.log(2.0 * np.pi * prior_var) - (slope_mean**2 + slope_var) / (2.0 * prior_var))
    log_p_tau = (
        tau_shape0 * np.log(tau_rate0)
        - gammaln(tau_shape0)
        + (tau_shape0 - 1.0) * e_log_tau
        - tau_rate0 * e_tau
    )

    entropy_z = -float(np.einsum("kn,kn->", resp, log_resp))
    entropy_w = np.sum(0.5 * (_LOG_2PI + 1.0 + np.log(slope_var)))
    entropy_pi = (
        gammaln(alpha).sum()
        - gammaln(alpha_hat)
        + (alpha_hat - n_components) * digamma(alpha_hat)
        - np.sum((alpha - 1.0) * digamma(alpha))
    )
    entropy_tau = tau_shape - np.log(tau_rate) + gammaln(tau_shape) + (1.0 - tau_shape) * digamma(tau_shape)

    return float(
        log_lik + log_p_z + log_p_pi + log_p_w + log_p_tau + entropy_z + entropy_w + entropy_pi + entropy_tau
    )


def _validated_data(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 1 or y.shape != x.shape:
        raise ValueError(f"x and y must be 1-D arrays of equal length, got shapes {x.shape} and {y.shape}")
    if x.size == 0:
        raise ValueError("x and y are empty")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x and y must be finite")
    return x, y


def _initial_slopes(init_slopes, rng, n_components: int, prior_slope_sd: float) -> np.ndarray:
    if init_slopes is not None:
        slopes = np.array(init_slopes, dtype=float).reshape(-1)
        if slopes.shape != (n_components,):
            raise ValueError(f"init_slopes must have {n_components} entries, got {slopes.size}")
        return slopes
    if rng is None:
        # Refuse a silent unseeded draw: every run of the study must be reproducible.
        raise ValueError("pass init_slopes or rng (np.random.Generator or int seed)")
    return np.random.default_rng(rng).normal(0.0, prior_slope_sd, size=n_components)


def fit_cavi(
    x,
    y,
    *,
    n_components: int = 2,
    init_slopes=None,
    rng: np.random.Generator | int | None = None,
    max_iter: int = 500,
    tol: float = 1e-8,
    prior_slope_sd: float = 2.0,
    dirichlet_alpha: float = 1.0,
    tau_shape0: float = DEFAULT_TAU_SHAPE0,
    tau_rate0: float = DEFAULT_TAU_RATE0,
    init_sigma: float | None = None,
) -> CaviResult:
    """Fit the mean-field variational posterior by coordinate ascent.

    init_slopes: initial slope means m_k, shape (n_components,). If None, they are drawn
        from the slope prior N(0, prior_slope_sd^2) with `rng` (a Generator or an int seed;
        one of the two is required).
    init_sigma: noise scale used with the initial slopes to form the first
        responsibilities; None means the rms residual to the nearest initial line (see the
        module docstring).
    tol: stop when |ELBO_t - ELBO_{t-1}| < tol * |ELBO_t|; otherwise stop after max_iter
        sweeps with converged=False.
    """
    x, y = _validated_data(x, y)
    if n_components < 1:
        raise ValueError("n_components must be at least 1")
    if max_iter < 1:
        raise ValueError("max_iter must be at least 1")
    for name, value in [
        ("prior_slope_sd", prior_slope_sd),
        ("dirichlet_alpha", dirichlet_alpha),
        ("tau_shape0", tau_shape0),
        ("tau_rate0", tau_rate0),
    ]:
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")

    n_obs = x.size
    x2 = x * x
    features = np.stack([x2, x * y, y * y], axis=1)
    prior_precision = 1.0 / prior_slope_sd**2

    slope_mean = _initial_slopes(init_slopes, rng, n_components, prior_slope_sd)
    slope_var = np.zeros(n_components)
    if init_sigma is None:
        nearest_sq = np.min((y[None, :] - slope_mean[:, None] * x[None, :]) ** 2, axis=0)
        # Floor keeps tau finite when the initial lines fit the data exactly.
        init_sigma = max(float(np.sqrt(nearest_sq.mean())), 1e-6 * float(np.std(y)), 1e-12)
    elif not init_sigma > 0:
        raise ValueError(f"init_sigma must be positive, got {init_sigma}")
    e_tau = 1.0 / init_sigma**2
    resp, _ = _normalise_log(
        _log_rho(
            x,
            y,
            x2,
            slope_mean,
            slope_var,
            e_log_pi=np.full(n_components, -np.log(n_components)),
            e_tau=e_tau,
            e_log_tau=np.log(e_tau),
        )
    )
    stats = _SufficientStats.from_responsibilities(resp, features)

    tau_shape = tau_shape0 + 0.5 * n_obs  # constant across sweeps
    elbo_trace: list[float] = []
    converged = False
    for _ in range(max_iter):
        slope_precision = prior_precision + e_tau * stats.sxx
        slope_var = 1.0 / slope_precision
        slope_mean = slope_var * e_tau * stats.sxy

        tau_rate = tau_rate0 + 0.5 * float(stats.expected_rss(slope_mean, slope_var).sum())
        e_tau = tau_shape / tau_rate
        e_log_tau = digamma(tau_shape) - np.log(tau_rate)

        alpha = dirichlet_alpha + stats.counts

        resp, log_resp = _normalise_log(
            _log_rho(x, y, x2, slope_mean, slope_var, _dirichlet_e_log(alpha), e_tau, e_log_tau)
        )
        stats = _SufficientStats.from_responsibilities(resp, features)

        elbo = _elbo(
            stats=stats,
            resp=resp,
            log_resp=log_resp,
            slope_mean=slope_mean,
            slope_var=slope_var,
            alpha=alpha,
            tau_shape=tau_shape,
            tau_rate=tau_rate,
            prior_slope_sd=prior_slope_sd,
            dirichlet_alpha=dirichlet_alpha,
            tau_shape0=tau_shape0,
            tau_rate0=tau_rate0,
        )
        elbo_trace.append(elbo)
        if len(elbo_trace) > 1 and abs(elbo - elbo_trace[-2]) < tol * abs(elbo):
            converged = True
            break

    return CaviResult(
        slope_mean=slope_mean,
        slope_sd=np.sqrt(slope_var),
        weight_alpha=alpha,
        tau_shape=float(tau_shape),
        tau_rate=float(tau_rate),
        elbo_trace=np.asarray(elbo_trace),
        iterations=len(elbo_trace),
        converged=converged,
        responsibilities=np.ascontiguousarray(resp.T),
    )


def sample_cavi(result: CaviResult, draws: int, rng: np.random.Generator | int) -> dict[str, np.ndarray]:
    """Independent draws from the factorised q: slopes (draws, K), weights (draws, K), sigma (draws,)."""
    rng = np.random.default_rng(rng)
    n_components = result.slope_mean.size
    slopes = rng.normal(result.slope_mean, result.slope_sd, size=(draws, n_components))
    weights = rng.dirichlet(result.weight_alpha, size=draws)
    tau = rng.gamma(result.tau_shape, 1.0 / result.tau_rate, size=draws)  # numpy takes scale = 1/rate
    return {"slopes": slopes, "weights": weights, "sigma": 1.0 / np.sqrt(tau)}


class CaviFitter:
    """Closed-form coordinate-ascent VI (numpy, full data); see :mod:`vimodes.cavi`."""

    def __init__(self, settings: FitSettings, n_obs: int):
        self.settings = settings

    def _initial_slopes(self, rng: np.random.Generator) -> np.ndarray:
        s = self.settings
        k = s.n_components
        if s.init_kind == "default":
            return np.zeros(k)  # PyMC's initial point: on the symmetry axis
        if s.init_kind == "jitter":
            return rng.normal(0.0, s.init_scale, size=k)
        return rng.normal(0.0, s.init_scale * 2.0, size=k)  # a draw from the slope prior

    def fit(self, data: Dataset, seed_base: int, seed: int) -> FitResult:
        s = self.settings
        rng = fit_rng(seed_base, seed)
        init = self._initial_slopes(rng)
        started = time.perf_counter()
        try:
            result = fit_cavi(data.x, data.y, init_slopes=init, rng=rng, max_iter=s.iterations,
                              n_components=s.n_components)
        except NUMERICAL_ERRORS as err:
            return FitResult("failed", f"{type(err).__name__}: {err}")
        runtime = time.perf_counter() - started
        draws = sample_cavi(result, s.draws, rng)
        info = {
            "fit_seconds": runtime,
            "iterations_done": result.iterations,
            "stopped_early": result.converged,
            "final_loss": -float(result.elbo_trace[-1]),
            "loss_trace": -np.asarray(result.elbo_trace),
            "flat_start": init,
        }
        return FitResult("ok", None, info=info,
                         draws={name: np.asarray(value)[None, ...] for name, value in draws.items()})
