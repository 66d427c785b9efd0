"""Why PyMC's default ADVI collapses: the mechanism as numbers, for one data set.

PyMC's default optimiser (``adagrad_window``, lr 1e-3) from PyMC's symmetric start (both slopes
0) ends "collapsed" (both slopes ~1, one line explains the data, sigma ~1.2), while adam (lr
1e-2) from a jittered start reaches a permutation mode. This module measures why, with the
vectorised engine's own objective (:mod:`vimodes.vectorised`):

1. **The ELBO does not prefer the collapse.** :func:`full_elbo` estimates the full-data ELBO
   ``E_q[log p(y, z) - log q(z)]`` (with its Monte Carlo standard error) at the end of both fits.
2. **The collapsed point is a saddle.** Along ``u = (e_slope0 - e_slope1) / sqrt 2`` (the
   direction that separates the two lines; every other coordinate, the scales included, held
   fixed), :func:`directional_derivatives` gives the gradient and curvature of the *expected*
   engine loss: the loss averaged over fixed common-random-number draws ``eps`` on the *full
   data*, i.e. the minibatch loss's expectation over batches (deterministic given ``eps``). At the
   exactly symmetric point (:func:`symmetric_params`) the gradient along ``u`` vanishes by the
   label-swap symmetry (the draws are made swap-symmetric, :func:`common_draws`, so it is zero to
   rounding); the curvature says how unstable it is.
3. **The default optimiser barely moves along u.** From minibatch gradients at the collapsed
   point (one ``eps`` and one batch per sample, as the engine draws them), :func:`gradient_noise`
   measures the gradient noise along ``u``, and :func:`optimizer_rates` the effective learning
   rate of each optimiser: ``adagrad_window`` divides by ``sqrt(sum of the last 10 squared
   gradients + 0.1)`` (a *sum*, so ~sqrt(10) times the gradient's rms), adam by the rms itself.
4. **Escape time.** Linearised along ``u``, an offset grows by ``1 + a`` per step with
   ``a = lr_eff * |curvature|``, so leaving the saddle takes
   ``log(distance / offset) / log(1 + a)`` steps (:func:`escape_steps`). The offset is the
   start's offset along ``u`` (jittered start: the jitter scale) or, from the exactly symmetric
   start, the one that the gradient noise builds, ``lr_eff * noise_sd / sqrt(2 a)``: the sd of
   ``d_t = (1 + a) d_(t-1) + lr_eff * noise_t`` is ``lr_eff * noise_sd * (1 + a)^t / sqrt(2 a)``.

Units: gradients and curvatures are of the engine's loss (``-ELBO / normaliser``, normaliser
``N / batch`` for the marginal model), the quantity the optimisers see; slopes in data units.
Everything is seeded (a fit depends on (settings, data, seed) as in the study; the Monte Carlo
draws on ``key``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from vimodes.fitting import FitSettings
from vimodes.simulate import Dataset
from vimodes.vectorised import ADAGRAD_WINDOW, ADAM, VectorisedVIFitter, _jax

#: columns of the mechanism table (documented in workflow/report/columns.md)
TABLE_COLUMNS = ("data_regime", "seed", "n_obs", "model", "method", "name", "value", "error",
                 "error_kind", "unit", "explanation")
_BLOCK = 50  # draws per vectorised call on the full data: bounds memory at N = 1e5


@dataclass(frozen=True)
class MechanismSettings:
    """The two fits and the Monte Carlo sizes of one mechanism measurement."""

    model: str = "marginal"
    method: str = "advi"
    iterations: int = 10_000
    batch_size: int = 128
    convergence_tolerance: float | None = 1e-4  # the question's callback, as in the study
    collapse_optimizer: tuple[str, float] = ("adagrad_window", 1e-3)  # pm.fit's default
    single_optimizer: tuple[str, float] = ("adam", 1e-2)
    jitter_scale: float = 1.0
    n_draws: int = 1000  # draws of the full-data ELBO
    n_geometry_draws: int = 200  # common eps draws of the expected loss (even: swap pairs)
    n_batches: int = 2000  # minibatch gradients for the noise and the optimisers' rates

    def fit_settings(self, optimizer: tuple[str, float], init_kind: str) -> FitSettings:
        return FitSettings(model=self.model, method=self.method, optimizer_name=optimizer[0],
                           learning_rate=optimizer[1], iterations=self.iterations,
                           batch_size=self.batch_size, init_kind=init_kind,
                           init_scale=self.jitter_scale,
                           convergence_tolerance=self.convergence_tolerance, draws=2,
                           khat_draws=0, checkpoints=(self.iterations,))


# ---------------------------------------------------------------------------------------------
# The variational Gaussian and the objectives


def _scale_matrix(fitter: VectorisedVIFitter, scale_params):
    """The Gaussian's square root L (z = mu + L eps) from PyMC's scale parameters."""
    jax = _jax()
    if fitter.fullrank:
        return fitter._cholesky(scale_params)
    return jax.numpy.diag(jax.nn.softplus(scale_params))


def _draw(fitter, params, eps):
    """z = mu + L eps and log q(z), as the engine's loss computes them."""
    jnp = _jax().numpy
    mu, scale_params = params
    chol = _scale_matrix(fitter, scale_params)
    z = mu + chol @ eps
    log_q = jnp.sum(-0.5 * eps**2 - 0.5 * jnp.log(2 * jnp.pi) - jnp.log(jnp.diagonal(chol)))
    return z, log_q


