"""Multi-path Pathfinder (pymc-extras) as a fitter: one "chain" per path, so that the downstream
classifier labels each path's draws on their own.

What runs is what ``pymc_extras.fit(method="pathfinder", num_paths=P, num_draws_per_path=D,
importance_sampling=None, concurrent=None, random_seed=r, model=model)`` runs -- the library's
own single-path function (``make_single_pathfinder_fn``), the same per-path seeds
(``_get_seeds_per_chain(r, P + 1)[:P]``), the library's default for every tuning constant -- with
three changes, none of which changes a draw (the draws are identical to ``pymc_extras.fit``'s
up to float rounding of the back-transform; tested):

1. Compile once per fitter, not once per fit. ``pymc_extras.fit`` rebuilds and re-rewrites its
   graphs on every call (~3-5 s even with a warm PyTensor cache). Here ``__init__`` builds the
   full-data model on shared data, the single-path function is compiled on its first use, and
   ``fit`` swaps the data into the shared variables and runs the paths. (The library copies its compiled functions per path --
   a re-link, ~0.1 s/path, not a recompile -- and the copies share the shared data's storage.)
2. Paths run serially and are returned in path order. The library's default
   ``concurrent="process"`` returns them in completion order, which is not reproducible.
3. The model log density is evaluated at only the first ``min(khat_draws, draws)`` of each
   path's final draws instead of all of them. The library needs logP at every draw only for
   importance sampling, which is off here; at N = 1e5 that evaluation was ~80% of a fit. The
   evaluated draws give each path's ELBO estimate and PSIS k-hat (``info``, :meth:`khat`).
   This is done by swapping the final-sampling function inside the library's single-path
   closure; if a pymc-extras version lacks it, the unmodified function runs (slower, same draws).

The user-facing variant (``pathfinder_psis``: the paths' draws pooled and importance-resampled,
``importance_sampling="psis"``) draws exactly the same paths from the same seed, so where the
per-path cell of the same seeds and settings ran first, :meth:`PathfinderFitter.fit_from_stored`
resamples the paths that cell stored (``FitResult.artifacts``) instead of running them again
(the result equals :meth:`PathfinderFitter.fit`'s; tested). The per-path cell stores its paths
only when it evaluates logP at every draw (``vi.khat_draws >= draws``), as the importance
weights need; otherwise the PSIS cell runs the paths itself.

Paths that fail (L-BFGS failure, single step, non-finite logP/logQ after the library's retries)
are dropped, as the library drops them; ``chains_done`` counts the surviving paths and
``path_status`` names every path's outcome. Only when no path survives is the fit ``failed``.

The initialisation axis maps onto Pathfinder's own start: ``default`` = the library's default
(model initial point + U(-2, 2) jitter per coordinate of the unconstrained space), ``jitter``
with scale s = U(-s, s) jitter. ``prior`` has no Pathfinder counterpart short of recompiling per
fit and is refused at construction.

The likelihood follows ``settings.likelihood`` as for NUTS: ``fused`` (the numba Op of
:mod:`vimodes.fastlik`, same density to ~1e-10, ~4x faster at N = 1e5) or ``pymc``
(``pm.NormalMixture``). It only matters for the ``marginal`` and ``ordered`` models.
"""

from __future__ import annotations

import json
import time
from functools import cached_property

import numpy as np
import pytensor
import pytensor.tensor as pt
from pymc.blocking import DictToArrayBijection
from pymc.util import _get_seeds_per_chain

from vimodes.fitting import (
    NUMERICAL_ERRORS,
    FitResult,
    FitSettings,
    _Fitter,
    bijection_ordering,
    compile_flat_reader,
    fit_rng,
)
from vimodes.fit_result import StoredFitMismatch
from vimodes.simulate import Dataset

