"""Deterministic ADVI (DADVI; Giordano, Ingram & Broderick 2024) as a fitter.

The objective is pymc-extras' ``create_dadvi_graph``: a meanfield Gaussian (means, log sds) in
the model's unconstrained space, the expectation of log p replaced by its average over a fixed
set of standard-normal draws (``n_fixed_draws``), minus the entropy; minimised to convergence
by ``scipy.optimize.minimize`` (trust-ncg with Hessian-vector products by default, as
``pymc_extras.fit_dadvi``). Two changes make it a study fitter, neither changing the
objective (the optimum equals ``fit_dadvi``'s for the same fixed draws; tested):

1. The fixed draws are a shared variable, so one compiled objective serves every seed (the
   library bakes them into the graph as a constant and compiles per call); each seed draws its
   own from its fit stream.
2. The start follows the init axis like the ADVI methods (``vimodes.fitting.vi_start``): means
   at PyMC's initial point (``default``), jittered, or a pushed prior draw; log sds 0 (the
   library starts every mean at 0 in the unconstrained space, which is the initial point for the
   marginal model but not for the ordered one).

With a second-order optimiser (trust-ncg) the likelihood is ``pm.NormalMixture`` (the fused Op
has no second derivatives); on these data its Hessian-vector product is NaN at the start for some
fixed draws (the fit is then recorded as failed), and it is slow at N = 100000. The study
therefore uses L-BFGS-B (gradients only) with the fused likelihood, as ``fit_dadvi`` allows
(``optimizer_method="L-BFGS-B"``).
"""

from __future__ import annotations

import time

import numpy as np
import pytensor
import pytensor.tensor as pt
from pymc import join_nonshared_inputs

from vimodes.fitting import (
    NUMERICAL_ERRORS,
    FitResult,
    FitSettings,
    _Fitter,
    bijection_ordering,
    compile_flat_reader,
    diagnostic_draws,
    fit_rng,
    gaussian_importance_diagnostics,
    vi_start,
)
from vimodes.simulate import Dataset

FIXED_DRAWS_STREAM = 4  # default_rng([seed_base, seed, FIXED_DRAWS_STREAM]): DADVI's draws


class DadviFitter(_Fitter):
    """DADVI on the full data; one approximation, draws shaped (1, draws, ...)."""

    def __init__(self, settings: FitSettings, n_obs: int):
        import dataclasses

        if settings.method != "dadvi":
            raise ValueError(f"DadviFitter does not handle method '{settings.method}'")
        if settings.dadvi_optimizer in HESSP_METHODS:
            # second derivatives: the fused Op has none
            settings = dataclasses.replace(settings, likelihood="pymc")
        super().__init__(settings, n_obs, batch_size=0)
        model = self.model
        point = model.initial_point()
        inputs = model.continuous_value_vars + model.discrete_value_vars
        [logp], flat_input = join_nonshared_inputs(point=point, outputs=[model.logp()],
                                                   inputs=inputs)
        self.ordering = bijection_ordering(point)
        self.n_params = int(sum(np.size(v) for v in point.values()))
        self.fixed_draws = pytensor.shared(np.zeros((settings.dadvi_fixed_draws, self.n_params)),
                                           name="fixed_draws")
        eta = pt.vector("eta", shape=(2 * self.n_params,))
        means, log_sds = eta[:self.n_params], eta[self.n_params:]
        samples = means + pt.exp(log_sds) * self.fixed_draws
        logp_draws = pytensor.graph.vectorize_graph(logp, replace={flat_input: samples})
        objective = -pt.mean(logp_draws) - pt.sum(log_sds)
        grad = pt.grad(objective, eta)
        vector = pt.vector("p", shape=(2 * self.n_params,))
        self._value_and_grad = pytensor.function([eta], [objective, grad])
        self._hessp = None
        if settings.dadvi_optimizer in HESSP_METHODS:
            self._hessp = pytensor.function([eta, vector],
                                            pt.grad(pt.sum(grad * vector), eta))
        self._logp = pytensor.function([flat_input], logp)
        self.default_start = np.concatenate([np.ravel(v) for v in point.values()])
        self._to_variables = compile_flat_reader(model, self.ordering)

    def start(self, rng: np.random.Generator) -> np.ndarray:
        return vi_start(self.settings, self.model, self.ordering, self.default_start, rng)

    def optimise(self, fixed_draws: np.ndarray, start: np.ndarray):
        """Minimise the DADVI objective for these fixed draws from means ``start`` and log sds
        0 (scipy's OptimizeResult; ``x`` = means then log sds)."""
        from scipy.optimize import minimize

        self.fixed_draws.set_value(np.asarray(fixed_draws, dtype=float))
        x0 = np.concatenate([start, np.zeros(self.n_params)])
        return minimize(self._value_and_grad, x0, jac=True, method=self.settings.dadvi_optimizer,
                        hessp=self._hessp)

    def fit(self, data: Dataset, seed_base: int, seed: int) -> FitResult:
        s = self.settings
        rng = fit_rng(seed_base, seed)
        self.set_data(data)
        fixed = np.random.default_rng([seed_base, seed, FIXED_DRAWS_STREAM]).standard_normal(
            (s.dadvi_fixed_draws, self.n_params))
        start = self.start(rng)
        started = time.perf_counter()
        try:
            result = self.optimise(fixed, start)
        except NUMERICAL_ERRORS as err:
            return FitResult("failed", f"{type(err).__name__}: {err}",
                             info={"fit_seconds": time.perf_counter() - started})
        runtime = time.perf_counter() - started
        mean, log_sd = result.x[:self.n_params], result.x[self.n_params:]
        info = {"fit_seconds": runtime, "iterations_done": int(result.nit),
                "stopped_early": bool(result.success), "final_loss": float(result.fun),
                "optimizer_message": str(result.message), "flat_start": start,
                "approx_mean": mean, "approx_cov": np.diag(np.exp(2 * log_sd))}
        if not (result.success and np.all(np.isfinite(result.x))):
            return FitResult("failed", f"DADVI optimiser did not converge: {result.message}",
                             info=info)
        flat = mean + np.exp(log_sd) * rng.standard_normal((s.draws, self.n_params))
        draws = {name: np.asarray(v)[None, ...] for name, v in self.to_variables(flat).items()}
        if not all(np.all(np.isfinite(v)) for v in draws.values()):
            return FitResult("failed", "non-finite DADVI draws", info=info)
        n_logp, with_khat = diagnostic_draws(s, seed)
        info.update(gaussian_importance_diagnostics(
            flat[:n_logp], mean, np.exp(2 * log_sd),
            lambda draws: np.array([self._logp(z) for z in draws]), with_khat, seed_base, seed))
        return FitResult("ok", None, draws=draws, info=info)


# scipy methods that take a Hessian-vector product
HESSP_METHODS = ("trust-ncg", "trust-krylov", "trust-constr", "Newton-CG")
