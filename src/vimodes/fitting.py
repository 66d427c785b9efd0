"""Fitting: one fitter object per (model, method, settings) that compiles once and fits many seeds.

A fitter owns the compiled PyTensor graph. For each seed it swaps the data into the shared
variables, restores every piece of mutable state (variational parameters, optimiser
accumulators), reseeds every random generator from the seed, and runs. A fit therefore depends
only on (settings, data, seed), never on which seeds the process fitted before -- the property
that lets the pipeline fit seeds in chunks (tested in tests/unit/test_fitting.py).

Numerical failures (NaN/inf loss, sampler errors) are returned as ``status='failed'`` results with
the message; interrupts and infrastructure errors propagate.
"""

from __future__ import annotations

import time

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from pytensor.tensor.random.type import RandomGeneratorType

from vimodes.config import TRACE_EVERY, FitSettings
from vimodes.fit_result import (  # noqa: F401 - FitResult & co. are read from here too
    CHECKPOINT_STREAM,
    FIT_STREAM,
    KHAT_STREAM,
    NUMERICAL_ERRORS,
    FitResult,
    NumericalFailure,
    fit_rng,
)
from vimodes.methods import method_spec
from vimodes.model_specs import VARIABLES
from vimodes.models import MODEL_SPECS, build_model
from vimodes.simulate import Dataset


def diagnostic_draws(settings: FitSettings, seed: int) -> tuple[int, bool]:
    """(how many approximation draws get the full-data log density, whether k-hat is computed).

    At N = 100000 one full-data log density costs ~1.7 ms, so k-hat from 1000 draws (enough
    for its Monte Carlo error to be small against the 0.7 threshold) costs more than a whole
    10000-step fit; it is computed for the first ``khat_seeds`` seeds of every cell (the same
    seeds in every cell) and only for correctly specified models. Every fit gets the ELBO from
    ``elbo_draws`` draws.
    """
    with_khat = (settings.khat_draws > 0 and MODEL_SPECS[settings.model].correctly_specified
                 and (settings.khat_seeds is None or seed < settings.khat_seeds))
    return max(settings.elbo_draws, settings.khat_draws if with_khat else 0), with_khat


def flat_names(ordering: dict, ddim: int) -> list[str]:
    """``value_name[j]`` for every coordinate of the approximation's flat vector."""
    names = [""] * ddim
    for value_name, slc, _, _ in ordering.values():
        for j, index in enumerate(range(slc.start, slc.stop)):
            names[index] = f"{value_name}[{j}]"
    return names


def flatten_point(ordering: dict, ddim: int, point: dict) -> np.ndarray:
    """A point (value-variable name -> array) as the approximation's flat vector."""
    flat = np.zeros(ddim)
    for value_name, slc, _, _ in ordering.values():
        flat[slc] = np.ravel(point[value_name])
    return flat


def prior_point(model: pm.Model, seed: int) -> dict[str, np.ndarray]:
    """One draw from the prior, in the unconstrained space, for every free variable.

    PyMC's ``make_initial_point_fn(default_strategy="prior")`` keeps an explicit ``initval``
    (the ordered model has one), so every seed would start from the same ordered slopes: the
    draw is made here instead, sorted where the variable is ordered, then transformed.
    """
    from pymc.distributions.transforms import Ordered

    draws = pm.draw(model.free_RVs, random_seed=seed)
    point = {}
    for rv, value in zip(model.free_RVs, draws):
        transform = model.rvs_to_transforms.get(rv)
        value = np.asarray(value, dtype=float)
        if isinstance(transform, Ordered):
            value = np.sort(value, axis=-1)
        if transform is not None:
            value = transform.forward(value, *rv.owner.inputs).eval()
        point[model.rvs_to_values[rv].name] = np.asarray(value, dtype=float)
    return point