# pymc-extras' defaults (fit_pathfinder), pinned here so that a library upgrade that changes
# them does not silently change the study; they are written into every fit's info.
PATHFINDER_DEFAULTS = {
    "maxiter": 1000,
    "ftol": 1e-5,
    "gtol": 1e-8,
    "maxls": 1000,
    "num_elbo_draws": 10,
    "epsilon": 1e-12,
    "max_init_retries": 10,
}
DEFAULT_JITTER = 2.0


def default_maxcor(n_params: int) -> int:
    """pymc-extras' default L-BFGS history size: max(ceil(3 log N), 5)."""
    return max(int(np.ceil(3 * np.log(n_params))), 5)


def _batched_logp(model, compile_kwargs: dict):
    """(B, N) flat unconstrained points -> (B,) model logp with Jacobian, one point at a time
    (pymc-extras' ``get_batched_logp_of_ravel_inputs``, without its scan deprecation warning)."""
    import pymc as pm
    from pytensor.graph import clone_replace

    (logp,), single = pm.pytensorf.join_nonshared_inputs(
        model.initial_point(), [model.logp(jacobian=True)], model.value_vars)
    batch = pt.matrix("batch", dtype="float64")
    batched = pytensor.map(fn=lambda row: clone_replace([logp], replace={single: row})[0],
                           sequences=[batch], return_updates=False)
    fn = pytensor.function([batch], batched, **compile_kwargs)
    fn.trust_input = True
    return fn


class _FinalSampler:
    """Stands in for the library's final-sampling function ``(x, g, alpha, s_win, z_win, u) ->
    (phi, logQ, logP, inv_hessian_diag)``, with logP at the first ``n_logp`` draws only."""

    def __init__(self, model, n_params: int, maxcor: int, n_logp: int, compile_kwargs: dict):
        from pymc_extras.inference.pathfinder.pathfinder import _bfgs_sample_pt

        x, g, alpha = (pt.vector(name, dtype="float64") for name in ("x", "g", "alpha"))
        s_win, z_win, u = (pt.matrix(name, dtype="float64") for name in ("s_win", "z_win", "u"))
        phi, log_q, diag = _bfgs_sample_pt(x, g, alpha, s_win, z_win, u, maxcor, n_params)
        self._sample = pytensor.function([x, g, alpha, s_win, z_win, u], [phi, log_q, diag],
                                         **compile_kwargs)
        self._logp = _batched_logp(model, compile_kwargs) if n_logp else None
        self.n_logp = n_logp

    def __call__(self, x, g, alpha, s_win, z_win, u):
        phi, log_q, diag = self._sample(x, g, alpha, s_win, z_win, u)
        phi = np.asarray(phi)
        log_p = (np.asarray(self._logp(np.ascontiguousarray(phi[:self.n_logp])))
                 if self._logp is not None else np.empty(0))
        return phi, log_q, log_p, diag

    def copy(self, share_memory: bool = False):
        return self  # paths run serially in this process