def elbo_term(fitter: VectorisedVIFitter, params, eps, x, y):
    """log p(y, z) - log q(z) at z = mu + L eps on the data (x, y) (one draw; pure JAX)."""
    z, log_q = _draw(fitter, params, eps)
    prior_term, data_term = fitter.logp_terms(z, x, y)
    return prior_term + data_term - log_q


def expected_loss(fitter: VectorisedVIFitter, params, eps, x, y):
    """The engine's minibatch loss averaged over batches, for one eps, on the full data (x, y).

    A uniform batch's log-likelihood has expectation ``batch / N`` times the full one, so the
    batch average is the engine's loss with the data term weighted ``data_scale * batch / N``
    (1 for the marginal model: ``-ELBO / normaliser``)."""
    z, log_q = _draw(fitter, params, eps)
    prior_term, data_term = fitter.logp_terms(z, x, y)
    s = fitter.scaling
    weight = s.data_scale * fitter.batch_size / fitter.n_obs if fitter.batch_size else 1.0
    return (log_q - prior_term - weight * data_term) / s.normaliser


def _compiled(fitter: VectorisedVIFitter, name: str, build):
    """A jitted function kept on the fitter, so a second point or draw count reuses it."""
    cache = fitter.__dict__.setdefault("_mechanism_jit", {})
    if name not in cache:
        cache[name] = build()
    return cache[name]


def _blocked(function, eps, *args):
    """Stack a vmapped per-draw function over blocks of draws (memory stays O(block * N))."""
    out = [np.asarray(function(eps[i:i + _BLOCK], *args)) for i in range(0, len(eps), _BLOCK)]
    return np.concatenate(out, axis=-1)


def full_elbo(fitter: VectorisedVIFitter, params, data: Dataset, n_draws: int,
              key) -> tuple[float, float]:
    """Full-data ELBO of the Gaussian with PyMC parameters ``(mu, rho)`` (meanfield) or
    ``(mu, L_tril)`` (full rank): the mean of ``n_draws`` values of log p(y, z) - log q(z), and
    its Monte Carlo standard error (sd / sqrt(n_draws))."""
    jax = _jax()
    jnp = jax.numpy
    eps = jax.random.normal(key, (n_draws, fitter.ddim))
    params = tuple(jnp.asarray(p, dtype=float) for p in params)
    per_draw = _compiled(fitter, "elbo", lambda: jax.jit(jax.vmap(
        lambda e, p, x, y: elbo_term(fitter, p, e, x, y), in_axes=(0, None, None, None))))
    values = _blocked(per_draw, eps, params, jnp.asarray(data.x), jnp.asarray(data.y))
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(n_draws))


