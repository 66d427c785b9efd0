"""PyMC models of the K-component mixture of linear regressions: the question's model, its
ablations (each fixing exactly one of its errors), and the corrected models.

K (``n_components``) is a property of the fit, not of the data: a K = 3 model may be fitted to
K = 2 data (over-fitting). The question's variants (``as_asked*``) are its 2-component code and
stay K = 2 only; the corrected models (``marginal``, ``ordered``) take any K >= 1 with
exchangeable priors: Dirichlet(1, ..., 1) weights, iid N(0, 2) slopes, HalfNormal(1) sigma.

Every model names its free variables the same way -- ``slopes`` (K,), ``weights`` (K,) and
``sigma`` -- so that fits of different models are read by the same code. The question had two
separate ``w_0``, ``w_1`` variables with identical independent priors; one vector with the same
iid prior is the same distribution and the same flat space for ADVI.

Errors of the question's model (the question: docs/question.md):

* E1: the mixture is taken over whole-batch log-likelihoods ("the whole batch comes from one
  line") instead of per observation;
* E2: the Gaussian normaliser has ``log(sigma)`` where ``2 log(sigma)`` (= log sigma^2) belongs, i.e.
  ``-0.5 log sigma`` once per call of its ``logp_normal`` instead of ``-log sigma`` per observation;
* E3: the minibatch likelihood is not rescaled to the data size (no ``total_size``);
* E4: ``sigma ~ Uniform(0, 1)`` caps the noise at 1;
* E5 (two unaligned minibatch streams in PyMC 5) is never reproduced: all minibatch models use
  one joint, aligned ``pm.Minibatch(x, y)``.

``marginal`` is the corrected model written with ``pm.NormalMixture``; ``as_asked_fix_all`` is the
question's code path with every error fixed and must have the same log density (tested).
"""

from __future__ import annotations

import numpy as np
import pymc as pm

from vimodes.model_specs import MODEL_NAMES, MODEL_SPECS, SLOPE_PRIOR_SD, ModelSpec  # noqa: F401

N_COMPONENTS = 2  # the question's K, and the default of build_model
SIGMA_PRIOR_SD = 1.0


def ordered_initval(n_components: int) -> np.ndarray:
    """The ordered model's start for K components: ``k - (K - 1) / 2``, k = 0..K-1.

    PyMC's all-zero default is invalid under the ordered transform, so an explicit start is
    needed; it is "neutral" in the sense of the marginal model's symmetric start: centred on the
    prior mean 0 (no information on where the slopes are) and with every unconstrained log-gap
    coordinate at 0 (gap exp(0) = 1), as every unconstrained coordinate of the marginal default
    is. It favours no labelling and sits at no true slope. (A linspace(-0.5, 0.5, K) start would
    shrink the gaps, i.e. move the log-gap coordinates off 0, as K grows.) K = 2: (-0.5, 0.5).
    """
    return np.arange(n_components, dtype=float) - (n_components - 1) / 2.0


#: The K = 2 start, as before the K generalisation.
ORDERED_INITVAL = ordered_initval(2)


def check_components(name: str, n_components: int) -> None:
    """ValueError unless model `name` can be built with `n_components` components."""
    if int(n_components) != n_components or n_components < 1:
        raise ValueError(f"n_components must be an integer >= 1, got {n_components!r}")
    if MODEL_SPECS[name].question_likelihood and n_components != N_COMPONENTS:
        # the question's code is a 2-component model; a K-component "as asked" model would be
        # our invention, not the question's, so it is refused rather than extrapolated
        raise ValueError(f"model '{name}' is the question's 2-component model; n_components must "
                         f"be {N_COMPONENTS}, got {n_components}")