class PathfinderFitter(_Fitter):
    """Multi-path Pathfinder on the full data; draws shaped (paths, draws_per_path, ...)."""

    def __init__(self, settings: FitSettings, n_obs: int):
        s = settings
        if s.method not in ("pathfinder", "pathfinder_psis"):
            raise ValueError(f"PathfinderFitter does not handle method '{s.method}'")
        # pathfinder_psis resamples by importance weights, which need logP at every draw
        self.importance_sampling = "psis" if s.method == "pathfinder_psis" else None
        if s.pathfinder_paths < 1 or s.draws < 1:
            raise ValueError("pathfinder needs at least one path and one draw per path")
        self.jitter = self._jitter(s)
        super().__init__(s, n_obs, batch_size=0)
        self._point_map_info = DictToArrayBijection.map(self.model.initial_point()).point_map_info
        self.n_params = sum(size for _, _, size, _ in self._point_map_info)
        self.maxcor = default_maxcor(self.n_params)
        self.n_logp = s.draws if self.importance_sampling else max(0, min(s.khat_draws, s.draws))
        self.config = {"num_draws": s.draws, "maxcor": self.maxcor, "jitter": self.jitter,
                       **PATHFINDER_DEFAULTS}
        self._to_variables = compile_flat_reader(
            self.model, bijection_ordering(self.model.initial_point()))
        self.last_path_khat: list[float | None] = []
        self._last_fit: tuple[int, int] | None = None

    @cached_property
    def _single_path(self):
        """The library's single-path function, compiled on first use: a chunk that only
        resamples stored paths (:meth:`fit_from_stored`) never compiles it."""
        from pymc_extras.inference.pathfinder.pathfinder import (
            DEFAULT_LINKER,
            make_single_pathfinder_fn,
        )
        from pytensor.compile.mode import Mode

        single_path = make_single_pathfinder_fn(self.model, **self.config)
        self.cheap_final_logp = self._swap_final_sampler(
            single_path, _FinalSampler(self.model, self.n_params, self.maxcor, self.n_logp,
                                       {"mode": Mode(linker=DEFAULT_LINKER)}))
        return single_path

    def prepare(self) -> None:
        """Compile the single-path function now (before the first :meth:`fit`)."""
        _ = self._single_path

    stored_artifact = "paths"  # fit_from_stored reads what fit stored under this name

    @property
    def stores_paths(self) -> bool:
        """Whether a fit returns its paths for a ``pathfinder_psis`` cell to resample
        (:meth:`fit_from_stored`): only the per-path method does, and only when it evaluated the
        model at every draw (``khat_draws >= draws``), as the importance weights need."""
        return self.importance_sampling is None and self.n_logp == self.settings.draws

    @staticmethod
    def _jitter(settings: FitSettings) -> float:
        if settings.init_kind == "default":
            return DEFAULT_JITTER
        if settings.init_kind == "jitter":
            return float(settings.init_scale)
        raise ValueError(f"pathfinder supports the init kinds 'default' and 'jitter', not "
                         f"'{settings.init_kind}'")

    @staticmethod
    def _swap_final_sampler(single_path, sampler: _FinalSampler) -> bool:
        code = single_path.__code__
        if "final_sample_logp_func" not in code.co_freevars:
            return False
        cell = single_path.__closure__[code.co_freevars.index("final_sample_logp_func")]
        cell.cell_contents = sampler
        return True

    def path_seeds(self, random_seed: int) -> list[int]:
        """The per-path seeds ``pymc_extras.fit`` derives from ``random_seed``."""
        return [int(s) for s in
                _get_seeds_per_chain(random_seed, self.settings.pathfinder_paths + 1)[:-1]]

    def _run_path(self, path_seed: int) -> dict:
        from vimodes.metrics import psis_khat

        try:
            result = self._single_path(path_seed)
        except NUMERICAL_ERRORS as err:  # in pymc_extras.fit this would end the whole fit
            return {"status": "EXCEPTION", "lbfgs_status": None,
                    "error": f"{type(err).__name__}: {err}"}
        path = {"status": result.path_status.name, "lbfgs_status": result.lbfgs_status.name}
        if result.samples is None:  # a failed path: the library drops it
            return path
        log_p = np.asarray(result.logP)[0]
        log_q = np.asarray(result.logQ)[0][:len(log_p)]
        ratio = log_p - log_q
        khat = psis_khat(log_p, log_q) if len(log_p) else float("nan")
        return {**path, "samples": np.asarray(result.samples)[0],  # (draws, N)
                "log_p": log_p, "log_q": log_q,
                "lbfgs_iterations": int(result.lbfgs_niter),
                "elbo_argmax": int(result.elbo_argmax),
                "elbo": float(ratio.mean()) if len(ratio) and np.all(np.isfinite(ratio)) else None,
                "khat": float(khat) if np.isfinite(khat) else None}

    def fit(self, data: Dataset, seed_base: int, seed: int) -> FitResult:
        s = self.settings
        random_seed = int(fit_rng(seed_base, seed).integers(2**31))
        self.set_data(data)
        self._last_fit, self.last_path_khat = None, []
        self.prepare()  # outside _run_path's handling of a path's numerical failure
        started = time.perf_counter()
        paths = [self._run_path(path_seed) for path_seed in self.path_seeds(random_seed)]
        runtime = time.perf_counter() - started

        kept = [p for p in paths if "samples" in p]
        info = {
            "fit_seconds": runtime,
            "draws_done": s.draws if kept else 0,
            "chains_done": len(kept),  # surviving paths, in path order
            "paths_asked": s.pathfinder_paths,
            "paths_failed": len(paths) - len(kept),
            "path_status": [p["status"] for p in paths],  # every path, failed ones included
            "lbfgs_status": [p["lbfgs_status"] for p in paths],
            # per surviving path (the chain axis of the draws):
            "lbfgs_iterations": [p["lbfgs_iterations"] for p in kept],  # accepted L-BFGS steps
            "elbo_argmax": [p["elbo_argmax"] for p in kept],  # step whose approximation was kept
            # ELBO of the kept approximation, mean of logP - logQ (logP unnormalised, with the
            # Jacobian) over the first `logp_draws` returned draws; PSIS k-hat of the same ratios
            "path_elbo": [p["elbo"] for p in kept],
            "path_khat": [p["khat"] for p in kept],
            "logp_draws": self.n_logp,
            "pathfinder_random_seed": random_seed,
            "pathfinder_config": dict(self.config),
        }
        errors = [p["error"] for p in paths if "error" in p]
        if errors:
            info["path_errors"] = errors
        result = self._finish(kept, info, random_seed, seed_base, seed)
        if self.stores_paths:
            result.artifacts[self.stored_artifact] = self._stored(kept, info)
        return result

    def _stored(self, kept: list[dict], info: dict) -> dict[str, np.ndarray]:
        """What :meth:`fit_from_stored` needs: the surviving paths' unconstrained draws, their
        logP and logQ, and the fit's info (as JSON)."""
        shape = (len(kept), self.settings.draws)
        return {
            "samples": (np.stack([p["samples"] for p in kept]) if kept
                        else np.zeros((*shape, self.n_params))),
            "log_p": np.stack([p["log_p"] for p in kept]) if kept else np.zeros(shape),
            "log_q": np.stack([p["log_q"] for p in kept]) if kept else np.zeros(shape),
            "info": np.array(json.dumps(info)),
        }

    def fit_from_stored(self, data: Dataset, seed_base: int, seed: int,
                        stored: dict[str, np.ndarray]) -> FitResult:
        """The fit of this seed from the paths a per-path (``pathfinder``) fit of the same seed
        stored (:meth:`_stored`): the same paths, because the per-path seeds depend only on
        (seed_base, seed, number of paths), checked with the Pathfinder settings, so the result
        equals :meth:`fit`'s (tested) without running the paths again.
        ``fit_seconds`` stays the paths' time, which a user of the method spends;
        ``resample_fit_seconds`` is this step's."""
        s = self.settings
        started = time.perf_counter()
        random_seed = int(fit_rng(seed_base, seed).integers(2**31))
        info = json.loads(str(stored["info"]))
        if info["pathfinder_random_seed"] != random_seed:
            raise StoredFitMismatch(f"stored paths of seed {seed} were drawn with random seed "
                             f"{info['pathfinder_random_seed']}, this fit's is {random_seed}")
        if info["pathfinder_config"] != self.config or info["paths_asked"] != s.pathfinder_paths:
            raise StoredFitMismatch(f"stored paths of seed {seed} come from other Pathfinder "
                                    "settings")
        samples, log_p, log_q = stored["samples"], stored["log_p"], stored["log_q"]
        n_paths = samples.shape[0]
        if samples.shape != (n_paths, s.draws, self.n_params) or not (
                log_p.shape == log_q.shape == (n_paths, s.draws)):
            raise StoredFitMismatch(
                f"stored paths of seed {seed} have shapes samples {samples.shape}, logP "
                f"{log_p.shape}, logQ {log_q.shape}; this fit needs (paths, {s.draws}, "
                f"{self.n_params}) draws with logP and logQ at every draw")
        self.check_size(data)
        self._last_fit, self.last_path_khat = None, []
        kept = [{"samples": samples[i], "log_p": log_p[i], "log_q": log_q[i]}
                for i in range(n_paths)]
        info["logp_draws"] = self.n_logp
        result = self._finish(kept, info, random_seed, seed_base, seed)
        result.info["resample_fit_seconds"] = time.perf_counter() - started
        return result

    def _finish(self, kept: list[dict], info: dict, random_seed: int, seed_base: int,
                seed: int) -> FitResult:
        s = self.settings
        if not kept:
            errors = info.get("path_errors", [])
            reason = "; ".join(errors) if errors else ", ".join(info["path_status"])
            return FitResult("failed", f"all {s.pathfinder_paths} Pathfinder paths failed: "
                             f"{reason}", info=info)
        flat = np.stack([p["samples"] for p in kept])  # (paths, draws, N)
        if self.importance_sampling:
            flat = self._resample(kept, flat, random_seed, info)  # (1, draws, N)
        values = self.to_variables(flat.reshape(-1, flat.shape[-1]))
        draws = {name: np.asarray(v, dtype=float).reshape(flat.shape[0], s.draws, *v.shape[1:])
                 for name, v in values.items()}
        if not all(np.all(np.isfinite(v)) for v in draws.values()):
            return FitResult("failed", "non-finite Pathfinder draws", info=info)
        self._last_fit, self.last_path_khat = (seed_base, seed), info["path_khat"]
        return FitResult("ok", None, draws=draws, info=info)

    def _resample(self, kept: list[dict], flat: np.ndarray, random_seed: int,
                  info: dict) -> np.ndarray:
        """What ``pymc_extras.fit`` returns with its default ``importance_sampling="psis"``:
        the surviving paths' draws pooled, weighted by PSIS-smoothed logP - logQ (each path's
        densities divided by the number of paths) and resampled without replacement (with
        replacement if too few weights are non-zero), by the library's own function and with
        its choice seed (the last of the per-path seeds). One chain of ``draws`` draws; the
        PSIS k-hat of the pooled weights is the fit's k-hat."""
        from pymc_extras.inference.pathfinder.importance_sampling import importance_sampling

        choice_seed = int(_get_seeds_per_chain(random_seed,
                                               self.settings.pathfinder_paths + 1)[-1])
        result = importance_sampling(
            flat, np.stack([p["log_p"] for p in kept]), np.stack([p["log_q"] for p in kept]),
            num_draws=self.settings.draws, method=self.importance_sampling,
            random_seed=choice_seed)
        khat = np.nan if result.pareto_k is None else float(np.asarray(result.pareto_k))
        info.update(psis_khat=khat if np.isfinite(khat) else None, importance_sampling="psis",
                    importance_warnings=list(result.warnings))
        return np.asarray(result.samples)[None]

    def khat(self, data: Dataset, n_draws: int, seed_base: int, seed: int) -> float | None:
        """The worst (largest) per-path PSIS k-hat of the last fit, from the draws at which that
        fit evaluated the model (``logp_draws`` = min(khat_draws, draws) per path).

        Local by construction: each path's approximation is one Gaussian and cannot see a
        permutation mode it missed.
        """
        if self._last_fit != (seed_base, seed):
            raise ValueError(f"khat asked for seed {seed}, the last successful fit was "
                             f"{self._last_fit}")
        values = [k for k in self.last_path_khat if k is not None]
        return max(values) if values else None