# ---------------------------------------------------------------------------------------------
# The label-swap symmetry and the direction that breaks it


def _flat_slice(fitter: VectorisedVIFitter, variable: str) -> slice:
    """The flat coordinates of a model variable (by its value variable: the name carries the
    transform, e.g. ``slopes_ordered__``)."""
    model = fitter.model
    return fitter.ordering[model.rvs_to_values[model[variable]].name][1]


def slope_indices(fitter: VectorisedVIFitter) -> tuple[int, int]:
    slc = _flat_slice(fitter, "slopes")
    return slc.start, slc.start + 1


def slope_direction(fitter: VectorisedVIFitter) -> np.ndarray:
    """u: slope_0 up, slope_1 down by the same amount, unit length, other coordinates 0."""
    u = np.zeros(fitter.ddim)
    i, j = slope_indices(fitter)
    u[i], u[j] = 1 / np.sqrt(2), -1 / np.sqrt(2)
    return u


def swap_matrix(fitter: VectorisedVIFitter) -> np.ndarray:
    """The label swap (component 0 <-> 1) as a linear map P of the flat space.

    Slopes swap; the 2-simplex's single coordinate changes sign (w -> (w_1, w_0)); sigma stays.
    Checked on a test point, so a model without this symmetry (the ordered one) raises."""
    d = fitter.ddim
    swap = np.eye(d)
    i, j = slope_indices(fitter)
    swap[[i, j]] = swap[[j, i]]
    weights = _flat_slice(fitter, "weights")
    swap[weights, weights] *= -1
    z = np.linspace(-0.7, 0.9, d)
    a, b = fitter.to_variables(z), fitter.to_variables(swap @ z)
    if not (np.allclose(a["slopes"][:, ::-1], b["slopes"]) and np.allclose(
            a["weights"][:, ::-1], b["weights"]) and np.allclose(a["sigma"], b["sigma"])):
        raise ValueError(f"model '{fitter.settings.model}' has no label-swap symmetry in its "
                         f"flat space")
    return swap


def symmetric_params(fitter: VectorisedVIFitter, params) -> tuple[np.ndarray, np.ndarray]:
    """The nearest swap-invariant Gaussian: means averaged with their swap (the two slope means
    set to their mean, the weight coordinate to 0: equal weights), covariance averaged with its
    swap (meanfield: the two slope sds set to their mean)."""
    swap = swap_matrix(fitter)
    mu, scale_params = (np.asarray(p, dtype=float) for p in params)
    mu = (mu + swap @ mu) / 2
    if not fitter.fullrank:
        sd = np.logaddexp(0.0, scale_params)
        sd = (sd + np.abs(swap) @ sd) / 2
        return mu, np.log(np.expm1(sd))
    _, cov = fitter.moments((mu, scale_params))
    return params_from_moments(fitter, mu, (cov + swap @ cov @ swap.T) / 2)