def vi_start(settings: FitSettings, model: pm.Model, ordering: dict, default_start: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """The Gaussian's starting mean for an init kind (one function for both VI engines).

    ``default``: the model's initial point; ``jitter``: plus N(0, scale^2) per unconstrained
    coordinate; ``prior``: a prior draw pushed ``scale`` times as far from the initial point.
    """
    if settings.init_kind == "default":
        return default_start.copy()
    if settings.init_kind == "jitter":
        return default_start + rng.normal(0.0, settings.init_scale, size=default_start.shape)
    if settings.init_kind == "prior":
        draw = flatten_point(ordering, default_start.shape[0],
                             prior_point(model, int(rng.integers(2**31))))
        return default_start + settings.init_scale * (draw - default_start)
    raise ValueError(f"unknown init kind '{settings.init_kind}'")


def checkpoint_draws(to_variables, saved: dict[int, list[np.ndarray]], n_draws: int,
                     seed_base: int, seed: int) -> dict[str, np.ndarray]:
    """Draws of the model's variables from the approximation stored at each checkpoint, with a
    leading checkpoint axis (in the place of a chain axis), from the checkpoint stream."""
    per_checkpoint = []
    for iteration in sorted(saved):
        mean, cov = saved[iteration]
        rng = np.random.default_rng([seed_base, seed, CHECKPOINT_STREAM, iteration])
        flat = rng.multivariate_normal(mean, cov, size=n_draws, method="cholesky")
        per_checkpoint.append(to_variables(flat))
    return {name: np.stack([d[name] for d in per_checkpoint]) for name in per_checkpoint[0]}


def checkpoint_info(saved: dict[int, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """The approximation (mean, covariance in the flat space) stored at each checkpoint
    iteration, the final one included, as record fields (same for both VI engines)."""
    iterations = sorted(saved)
    return {"checkpoint_iterations": np.asarray(iterations),
            "checkpoint_means": np.stack([saved[i][0] for i in iterations]),
            "checkpoint_covs": np.stack([saved[i][1] for i in iterations])}


def _optimizer(name: str, learning_rate: float):
    return getattr(pm, name)(learning_rate=learning_rate)


def _binned_mean(values: np.ndarray, width: int) -> np.ndarray:
    n = len(values) // width * width
    head = values[:n].reshape(-1, width).mean(axis=1)
    return np.concatenate([head, [values[n:].mean()]]) if len(values) > n else head


def gaussian_importance_diagnostics(flat: np.ndarray, mean, cov, full_logp, with_khat: bool,
                                    seed_base: int, seed: int) -> dict:
    """ELBO and (``with_khat``) PSIS k-hat with its MCSE of a Gaussian approximation N(mean,
    cov) from its draws ``flat``; ``full_logp`` maps draws to log p(full data, z) with the
    Jacobian. One function for every Gaussian fitter (PyMC's and the vectorised engine, DADVI).

    A covariance that is numerically singular (e.g. full-rank ADVI after many steps) leaves the
    draws standing but the density -- so k-hat and the ELBO -- undefined: recorded as
    ``diagnostics_error``.
    """
    from vimodes.metrics import NO_IMPORTANCE_DIAGNOSTICS, gaussian_logq, importance_diagnostics

    if len(flat) == 0:
        return dict(NO_IMPORTANCE_DIAGNOSTICS)
    try:
        log_q = gaussian_logq(flat, mean, cov)
    except (np.linalg.LinAlgError, ValueError) as err:
        return {**NO_IMPORTANCE_DIAGNOSTICS, "diagnostics_error": f"{type(err).__name__}: {err}"}
    return importance_diagnostics(full_logp(flat), log_q, with_khat,
                                  rng=np.random.default_rng([seed_base, seed, KHAT_STREAM]))


def bijection_ordering(point: dict) -> dict:
    """PyMC's ``DictToArrayBijection`` layout of ``point`` (what Pathfinder and DADVI flatten
    with) in the form of an ADVI group's ``ordering``: value name -> (name, slice, shape,
    dtype)."""
    from pymc.blocking import DictToArrayBijection

    ordering, start = {}, 0
    for name, shape, size, dtype in DictToArrayBijection.map(point).point_map_info:
        ordering[name] = (name, slice(start, start + size), shape, dtype)
        start += size
    return ordering


def compile_flat_reader(model: pm.Model, ordering: dict):
    """One compiled function: (draws, dim) flat draws in the unconstrained space, laid out by
    ``ordering``, -> the model's VARIABLES (back-transformed)."""
    flat = pt.matrix("flat")
    outputs = []
    for name in VARIABLES:
        rv = model[name]
        _, slc, shape, _ = ordering[model.rvs_to_values[rv].name]
        block = flat[:, slc].reshape((flat.shape[0], *shape))
        transform = model.rvs_to_transforms.get(rv)
        outputs.append(transform.backward(block, *rv.owner.inputs) if transform else block)
    return pytensor.function([flat], outputs)


class _Fitter:
    """Shared plumbing: data in shared variables, model, flat-space <-> variable mapping."""

    def __init__(self, settings: FitSettings, n_obs: int, batch_size: int):
        self.settings = settings
        self.x_data = pytensor.shared(np.zeros(n_obs), name="x_data")
        self.y_data = pytensor.shared(np.zeros(n_obs), name="y_data")
        # minibatch VI keeps pm.NormalMixture: at 128 points per batch the fused Op is no faster
        full_data = method_spec(settings.method).full_data or not batch_size
        self.model = build_model(settings.model, self.x_data, self.y_data, batch_size=batch_size,
                                 likelihood=settings.likelihood if full_data else "pymc",
                                 n_components=settings.n_components)

    def check_size(self, data: Dataset) -> None:
        if data.x.shape != self.x_data.get_value(borrow=True).shape:
            raise ValueError(f"data of seed {data.seed} has {data.x.shape[0]} points, the fitter "
                             f"was compiled for {self.x_data.get_value(borrow=True).shape[0]}")

    def set_data(self, data: Dataset) -> None:
        self.check_size(data)
        self.x_data.set_value(data.x)
        self.y_data.set_value(data.y)

    def to_variables(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Flat unconstrained draws -> the model's variables (``self._to_variables``, compiled
        by the subclass with :func:`compile_flat_reader`)."""
        return dict(zip(VARIABLES, self._to_variables(np.atleast_2d(flat))))


class VIFitter(_Fitter):
    """Minibatch or full-batch ADVI, full-rank ADVI and SVGD with PyMC's own objective and
    optimisers, iterated by our loop so that state can be reset between seeds."""

    def __init__(self, settings: FitSettings, n_obs: int):
        s = settings
        super().__init__(s, n_obs, batch_size=s.batch_size or 0)
        with self.model:
            if s.method == "advi":
                self.inference = pm.ADVI(random_seed=0)
            elif s.method == "fullrank_advi":
                self.inference = pm.FullRankADVI(random_seed=0)
            elif s.method == "svgd":
                self.inference = pm.SVGD(n_particles=s.svgd_particles, jitter=1, random_seed=0)
            else:
                raise ValueError(f"VIFitter does not handle method '{s.method}'")
        self.approx = self.inference.approx
        self.group = self.approx.groups[0]
        # SVGD's objective (a kernelized Stein discrepancy) has no scalar loss to report
        self.has_loss = s.method != "svgd"
        self.step = self.inference.objective.step_function(
            obj_optimizer=_optimizer(s.optimizer_name, s.learning_rate), score=self.has_loss)
        shared = list(self.step.get_shared())
        self.rngs = [v for v in shared if isinstance(v.type, RandomGeneratorType)]
        data_vars = {self.x_data, self.y_data}
        self.state = {v: v.get_value(borrow=False) for v in shared
                      if v not in data_vars and v not in self.rngs}
        # where a fit starts: the mean of the Gaussian (ADVI, full-rank ADVI; not params[0],
        # which is the Cholesky factor for full-rank) or the particles (SVGD)
        self.start_param = self.group.shared_params["histogram" if s.method == "svgd" else "mu"]
        self.default_start = self.start_param.get_value()
        self.initial_point = self._flatten(self.model.initial_point())
        self._compile_readers()
        if settings.method != "svgd" and max(settings.khat_draws, settings.elbo_draws) > 0:
            self._full_logp = self._compile_full_logp()

    def _compile_readers(self) -> None:
        self._to_variables = compile_flat_reader(self.model, self.group.ordering)
        if self.settings.method in ("advi", "fullrank_advi"):
            self._moments = pytensor.function([], [self.approx.mean, self.approx.cov])

    def _initial_point(self, rng: np.random.Generator) -> np.ndarray:
        s, start = self.settings, self.default_start
        if s.method == "svgd":
            # SVGD starts its particles around the initial point; the spread is its own jitter
            centre = self.initial_point
            spread = s.init_scale if s.init_kind != "default" else 1.0
            return centre + rng.normal(0.0, spread, size=start.shape)
        return vi_start(s, self.model, self.group.ordering, start, rng)

    def _flatten(self, point: dict) -> np.ndarray:
        return flatten_point(self.group.ordering, self.group.ddim, point)

    def fit(self, data: Dataset, seed_base: int, seed: int) -> FitResult:
        s = self.settings
        rng = fit_rng(seed_base, seed)
        self.set_data(data)
        for var, value in self.state.items():
            var.set_value(value.copy())
        pm.pytensorf.reseed_rngs(self.rngs, int(rng.integers(2**31)))
        start = self._initial_point(rng)
        self.start_param.set_value(start)
        callback = (pm.callbacks.CheckParametersConvergence(tolerance=s.convergence_tolerance)
                    if s.convergence_tolerance else None)

        losses = np.full(s.iterations, np.nan)
        snapshots = []
        checkpoints, saved = set(s.checkpoints), {}
        started = time.perf_counter()
        done, stopped_early, error = 0, False, None
        try:
            for i in range(s.iterations):
                output = self.step()
                loss = output if self.has_loss else None
                done = i + 1
                if loss is not None:
                    losses[i] = loss
                    if not np.isfinite(loss):
                        raise NumericalFailure(f"{'NaN' if np.isnan(loss) else 'infinite'} loss "
                                               f"at iteration {done}")
                elif done % TRACE_EVERY == 0 and not np.all(np.isfinite(self.start_param.get_value())):
                    raise NumericalFailure(f"non-finite particles at iteration {done}")
                if done in checkpoints:
                    saved[done] = [np.array(m) for m in self._moments()]
                if done % TRACE_EVERY == 0:
                    snapshots.append(np.array(self.start_param.get_value()).reshape(-1, start.shape[-1])
                                     .mean(axis=0))
                if callback is not None:
                    try:
                        callback(self.approx, None, done)
                    except StopIteration:
                        stopped_early = True
                        break
        except (NumericalFailure, FloatingPointError, ValueError, np.linalg.LinAlgError) as err:
            error = f"{type(err).__name__}: {err}"
        runtime = time.perf_counter() - started

        info = {
            "iterations_done": done,
            "stopped_early": stopped_early,
            "final_loss": float(np.nanmean(losses[max(0, done - TRACE_EVERY):done]))
            if done and self.has_loss else None,
            "loss_trace": _binned_mean(losses[:done], TRACE_EVERY) if done and self.has_loss
            else np.array([]),
            "mean_trace": np.array(snapshots),
            "fit_seconds": runtime,
            "flat_start": start if start.ndim == 1 else start.mean(axis=0),
            "flat_names": self.flat_names(),
        }
        if error is not None:
            return FitResult("failed", error, info=info)
        if done < s.iterations and not stopped_early:
            return FitResult("incomplete", f"only {done} of {s.iterations} iterations ran", info=info)

        draws = self._draw(rng)
        if not all(np.all(np.isfinite(v)) for v in draws.values()):
            return FitResult("failed", "non-finite draws from the approximation", info=info)
        if s.method != "svgd":
            info.update(approx_mean=self.last_moments[0], approx_cov=self.last_moments[1])
        if s.checkpoints:
            # a fit that stopped early returns its final state for every longer budget
            for iteration in (*s.checkpoints, s.iterations):
                if iteration >= done:
                    saved[iteration] = list(self.last_moments)
            info.update(checkpoint_info(saved))
        info.update(self._importance_diagnostics(*diagnostic_draws(s, seed), seed_base, seed))
        stored = (checkpoint_draws(self.to_variables, saved, s.draws, seed_base, seed)
                  if s.checkpoints else {})
        if snapshots:
            # the trajectory of the approximation's centre, in the model's variables, so that
            # the classifier can tell when a fit settled in its final class
            info.update({f"{name}_trace": value for name, value in
                         self.to_variables(np.array(snapshots)).items()})
        return FitResult("ok", None, draws=draws, info=info, checkpoint_draws=stored)

    def _importance_diagnostics(self, n_draws: int, with_khat: bool, seed_base: int,
                                seed: int) -> dict:
        """The full-data ELBO and (``with_khat``) PSIS k-hat with its MCSE of the Gaussian
        approximation, from its first `n_draws` draws: log w = log p(full data, z) - log q(z).

        k-hat is local by construction: it cannot see a permutation mode the approximation
        missed. SVGD particles have no density, so neither is defined for SVGD.
        """
        from vimodes.metrics import NO_IMPORTANCE_DIAGNOSTICS

        if self.settings.method == "svgd" or n_draws == 0:
            return dict(NO_IMPORTANCE_DIAGNOSTICS)
        mean, cov = self.last_moments

        def full_logp(flat):
            return np.concatenate([self._full_logp(block) for block in np.array_split(
                flat, max(1, len(flat) // 25))])

        return gaussian_importance_diagnostics(self.last_flat_draws[:n_draws], mean, cov,
                                               full_logp, with_khat, seed_base, seed)

    def _compile_full_logp(self):
        """log p(full data, z) with the Jacobian, as a function of a (draws, dim) matrix.

        The NormalMixture models use the fused likelihood Op (equal to 1e-10, tested), one draw
        at a time: about 3 ms per draw at N = 100000, against ~15 ms for the vectorised graph.
        """
        from pytensor.graph.replace import graph_replace, vectorize_graph

        fused = not MODEL_SPECS[self.settings.model].question_likelihood
        full = build_model(self.settings.model, self.x_data, self.y_data, batch_size=0,
                           likelihood="fused" if fused else "pymc",
                           n_components=self.settings.n_components)
        flat = pt.vector("flat")
        replacements = {}
        for value_var in full.value_vars:
            _, slc, shape, _ = self.group.ordering[value_var.name]
            replacements[value_var] = flat[slc].reshape(shape)
        logp = graph_replace(full.logp(jacobian=True), replacements)
        if fused:
            one = pytensor.function([flat], logp)
            return lambda block: np.array([one(row) for row in block])
        batch = pt.matrix("flat_batch")
        return pytensor.function([batch], vectorize_graph(logp, {flat: batch}))

    def flat_names(self) -> list[str]:
        return flat_names(self.group.ordering, self.group.ddim)

    def _draw(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        s = self.settings
        if s.method == "svgd":
            particles = self.start_param.get_value()
            flat = particles[rng.integers(0, len(particles), size=s.draws)]
            self.last_moments = (particles.mean(axis=0), np.cov(particles, rowvar=False))
        else:
            mean, cov = self._moments()
            self.last_moments = (mean, cov)
            flat = rng.multivariate_normal(mean, cov, size=s.draws, method="cholesky")
        self.last_flat_draws = flat
        return {name: value[None, ...] for name, value in self.to_variables(flat).items()}


class NutsFitter(_Fitter):
    """NUTS on the full data with nutpie (compiled once, data swapped with ``with_data``),
    numpyro on JAX (compiled once, data passed as arguments; :mod:`vimodes.jax_nuts`) or PyMC's
    own sampler (recompiled per call: it is the baseline, not the fast path)."""

    STAT_NAMES = {  # our name: (nutpie name, pymc name)
        "diverging": ("diverging", "diverging"),
        "tree_depth": ("depth", "tree_depth"),
        "max_depth_reached": ("maxdepth_reached", "reached_max_treedepth"),
        "n_steps": ("n_steps", "n_steps"),
        "step_size": ("step_size", "step_size"),
    }

    def __init__(self, settings: FitSettings, n_obs: int):
        super().__init__(settings, n_obs, batch_size=0)
        if settings.sampler == "nutpie":
            import nutpie

            self._nutpie = nutpie
            self.compiled = nutpie.compile_pymc_model(self.model, backend="numba")
        elif settings.sampler == "numpyro":
            from vimodes.jax_nuts import NumpyroNuts

            self._numpyro = NumpyroNuts(self.model, self.x_data, self.y_data, draws=settings.draws,
                                        tune=settings.tune, chains=settings.chains or 1,
                                        target_accept=settings.target_accept)
            # numpyro samples a whole chunk in one compiled call (the pipeline calls fit_many
            # where a fitter has one); nutpie and PyMC fit one seed after another
            self.fit_many = self._numpyro_fit_many

    def _from_idata(self, idata, stat_index: int) -> tuple[dict, dict]:
        """Draws and our sampler statistics from nutpie's (0) or PyMC's (1) InferenceData."""
        draws = {name: np.asarray(idata.posterior[name].values, dtype=float) for name in VARIABLES}
        stats = {ours: np.asarray(idata.sample_stats[names[stat_index]].values)
                 for ours, names in self.STAT_NAMES.items()
                 if names[stat_index] in idata.sample_stats}
        return draws, stats

    def fit(self, data: Dataset, seed_base: int, seed: int) -> FitResult:
        s = self.settings
        sampler_seed = int(fit_rng(seed_base, seed).integers(2**31))
        self.set_data(data)
        started = time.perf_counter()
        try:
            if s.sampler == "nutpie":
                idata = self._nutpie.sample(
                    self.compiled.with_data(x_data=data.x, y_data=data.y), draws=s.draws,
                    tune=s.tune, chains=s.chains, cores=max(1, min(s.threads, s.chains)),
                    seed=sampler_seed, progress_bar=False, target_accept=s.target_accept)
                draws, stats = self._from_idata(idata, stat_index=0)
            elif s.sampler == "numpyro":
                draws, stats = self._numpyro.sample(data.x, data.y, sampler_seed)
            else:
                kwargs = {"nuts_sampler": s.sampler}
                idata = pm.sample(draws=s.draws, tune=s.tune, chains=s.chains,
                                  cores=max(1, min(s.threads, s.chains)), random_seed=sampler_seed,
                                  model=self.model, progressbar=False, target_accept=s.target_accept,
                                  compute_convergence_checks=False, **kwargs)
                draws, stats = self._from_idata(idata, stat_index=1)
        except NUMERICAL_ERRORS as err:
            return FitResult("failed", f"{type(err).__name__}: {err}",
                             info={"fit_seconds": time.perf_counter() - started})
        return self._result(draws, stats, time.perf_counter() - started)

    def _numpyro_fit_many(self, datasets: list[Dataset], seed_base: int,
                          seeds: list[int]) -> list[FitResult]:
        if len(seeds) == 1:
            # XLA compiles a batch of one differently: a duplicate keeps a seed's draws the
            # same in a chunk of one as in any other chunk
            return self._numpyro_fit_many([datasets[0]] * 2, seed_base, [seeds[0]] * 2)[:1]
        for data in datasets:
            self.check_size(data)  # the data are arguments of the compiled call, not shared
        sampler_seeds = [int(fit_rng(seed_base, seed).integers(2**31)) for seed in seeds]
        started = time.perf_counter()
        try:
            samples = self._numpyro.sample_many([d.x for d in datasets], [d.y for d in datasets],
                                                sampler_seeds)
        except NUMERICAL_ERRORS as err:
            seconds = time.perf_counter() - started
            return [FitResult("failed", f"{type(err).__name__}: {err}",
                              info={"fit_seconds": seconds}) for _ in seeds]
        runtime = (time.perf_counter() - started) / len(seeds)
        return [self._result(draws, stats, runtime) for draws, stats in samples]

    def _result(self, draws: dict, stats: dict, runtime: float) -> FitResult:
        s = self.settings
        chains_done, draws_done = draws["sigma"].shape[:2]
        info = {
            "fit_seconds": runtime,
            "draws_done": int(draws_done),
            "chains_done": int(chains_done),
            "divergences": int(stats["diverging"].sum()) if "diverging" in stats else None,
            "max_depth_hits": int(stats["max_depth_reached"].sum())
            if "max_depth_reached" in stats else None,
            "gradient_evaluations": int(stats["n_steps"].sum()) if "n_steps" in stats else None,
        }
        if info["draws_done"] < s.draws or info["chains_done"] < s.chains:
            return FitResult("incomplete", f"{info['chains_done']} chains x {info['draws_done']} "
                             f"draws returned, {s.chains} x {s.draws} asked", info=info)
        if not all(np.all(np.isfinite(v)) for v in draws.values()):
            return FitResult("failed", "non-finite posterior draws", info=info)
        return FitResult("ok", None, draws=draws, info=info, sample_stats=stats)