def question_loglike(x, y, weights, slopes, sigma, *, per_observation: bool,
                     correct_normaliser: bool):
    """The question's mixture log-likelihood on one batch, with E1/E2 switchable.

    Works on numpy arrays and on PyTensor tensors alike (it only uses the ``pm.math`` API).
    Components along the first axis, as the question stacks them: XLA vectorises a sum over
    the K rows of a (K, n) array, while a (n, K) array's trailing axis of length 2 made the
    vectorised engine's step of the per-observation variants twice as slow
    (benchmarks/README.md); the values agree to rounding (~1e-14 relative).
    """
    delta = y[None, :] - slopes[:, None] * x[None, :]  # (K, n)
    log_norm = 2.0 * pm.math.log(sigma) if correct_normaliser else pm.math.log(sigma)
    if per_observation:
        per_obs = -0.5 * (np.log(2 * np.pi) + log_norm + delta**2 / sigma**2)
        return pm.math.logsumexp(pm.math.log(weights)[:, None] + per_obs, axis=0).sum()
    n = delta.shape[1]
    batch_norm = n * log_norm if correct_normaliser else log_norm
    per_component = -0.5 * (n * np.log(2 * np.pi) + batch_norm + (delta**2).sum(axis=1) / sigma**2)
    return pm.math.logsumexp(pm.math.log(weights) + per_component)


def mixture_form_offset(spec: ModelSpec, n_obs: int, sigma: np.ndarray) -> np.ndarray:
    """The model's log-likelihood of ``n_obs`` points minus the normal mixture's, per draw of
    ``sigma``, for a model of ``spec.mixture_form``. The question writes log sigma where the
    normal density's normaliser has log sigma**2 (E2): every point's density is then
    sqrt(sigma) times the normal's, whatever its component."""
    if not spec.mixture_form:
        raise ValueError(f"model '{spec.name}' is not a normal mixture up to a term in sigma")
    sigma = np.asarray(sigma, dtype=float)
    if spec.question_likelihood and not spec.correct_normaliser:
        return 0.5 * n_obs * np.log(sigma)
    return np.zeros_like(sigma)


def _priors(spec: ModelSpec, n_components: int):
    weights = pm.Dirichlet("weights", a=np.ones(n_components))
    if spec.ordered:
        slopes = pm.Normal("slopes", 0.0, SLOPE_PRIOR_SD, shape=n_components,
                           transform=pm.distributions.transforms.ordered,
                           initval=ordered_initval(n_components))
    else:
        slopes = pm.Normal("slopes", 0.0, SLOPE_PRIOR_SD, shape=n_components)
    if spec.sigma_prior == "uniform01":
        sigma = pm.Uniform("sigma", 0.0, 1.0)
    else:
        sigma = pm.HalfNormal("sigma", SIGMA_PRIOR_SD)
    return weights, slopes, sigma


def build_model(name: str, x_data, y_data, *, batch_size: int = 0, likelihood: str = "pymc",
                n_components: int = N_COMPONENTS):
    """Build model `name` with `n_components` components on data held in shared variables (so
    data can be swapped in place).

    ``x_data``/``y_data`` are ``pytensor.shared`` variables of the full data; ``batch_size`` > 0
    draws an aligned joint minibatch of that size per evaluation. ``likelihood='fused'`` uses the
    fused numba Op for the NormalMixture models (NUTS speed path, same values; the Op is generic
    over K). The question's variants accept only ``n_components=2`` (ValueError otherwise).
    """
    if name not in MODEL_SPECS:
        raise ValueError(f"unknown model '{name}'; expected one of {list(MODEL_SPECS)}")
    spec = MODEL_SPECS[name]
    check_components(name, n_components)
    n_total = x_data.get_value(borrow=True).shape[0]
    with pm.Model(name="") as model:
        weights, slopes, sigma = _priors(spec, n_components)
        if batch_size:
            x, y = pm.Minibatch(x_data, y_data, batch_size=batch_size)
        else:
            x, y = x_data, y_data
        if spec.question_likelihood:
            loglike = question_loglike(x, y, weights, slopes, sigma,
                                       per_observation=spec.per_observation,
                                       correct_normaliser=spec.correct_normaliser)
            if spec.scale_to_total and batch_size:
                # what total_size does for an observed variable: rescale the batch to N points
                loglike = loglike * (n_total / batch_size)
            pm.Potential("y_obs", loglike)
        elif likelihood == "fused":
            from vimodes.fastlik import add_fused_likelihood

            add_fused_likelihood("y_obs", x, y, weights, slopes, sigma)
        else:
            pm.NormalMixture("y_obs", w=weights, mu=x[:, None] * slopes[None, :], sigma=sigma,
                             observed=y, total_size=n_total if batch_size else None)
    return model