def params_from_moments(fitter: VectorisedVIFitter, mean: np.ndarray,
                        cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PyMC's parameters (mu, rho) or (mu, L_tril) of the Gaussian N(mean, cov)."""
    mean = np.asarray(mean, dtype=float)
    if not fitter.fullrank:
        return mean, np.log(np.expm1(np.sqrt(np.diag(cov))))
    chol = np.linalg.cholesky(cov)
    chol[np.diag_indices_from(chol)] = np.log(np.expm1(np.diag(chol)))
    return mean, chol[fitter.tril]


def common_draws(fitter: VectorisedVIFitter, params, n: int, key) -> np.ndarray:
    """n standard-normal draws closed under the label swap: each draw e and its partner
    M e, M = L^-1 P L (orthogonal when P L L^T P^T = L L^T, so M e ~ N(0, I) too), with L the
    square root of the swap-symmetrised Gaussian. Averaged over such pairs, a swap-invariant
    objective is exactly invariant, so its gradient along u at a symmetric point is 0 to
    rounding, not to Monte Carlo error."""
    jax = _jax()
    if n % 2:
        raise ValueError(f"common_draws needs an even number of draws, got {n}")
    sym = symmetric_params(fitter, params)
    chol = np.asarray(_scale_matrix(fitter, jax.numpy.asarray(sym[1])))
    partner = np.linalg.solve(chol, swap_matrix(fitter) @ chol)
    eps = np.asarray(jax.random.normal(key, (n // 2, fitter.ddim)))
    return np.concatenate([eps, eps @ partner.T])


# ---------------------------------------------------------------------------------------------
# Local geometry along u


@dataclass(frozen=True)
class Directional:
    """Gradient and curvature of the expected loss along a direction, with MCSEs over the
    (pairs of) common draws."""

    gradient: float
    gradient_mcse: float
    curvature: float
    curvature_mcse: float


def directional_derivatives(fitter: VectorisedVIFitter, params, direction: np.ndarray,
                            eps: np.ndarray, data: Dataset) -> Directional:
    """d/dt and d^2/dt^2 at t = 0 of the mean over ``eps`` of :func:`expected_loss` at
    ``(mu + t u, scales)`` (forward-mode jvp of a jvp), on the full data."""
    jax = _jax()
    jnp = jax.numpy

    def along(e, p, u, x, y):
        mu, scale_params = p

        def f(t):
            return expected_loss(fitter, (mu + t * u, scale_params), e, x, y)

        def first(t):
            return jax.jvp(f, (t,), (1.0,))[1]

        g, h = jax.jvp(first, (0.0,), (1.0,))
        return jnp.stack([g, h])

    per_draw = _compiled(fitter, "directional", lambda: jax.jit(jax.vmap(
        along, in_axes=(0, None, None, None, None), out_axes=1)))
    params = tuple(jnp.asarray(p, dtype=float) for p in params)
    values = _blocked(per_draw, jnp.asarray(eps), params, jnp.asarray(direction, dtype=float),
                      jnp.asarray(data.x), jnp.asarray(data.y))
    # draw i and i + n/2 are swap partners (common_draws): their mean is one independent value
    half = values.shape[1] // 2
    pairs = (values[:, :half] + values[:, half:]) / 2 if values.shape[1] % 2 == 0 else values
    mcse = pairs.std(axis=1, ddof=1) / np.sqrt(pairs.shape[1])
    mean = values.mean(axis=1)
    return Directional(float(mean[0]), float(mcse[0]), float(mean[1]), float(mcse[1]))


def gradient_noise(fitter: VectorisedVIFitter, params, data: Dataset, n_batches: int,
                   key) -> np.ndarray:
    """Minibatch gradients of the engine's loss with respect to the mean, (n_batches, d): one
    eps and one batch (uniform with replacement) per sample, as the engine draws them."""
    jax = _jax()
    jnp = jax.numpy
    if not fitter.batch_size:
        raise ValueError("gradient_noise needs a minibatch fitter")
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    params = tuple(jnp.asarray(p, dtype=float) for p in params)

    def one(k):
        eps_key, batch_key = jax.random.split(k)
        eps = jax.random.normal(eps_key, (fitter.ddim,))
        index = jax.random.randint(batch_key, (fitter.batch_size,), 0, fitter.n_obs)
        return jax.grad(fitter.loss)(params, eps, x[index], y[index])[0]

    return np.asarray(jax.jit(jax.vmap(one))(jax.random.split(key, n_batches)))


@dataclass(frozen=True)
class Rates:
    """Effective learning rates along u (the step is rate * gradient) from gradient samples."""

    adagrad_window: float
    adam: float


def optimizer_rates(grads: np.ndarray, slope_index: tuple[int, int], adagrad_lr: float,
                    adam_lr: float) -> Rates:
    """adagrad_window: lr / sqrt(sum of the last n_win squared gradients + epsilon), per slope
    coordinate, averaged over every window of consecutive samples; adam late in a run (the bias
    corrections ~1): lr * m / sqrt(v) with v -> E[g^2] (beta2 = 0.999 averages ~1000 steps) and
    m carrying the drift, so a rate lr / sqrt(E[g^2])."""
    n_win, eps = ADAGRAD_WINDOW["n_win"], ADAGRAD_WINDOW["epsilon"]
    g2 = grads[:, list(slope_index)] ** 2
    window_sums = np.stack([np.convolve(col, np.ones(n_win), mode="valid") for col in g2.T])
    adagrad = float(np.mean(adagrad_lr / np.sqrt(window_sums + eps)))
    adam = float(np.mean(adam_lr / (np.sqrt(g2.mean(axis=0)) + ADAM["epsilon"])))
    return Rates(adagrad, adam)


def noise_offset(rate: float, noise_sd: float, curvature: float) -> float:
    """The offset along u that gradient noise builds from an exactly symmetric start (see the
    module docstring): rate * noise_sd / sqrt(2 a), a = rate * |curvature|; inf if not a saddle."""
    growth = rate * -curvature
    return rate * noise_sd / np.sqrt(2 * growth) if growth > 0 else np.inf


def escape_steps(rate: float, curvature: float, distance: float, offset: float) -> float:
    """Steps for the linearised dynamics d_(t+1) = (1 + a) d_t, a = rate * |curvature|, to grow
    an offset to the distance of the mode; inf where the curvature is not negative."""
    growth = rate * -curvature
    if growth <= 0 or not np.isfinite(offset):
        return np.inf
    return float(max(0.0, np.log(distance / offset)) / np.log1p(growth))


# ---------------------------------------------------------------------------------------------
# The two fits and the table


def fit_endpoint(settings: MechanismSettings, optimizer: tuple[str, float], init_kind: str,
                 data: Dataset, seed_base: int) -> tuple[VectorisedVIFitter, tuple, dict]:
    """Fit one data set with the vectorised engine; its final (mu, scale) parameters and info."""
    fitter = VectorisedVIFitter(settings.fit_settings(optimizer, init_kind), data.x.shape[0])
    result = fitter.fit(data, seed_base, data.seed)
    if result.status != "ok":
        raise RuntimeError(f"the {optimizer[0]} fit of seed {data.seed} failed: {result.error}")
    info = result.info
    params = params_from_moments(fitter, info["checkpoint_means"][-1], info["checkpoint_covs"][-1])
    return fitter, params, info


def _point_rows(fitter, params, label: str, what: str) -> list[dict]:
    values = fitter.to_variables(np.asarray(params[0]))
    slopes, sigma = values["slopes"][0], float(values["sigma"][0])
    return [
        {"name": f"{label}_slope_{k}", "value": float(slopes[k]), "unit": "slope",
         "explanation": f"slope {k} at the mean of the {what} (unconstrained mean mapped back)"}
        for k in range(len(slopes))] + [
        {"name": f"{label}_sigma", "value": sigma, "unit": "noise sd",
         "explanation": f"sigma at the mean of the {what}"}]


def mechanism_rows(data: Dataset, seed_base: int, settings: MechanismSettings = MechanismSettings(),
                   data_regime: str = "default") -> pd.DataFrame:
    """Every quantity of the mechanism for one data set, one row each (:data:`TABLE_COLUMNS`)."""
    jax = _jax()
    # both fitters share model, family and objective: the first one evaluates everything
    fitter, collapsed, collapse_info = fit_endpoint(
        settings, settings.collapse_optimizer, "default", data, seed_base)
    _, single, single_info = fit_endpoint(
        settings, settings.single_optimizer, "jitter", data, seed_base)
    key = jax.random.key(int(np.random.default_rng([seed_base, data.seed, 2]).integers(2**31)))
    elbo_key, draws_key, noise_key = jax.random.split(key, 3)
    elbo_c = full_elbo(fitter, collapsed, data, settings.n_draws, elbo_key)
    elbo_s = full_elbo(fitter, single, data, settings.n_draws, elbo_key)  # common draws
    u = slope_direction(fitter)
    eps = common_draws(fitter, collapsed, settings.n_geometry_draws, draws_key)
    symmetric = symmetric_params(fitter, collapsed)
    at_collapsed = directional_derivatives(fitter, collapsed, u, eps, data)
    at_symmetric = directional_derivatives(fitter, symmetric, u, eps, data)
    grads = gradient_noise(fitter, collapsed, data, settings.n_batches, noise_key)
    g_u = grads @ u
    noise_sd = float(g_u.std(ddof=1))
    (name_c, lr_c), (name_s, lr_s) = settings.collapse_optimizer, settings.single_optimizer
    if (name_c, name_s) != ("adagrad_window", "adam"):
        raise ValueError("the optimiser rates are derived for adagrad_window vs adam")
    rates = optimizer_rates(grads, slope_indices(fitter), lr_c, lr_s)
    true_slopes = np.asarray(data.regime.slopes, dtype=float)
    distance = float(abs(true_slopes[0] - true_slopes[1]) / np.sqrt(2))
    curvature = at_collapsed.curvature
    loss_unit = "engine loss (-ELBO / normaliser) per unit of u"
    rows = [
        {"name": "elbo_collapsed", "value": elbo_c[0], "error": elbo_c[1], "error_kind": "mcse",
         "unit": "nats", "explanation": f"full-data ELBO at the end of {name_c} (lr {lr_c:g}), "
         f"default start, {settings.n_draws} draws"},
        {"name": "elbo_single_mode", "value": elbo_s[0], "error": elbo_s[1], "error_kind": "mcse",
         "unit": "nats", "explanation": f"full-data ELBO at the end of {name_s} (lr {lr_s:g}), "
         f"jittered start (scale {settings.jitter_scale:g}), same draws"},
        {"name": "elbo_difference", "value": elbo_s[0] - elbo_c[0],
         "error": float(np.hypot(elbo_c[1], elbo_s[1])), "error_kind": "mcse",
         "unit": "nats", "explanation": "elbo_single_mode - elbo_collapsed (MCSEs combined as "
         "if independent: conservative under common draws)"},
        *_point_rows(fitter, collapsed, "collapsed", f"{name_c} fit"),
        *_point_rows(fitter, single, "single_mode", f"{name_s} fit"),
        {"name": "collapsed_iterations", "value": float(collapse_info["iterations_done"]),
         "unit": "steps", "explanation": f"iterations run by the {name_c} fit"},
        {"name": "single_mode_iterations", "value": float(single_info["iterations_done"]),
         "unit": "steps", "explanation": f"iterations run by the {name_s} fit"},
        {"name": "loss_normaliser", "value": float(fitter.scaling.normaliser), "unit": "",
         "explanation": "the engine's loss is -ELBO / this (N / batch for a total_size model)"},
    ]
    symmetric_text = ("the exactly symmetric point (slope means and sds averaged, equal "
                      "weights)")
    for label, point, what in (("collapsed", at_collapsed, "the collapsed fit's parameters"),
                               ("symmetric", at_symmetric, symmetric_text)):
        rows += [
            {"name": f"gradient_u_{label}", "value": point.gradient,
             "error": point.gradient_mcse, "error_kind": "mcse", "unit": loss_unit,
             "explanation": f"gradient of the expected loss (full data, "
             f"{settings.n_geometry_draws} common swap-paired draws) along u = "
             f"(slope_0 - slope_1)/sqrt 2 at {what}"},
            {"name": f"curvature_u_{label}", "value": point.curvature,
             "error": point.curvature_mcse, "error_kind": "mcse", "unit": loss_unit + " squared",
             "explanation": f"second derivative of the expected loss along u at {what}; "
             "negative: a saddle"},
        ]
    rows += [
        {"name": "gradient_u_minibatch_mean", "value": float(g_u.mean()),
         "error": noise_sd / np.sqrt(len(g_u)), "error_kind": "mcse", "unit": loss_unit,
         "explanation": f"mean of {settings.n_batches} minibatch gradients along u at the "
         "collapsed point (one eps and one batch each)"},
        {"name": "gradient_noise_sd_u", "value": noise_sd, "unit": loss_unit,
         "explanation": f"sd of {settings.n_batches} minibatch gradients along u at the "
         "collapsed point"},
        {"name": "gradient_rms_slopes", "value": float(np.sqrt(np.mean(
            grads[:, list(slope_indices(fitter))] ** 2))), "unit": "engine loss per slope unit",
         "explanation": "root mean square of the minibatch gradient per slope coordinate (what "
         "the optimisers' denominators see)"},
        {"name": "escape_distance", "value": distance, "unit": "along u",
         "explanation": "distance along u from the symmetric point to a permutation mode, "
         "|true slope_0 - true slope_1| / sqrt 2"},
    ]
    for name, lr, rate in ((name_c, lr_c, rates.adagrad_window), (name_s, lr_s, rates.adam)):
        growth = rate * max(-curvature, 0.0)
        rows += [
            {"name": f"rate_{name}", "value": rate, "unit": "u per unit gradient",
             "explanation": f"{name} (lr {lr:g}) effective learning rate at the collapsed point: "
             "step along u = rate * gradient"},
            {"name": f"step_drift_{name}", "value": rate * abs(at_collapsed.gradient),
             "unit": "u per step", "explanation": f"{name}'s displacement per step along u from "
             "the expected gradient at the collapsed point"},
            {"name": f"step_noise_{name}", "value": rate * noise_sd, "unit": "u per step",
             "explanation": f"sd of {name}'s displacement per step along u from the minibatch "
             "gradient noise"},
            {"name": f"growth_rate_{name}", "value": growth, "unit": "per step",
             "explanation": f"{name}: relative growth per step of an offset along u, rate * "
             "|curvature at the collapsed point| (0 if not a saddle)"},
        ]
        for start, offset in (("default", noise_offset(rate, noise_sd, curvature)),
                              ("jitter", settings.jitter_scale)):
            rows.append({
                "name": f"escape_steps_{name}_{start}_start",
                "value": escape_steps(rate, curvature, distance, offset), "unit": "steps",
                "explanation": f"{name}, {start} start: log(distance / offset) / log(1 + growth) "
                f"with offset {offset:.3g} ("
                + ("built by the gradient noise from the symmetric start" if start == "default"
                   else "the jitter scale") + ")"})
    table = pd.DataFrame(rows)
    table = table.assign(data_regime=data_regime, seed=int(data.seed), n_obs=int(data.x.shape[0]),
                         model=settings.model, method=settings.method)
    for column in ("error", "error_kind"):
        if column not in table:
            table[column] = None
    table["error"] = table["error"].astype(float)
    table["error_kind"] = table["error_kind"].fillna("")
    return table[list(TABLE_COLUMNS)]


def mechanism_table(datasets: list[tuple[str, Dataset]], seed_base: int,
                    settings: MechanismSettings = MechanismSettings()) -> pd.DataFrame:
    """:func:`mechanism_rows` for each (regime name, data set)."""
    return pd.concat([mechanism_rows(data, seed_base, settings, regime)
                      for regime, data in datasets], ignore_index=True)


def settings_from_config(section: dict, vi: dict) -> MechanismSettings:
    """The ``mechanism:`` config section (and ``vi.convergence_tolerance``) as settings."""
    return replace(
        MechanismSettings(), iterations=section["iterations"], n_draws=section["n_draws"],
        n_geometry_draws=section["n_geometry_draws"], n_batches=section["n_batches"],
        batch_size=section["batch_size"], jitter_scale=section["jitter_scale"],
        convergence_tolerance=vi["convergence_tolerance"])
