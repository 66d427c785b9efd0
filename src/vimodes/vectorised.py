"""The vectorised VI engine: a whole chunk of seeds fitted by one compiled JAX step.

PyMC's ``pm.fit`` runs one fit as a Python loop of ~100-250 us PyTensor calls, almost all of it
per-call overhead at minibatch 128. This engine runs the *same algorithm* for every seed of a
chunk at once: one ``jax.vmap``-ed step inside a ``jax.lax.scan``, on the CPU by default and on a
GPU unchanged (JAX picks the device). What "the same" means, checked against PyMC 5.28's sources
and tested step by step against PyMC's own compiled step (``tests/unit/test_vectorised.py``):

* the variational families are PyMC's: meanfield ``mu, rho`` with sd ``softplus(rho)`` (start
  ``rho = 0``), full-rank ``mu, L_tril`` with the Cholesky diagonal through ``softplus`` (start
  ``L_tril = I``), in the model's unconstrained space with the model's own transforms and flat
  layout (taken from PyMC's approximation group);
* the loss is PyMC's KL operator with one Monte Carlo draw per step,
  ``(log q(z) - log p_prior(z) - s * log p_data(z; batch)) / c`` with ``log q`` evaluated at the
  standard-normal draw as PyMC does; ``s`` rescales a minibatch to the data size (``total_size``
  or the question's own rescaling) and ``c`` is PyMC's normalising constant (``N / batch`` for a
  ``total_size`` observed variable, else 1);
* a minibatch is ``batch`` indices drawn uniformly *with* replacement (``pm.Minibatch``);
* the optimisers are PyMC's update formulas: ``adam`` (Lasagne's, bias-corrected step size) and
  ``adagrad_window`` (squared gradients of the last ``n_win`` steps, ``epsilon`` inside the root);
* the question's ``CheckParametersConvergence`` (every 100 iterations, relative difference,
  infinity norm, first reference after iteration 1) stops a seed exactly where PyMC's would;
* a non-finite loss marks that seed failed at that iteration (as the project's PyMC loop does;
  ``pm.fit`` itself raises on NaN only); its parameters are frozen there and the other seeds go
  on.

The log densities are compiled from the PyMC model by PyTensor's JAX backend (value variables
as slices of the flat vector, data as arguments), so every model variant of the study -- also
the question's hand-written likelihood -- is the PyMC model's, not a re-implementation. The
NormalMixture models' likelihood is the fused Op's (tested equal to ``pm.NormalMixture``); on
the CPU the loss computes it, value and gradient, with the numba kernel called from inside XLA
(:mod:`vimodes.fastlik_ffi`, the same sum to rounding, ~2x faster than XLA's code for it). The
full-data log density of the diagnostics (ELBO, k-hat) takes the fused SIMD likelihood where
the model is a normal mixture up to a term in sigma, tested equal to the PyMC model's.

Random numbers differ from PyMC's, so the engines agree in distribution, not draw by draw; the
study's cross-check grid measures that. Each seed has two numpy streams of its own (children of
a seed drawn from the fit's stream, as PyMC reseeds its random variables), one for its Gaussian
draws and one for its minibatch indices, drawn a block of TRACE_EVERY steps at a time outside the
compiled step. So a fit depends only on
(settings, data, seed), never on the other seeds of its chunk or on the total budget, and a
10000-iteration checkpoint of a long run is the 10000-iteration run (tested on the CPU; XLA on a
GPU gives no bitwise guarantee).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from vimodes.bounded_integers import draw_indices
from vimodes.fastlik import _jit as njit_cached
from vimodes.fastlik_ffi import on_cpu_kernel
from vimodes.fitting import (
    NUMERICAL_ERRORS,
    TRACE_EVERY,
    VARIABLES,
    FitResult,
    FitSettings,
    _binned_mean,
    checkpoint_draws,
    checkpoint_info,
    compile_flat_reader,
    diagnostic_draws,
    fit_rng,
    flat_names,
    gaussian_importance_diagnostics,
    vi_start,
)
from vimodes.methods import methods_on_engine
from vimodes.model_specs import MODEL_SPECS
from vimodes.models import build_model, mixture_form_offset
from vimodes.runtime import limit_xla_cpu_threads
from vimodes.simulate import Dataset

VECTORISED_METHODS = methods_on_engine("vectorised")
ADAGRAD_WINDOW = {"epsilon": 0.1, "n_win": 10}  # pm.adagrad_window's defaults
ADAM = {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}  # pm.adam's defaults
CONVERGENCE_EVERY = 100  # CheckParametersConvergence's default `every`
# blocks whose minibatches are gathered together, seed by seed, as far as their points take
# at most GATHER_BYTES (a chunk of 100 seeds: 10 blocks of 20 MB; of 1000 seeds: one block)
GATHER_BLOCKS, GATHER_BYTES = 10, 256 * 2**20
_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


def _jax():
    import jax

    from vimodes.fastlik import register_jax_dispatch

    register_jax_dispatch()  # enables float64, as PyMC computes in float64
    return jax


def _aligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float64 array whose data start on a 64-byte boundary. XLA's CPU client
    reads such an argument of a compiled call in place; any other numpy array it copies first
    (the 20 MB of minibatch points of a block of 100 seeds: 5 ms alone, ~3 ms of CPU per block
    in the running loop; benchmarks/README.md). The array must not change while a call may
    still read it (``block_inputs`` refills one only after its call has run)."""
    size = int(np.prod(shape))
    buffer = np.empty(size + 8)
    start = (-buffer.ctypes.data % 64) // 8
    return buffer[start:start + size].reshape(shape)


_HOST_ARRAYS: dict = {}  # this process's reusable host arrays: their shapes, the arrays
_HOST_ARRAYS_FREE = threading.Lock()


@contextlib.contextmanager
def _host_arrays(shapes: list[tuple[int, ...]]) -> Iterator[list[np.ndarray]]:
    """Aligned float64 arrays of ``shapes`` for a chunk's host data and minibatch points: the
    memory the previous chunk of the same shapes used, kept while the process lives (one set
    at a time: a chunk of other shapes replaces it). Fresh arrays of this size cost the
    kernel's page faults and zeroing: ~5 ms of system time per fit at a chunk of 100
    (benchmarks/README.md). A chunk fitted at the same time in another thread gets arrays of
    its own."""
    if not _HOST_ARRAYS_FREE.acquire(blocking=False):
        yield [_aligned_empty(shape) for shape in shapes]
        return
    try:
        if _HOST_ARRAYS.get("shapes") != shapes:
            _HOST_ARRAYS.clear()  # the old set freed before the new one is allocated
            _HOST_ARRAYS.update(shapes=shapes,
                                arrays=[_aligned_empty(shape) for shape in shapes])
        yield _HOST_ARRAYS["arrays"]
    finally:
        _HOST_ARRAYS_FREE.release()


@intrinsic
def _copy_row_streaming(typingctx, out, out_offset, table, row):
    """``out.flat[out_offset:out_offset + 2] = table[row]``: one 16-byte load and one
    non-temporal 16-byte store (both arrays C-contiguous float64 on 16-byte boundaries). The
    store goes to memory without first reading the line into the caches, which a normal store
    does and which made the gather's writes a third of its time (benchmarks/README.md); and
    the minibatches, read only by a later compiled call, do not evict the data from the
    caches."""
    signature = types.void(out, out_offset, table, row)

    def codegen(context, builder, sig, args):
        pair = ir.VectorType(ir.DoubleType(), 2)
        two = ir.Constant(ir.IntType(64), 2)
        out_data = context.make_array(sig.args[0])(context, builder, args[0]).data
        table_data = context.make_array(sig.args[2])(context, builder, args[2]).data
        source = builder.gep(table_data, [builder.mul(args[3], two)])
        target = builder.gep(out_data, [args[1]])
        value = builder.load(builder.bitcast(source, pair.as_pointer()), align=16)
        store = builder.store(value, builder.bitcast(target, pair.as_pointer()), align=16)
        store.set_metadata("nontemporal",
                           builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def _store_fence(typingctx):
    """A full memory fence: non-temporal stores are weakly ordered, so they are made visible
    before anything after it (e.g. another thread's compiled call reading the array)."""

    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@njit_cached  # numba, cached on disk where a cache folder is writable
def _gather_rows(table, indices, n_obs, outs):
    """Fill ``outs[block][step, seed]`` with ``table[seed * n_obs + indices[seed, block,
    step]]`` for every block, seed and step: each seed's minibatch points, one step-major
    (steps, seeds, batch, 2) array per block, from the chunk's interleaved (x, y) host array
    (``block_inputs``; every array C-contiguous on a 16-byte boundary, ``_aligned_empty``).
    Seed by seed across the group of blocks, so that a seed's ~1.6 MB of points are read from
    the CPU's caches after their first block (block by block, the 100 seeds' 160 MB came from
    memory on every read; benchmarks/README.md), and written by non-temporal stores
    (``_copy_row_streaming``). A loop rather than ``np.take``: numpy's per-row overhead made it
    slower."""
    n_seeds, n_blocks, n_steps, n_batch = indices.shape
    for seed in range(n_seeds):
        base = seed * n_obs
        for block in range(n_blocks):
            out = outs[block]
            for step in range(n_steps):
                first = (step * n_seeds + seed) * n_batch
                for j in range(n_batch):
                    row = base + np.int64(indices[seed, block, step, j])
                    _copy_row_streaming(out, (first + j) * 2, table, row)
    _store_fence()


@dataclass(frozen=True)
class Scaling:
    """How a minibatch term is weighted: ``data_scale`` multiplies the batch log-likelihood and
    ``normaliser`` divides the whole loss (PyMC's ``symbolic_normalizing_constant``)."""

    data_scale: float
    normaliser: float

    @classmethod
    def for_model(cls, model_name: str, n_obs: int, batch_size: int | None) -> Scaling:
        if not batch_size:
            return cls(1.0, 1.0)
        spec = MODEL_SPECS[model_name]
        ratio = n_obs / batch_size
        if not spec.question_likelihood:  # pm.NormalMixture(total_size=N): a minibatch RV
            return cls(ratio, ratio)
        # the question's likelihood is a Potential: PyMC does not normalise it; the E3 fix
        # rescales it inside the model
        return cls(ratio if spec.scale_to_total else 1.0, 1.0)


class VectorisedVIFitter:
    """Meanfield or full-rank ADVI for many seeds at once (``fit_many``); ``fit`` fits one."""

    def __init__(self, settings: FitSettings, n_obs: int):
        s = settings
        if s.method not in VECTORISED_METHODS:
            raise ValueError(f"the vectorised engine fits {VECTORISED_METHODS}, not '{s.method}'")
        self.settings = s
        self.n_obs = n_obs
        self.batch_size = s.batch_size or 0
        self.scaling = Scaling.for_model(s.model, n_obs, self.batch_size)
        self.x_data = pytensor.shared(np.zeros(n_obs), name="x_data")
        self.y_data = pytensor.shared(np.zeros(n_obs), name="y_data")
        # the NormalMixture models use the fused likelihood's JAX form (tested equal to the
        # pm.NormalMixture model, step by step): XLA runs it ~4x faster than the generic graph
        self.spec = MODEL_SPECS[s.model]
        fused = not self.spec.question_likelihood
        self.model = build_model(s.model, self.x_data, self.y_data, batch_size=0,
                                 likelihood="fused" if fused else "pymc",
                                 n_components=s.n_components)
        with self.model:
            inference = pm.ADVI(random_seed=0) if s.method == "advi" else \
                pm.FullRankADVI(random_seed=0)
        group = inference.approx.groups[0]
        self.ordering = group.ordering
        self.ddim = group.ddim
        self.default_start = np.asarray(group.shared_params["mu"].get_value(), dtype=float)
        self.fullrank = s.method == "fullrank_advi"
        limit_xla_cpu_threads(s.threads)
        self._compile_readers()
        self._compile_jax()

    # --- PyMC side: start points and the map from the flat space to the model's variables ---
    def _compile_readers(self) -> None:
        self._to_variables = compile_flat_reader(self.model, self.ordering)

    def to_variables(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(VARIABLES, self._to_variables(np.atleast_2d(flat))))

    def flat_names(self) -> list[str]:
        return flat_names(self.ordering, self.ddim)

    # --- JAX side ---
    def _compile_jax(self) -> None:
        from pytensor.graph.replace import graph_replace

        from vimodes.jax_nuts import _jaxify

        jax = _jax()
        jnp = jax.numpy
        flat, x, y = pt.dvector("flat"), pt.dvector("x"), pt.dvector("y")
        replacements = {self.x_data: x, self.y_data: y}
        for value_var in self.model.value_vars:
            _, slc, shape, _ = self.ordering[value_var.name]
            replacements[value_var] = flat[slc].reshape(shape)
        prior, data = (graph_replace(term, replacements, strict=False)
                       for term in (self.model.varlogp, self.model.datalogp))
        # XLA's own form, differentiable to any order (the mechanism analysis takes second
        # derivatives); the loss's fused likelihood is the numba kernel inside XLA where it can
        # (first derivatives only; on the CPU ~2x faster for the same sum)
        terms = [prior, data]
        logp_terms = _jaxify([flat, x, y], terms)
        self.logp_terms = lambda z, xb, yb: tuple(logp_terms(z, xb, yb))
        kernel_terms = on_cpu_kernel(terms)
        loss_terms = (logp_terms if kernel_terms is terms  # nothing swapped: no second compile
                      else _jaxify([flat, x, y], kernel_terms))
        d = self.ddim
        tril = np.tril_indices(d)
        diag_positions = np.flatnonzero(tril[0] == tril[1])
        self.tril = tril
        scaling = self.scaling

        def cholesky(scale_params):
            if not self.fullrank:
                return None
            packed = scale_params.at[diag_positions].set(jax.nn.softplus(
                scale_params[diag_positions]))
            return jnp.zeros((d, d)).at[tril].set(packed)

        self._cholesky = jax.jit(cholesky)

        def loss(params, eps, xb, yb):
            mu, scale_params = params
            if self.fullrank:
                chol = cholesky(scale_params)
                z = mu + chol @ eps
                log_scale = jnp.log(jnp.diagonal(chol))
            else:
                sd = jax.nn.softplus(scale_params)
                z = mu + sd * eps
                log_scale = jnp.log(sd)
            log_q = jnp.sum(-0.5 * eps**2 - _LOG_SQRT_2PI - log_scale)
            prior_term, data_term = loss_terms(z, xb, yb)
            return (log_q - prior_term - scaling.data_scale * data_term) / scaling.normaliser

        self.loss = loss
        self.loss_and_grad = jax.value_and_grad(loss)
        self.update = _optimizer_update(self.settings.optimizer_name, self.settings.learning_rate)

        def full_logp(z, x_all, y_all):
            prior_term, data_term = self.logp_terms(z, x_all, y_all)
            return prior_term + data_term

        # one draw at a time inside one compiled call: a vmap over draws materialises
        # (draws x N) temporaries and was 2x slower at N = 100000
        self._full_logp_many = jax.jit(lambda flat, x_all, y_all: jax.lax.map(
            lambda z: full_logp(z, x_all, y_all), flat))
        # the models whose likelihood is the normal mixture's up to a term in sigma (the
        # NormalMixture models, the question's per-observation variants): the prior terms (with
        # Jacobians) from XLA, the likelihood of the full data from the fused SIMD loop, ~2.5x
        # (the question's graph ~8x) faster than XLA's (k-hat evaluates it at 1000 draws of 1e5
        # points per fit; benchmarks/README.md)
        no_data = jnp.zeros(0)
        self._prior_logp_many = (jax.jit(jax.vmap(
            lambda z: self.logp_terms(z, no_data, no_data)[0])) if self.spec.mixture_form
            else None)

    def initial_scale_params(self) -> np.ndarray:
        if self.fullrank:
            return np.eye(self.ddim)[self.tril]
        return np.zeros(self.ddim)

    def step(self, state: dict, eps, batch_index, x, y) -> tuple[dict, float]:
        """One optimiser step of one seed, with the noise and minibatch given (pure; tested
        against PyMC's compiled step). The batch is taken as the compiled loop takes it, from
        x and y interleaved (``block_inputs``)."""
        jnp = _jax().numpy
        data = ((jnp.stack([jnp.asarray(x), jnp.asarray(y)], axis=-1),) if self.batch_size
                else (x, y))
        return self.step_on_batch(state, eps, *self._batch(data, batch_index))

    def step_on_batch(self, state: dict, eps, xb, yb) -> tuple[dict, float]:
        value, grads = self.loss_and_grad(state["params"], eps, xb, yb)
        params, opt = self.update(state["params"], grads, state["opt"])
        return {"params": params, "opt": opt}, value

    def loop_data(self, datasets: list[Dataset]) -> tuple:
        """The chunk's data as the compiled loop reads them: full batch, (x, y) on the device;
        minibatch VI, nothing (the loop reads only the minibatches ``block_inputs`` gathers
        on the host)."""
        if self.batch_size:
            return ()
        jnp = _jax().numpy
        return (jnp.asarray(np.stack([d.x for d in datasets])),
                jnp.asarray(np.stack([d.y for d in datasets])))

    def _batch(self, data: tuple, index):
        if self.batch_size:
            rows = data[0][index]  # (batch, 2)
            return rows[:, 0], rows[:, 1]
        return data

    def initial_state(self, start: np.ndarray) -> dict:
        jnp = _jax().numpy
        params = (jnp.asarray(start, dtype=float), jnp.asarray(self.initial_scale_params()))
        return {"params": params, "opt": _optimizer_init(self.settings.optimizer_name, params)}

    # --- many seeds ---
    def _runner(self):
        """A jitted function running one block of TRACE_EVERY steps for all seeds, given the
        block's random numbers (built once per fitter: JAX retraces only for a new chunk
        size)."""
        if getattr(self, "_run", None) is not None:
            return self._run
        jax = _jax()
        jnp = jax.numpy
        lax = jax.lax
        tolerance = self.settings.convergence_tolerance

        def one_step(carry, data, eps, rows, iteration):
            # iteration: 0-based index of this step; the loss is PyMC's score before the update;
            # rows: this step's minibatch (batch, 2), gathered on the host (full batch: data)
            state, alive, failed_at, stopped_at, prev = carry
            batch = (rows[:, 0], rows[:, 1]) if self.batch_size else data
            new_state, value = self.step_on_batch(state, eps, *batch)
            finite = jnp.isfinite(value)
            fails = alive & ~finite
            failed_at = jnp.where(fails, iteration + 1, failed_at)
            keep = alive & finite
            state = jax.tree_util.tree_map(lambda new, old: jnp.where(keep, new, old),
                                           new_state, state)
            done = iteration + 1
            flat_params = jnp.concatenate([state["params"][0], state["params"][1]])
            prev = jnp.where(keep & (done == 1), flat_params, prev)
            if tolerance:
                check = keep & (done % CONVERGENCE_EVERY == 0) & (done >= CONVERGENCE_EVERY)
                delta = jnp.max((jnp.abs(flat_params - prev) + 1e-6) / (jnp.abs(prev) + 1e-6))
                converged = check & (delta < tolerance)
                stopped_at = jnp.where(converged, done, stopped_at)
                prev = jnp.where(check, flat_params, prev)
                keep = keep & ~converged
            loss_seen = jnp.where(alive, value, jnp.nan)  # the failing loss is recorded too
            return (state, keep, failed_at, stopped_at, prev), loss_seen

        all_seeds_step = jax.vmap(one_step, in_axes=(0, 0, 0, 0, None))

        @jax.jit
        def run(carry, data, noise, rows, first_iteration):
            # noise (TRACE_EVERY, seeds, d) and rows (TRACE_EVERY, seeds, batch, 2) step-major:
            # a scan over their leading axis reads each step's slice in place (a vmap over a
            # per-seed scan made XLA transpose the block's 20 MB of rows first); losses:
            # (TRACE_EVERY, seeds), NaN where a seed had stopped or failed; data: the
            # full-batch (x, y), or nothing (minibatch VI reads only its gathered rows)
            def body(c, step):
                i, eps, step_rows = step
                return all_seeds_step(c, data, eps, step_rows, first_iteration + i)

            carry, losses = lax.scan(body, carry, (jnp.arange(TRACE_EVERY), noise, rows))
            return carry, losses, carry[0]["params"][0]

        self._run = run
        return run

    def block_draws(self, streams: list[tuple[np.random.Generator, np.random.Generator]]
                    ) -> tuple[np.ndarray, np.ndarray]:
        """The random numbers of the next TRACE_EVERY steps of every seed, from the seed's own
        (noise, minibatch) pair of numpy streams: the standard-normal draws (TRACE_EVERY,
        seeds, d), step-major as the compiled loop reads them, and the minibatch indices (seeds,
        TRACE_EVERY, batch; batch 0 draws none), uniform with replacement as ``pm.Minibatch``
        draws them (numpy's ``integers``, by the faster ``draw_indices``). Two streams, so that
        a seed's noise is the same whatever its cell's batch size (common random numbers across
        cells). Drawn here, not in the compiled step: on the CPU, XLA runs JAX's threefry as a
        loop of small kernels, which made the random numbers cost more than the gradient
        (benchmarks/README.md); numpy draws the next blocks while the compiled loop runs the
        current one. ``block_inputs`` draws the same numbers a group of blocks at a time."""
        indices = np.empty((len(streams), TRACE_EVERY, self.batch_size), dtype=np.int32)
        self._draw_indices(streams, indices)
        return self._block_noise(streams), indices

    def _draw_indices(self, streams, out: np.ndarray) -> None:
        """Each seed's next minibatch indices into ``out[seed]`` (one block or a group of
        blocks: its stream's next draws, in block order)."""
        for seed, (_, index_rng) in enumerate(streams):
            draw_indices(index_rng, self.n_obs, out[seed])

    def _block_noise(self, streams) -> np.ndarray:
        noise = _aligned_empty((TRACE_EVERY, len(streams), self.ddim))
        for seed, (noise_rng, _) in enumerate(streams):
            noise[:, seed] = noise_rng.standard_normal((TRACE_EVERY, self.ddim))
        return noise

    def block_inputs(self, streams, datasets: list[Dataset], n_blocks: int,
                     finished: Callable[[int], None] = lambda block: None
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The noise and minibatches of the next ``n_blocks`` blocks, one block at a time:
        ``block_draws``'s indices turned into the points themselves, (TRACE_EVERY, seeds,
        batch, 2) (full batch: none, an empty array). Each block's draws are
        ``block_draws``'s, whatever the grouping below: a seed's numbers never depend on it.

        The points are gathered on the host, while the compiled loop runs the blocks before
        (XLA's gather from 100 data sets of 1e5 points was most of a step; benchmarks/README.md),
        from the chunk's x and y interleaved, (seeds * N, 2), a point's x and y in one cache
        line, a group of blocks at a time, seed by seed (``_gather_rows``). The minibatch
        arrays are two groups' worth, refilled in turn, and with the interleaved data kept for
        the next chunk of the same shapes (``_host_arrays``). ``finished(block)`` must return
        only once the compiled call that reads block ``block`` has run; it is called before
        that block's array is refilled, and the caller closes the generator only once every
        call it dispatched has run."""
        if not self.batch_size:
            no_rows = np.empty((TRACE_EVERY, len(streams), 0, 2))
            for _ in range(n_blocks):
                yield self._block_noise(streams), no_rows
            return
        block_size = len(streams) * TRACE_EVERY * self.batch_size
        per_group = max(1, min(GATHER_BLOCKS, GATHER_BYTES // (block_size * 16)))
        indices = np.empty((len(streams), min(per_group, n_blocks), TRACE_EVERY,
                            self.batch_size), dtype=np.int32)
        rows_shape = (TRACE_EVERY, len(streams), self.batch_size, 2)
        shapes = [(len(datasets), self.n_obs, 2)] + [rows_shape] * min(2 * per_group, n_blocks)
        with _host_arrays(shapes) as (table, *ring):
            for seed, data in enumerate(datasets):
                table[seed, :, 0], table[seed, :, 1] = data.x, data.y
            table = table.reshape(-1, 2)
            if not all(a.flags.c_contiguous and a.ctypes.data % 16 == 0 for a in (table, *ring)):
                raise AssertionError("_gather_rows's streaming stores need 16-byte alignment")
            for first in range(0, n_blocks, per_group):
                blocks = range(first, min(first + per_group, n_blocks))
                noise = [self._block_noise(streams) for _ in blocks]
                self._draw_indices(streams, indices[:, :len(blocks)])  # a seed's group at once
                for block in blocks:
                    if block >= len(ring):
                        finished(block - len(ring))  # the block that last read this array
                rows = tuple(ring[block % len(ring)] for block in blocks)
                _gather_rows(table, indices[:, :len(blocks)], self.n_obs, rows)
                yield from zip(noise, rows)

    def fit_many(self, datasets: list[Dataset], seed_base: int, seeds: list[int]) -> list[FitResult]:
        if len(seeds) == 1:
            # XLA compiles a batch of one differently (rounding differs in the last bit); a
            # duplicate keeps every fit bitwise equal to the same seed fitted in any chunk
            return self.fit_many([datasets[0]] * 2, seed_base, [seeds[0]] * 2)[:1]
        jax = _jax()
        jnp = jax.numpy
        s = self.settings
        started = time.perf_counter()
        rngs, starts, streams = [], [], []
        for data, seed in zip(datasets, seeds):
            if data.x.shape[0] != self.n_obs:
                raise ValueError(f"data of seed {seed} has {data.x.shape[0]} points, the fitter "
                                 f"was compiled for {self.n_obs}")
            rng = fit_rng(seed_base, seed)
            # PyMC reseeds its random variables from the fit's stream; here two child streams
            streams.append(tuple(np.random.default_rng(child) for child in
                                 np.random.SeedSequence(int(rng.integers(2**31))).spawn(2)))
            starts.append(vi_start(s, self.model, self.ordering, self.default_start, rng))
            rngs.append(rng)
        n = len(seeds)
        loop_args = self.loop_data(datasets)
        states = [self.initial_state(start) for start in starts]
        state = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *states)
        width = self.ddim * 2 if not self.fullrank else self.ddim + len(self.tril[0])
        carry = (state, jnp.ones(n, bool), jnp.zeros(n, int), jnp.zeros(n, int),
                 jnp.zeros((n, width)))
        if s.iterations % TRACE_EVERY or any(c <= 0 or c % TRACE_EVERY for c in s.checkpoints):
            raise ValueError(f"the vectorised engine runs whole blocks of {TRACE_EVERY} "
                             f"iterations; budget {s.iterations} and checkpoints "
                             f"{list(s.checkpoints)} must be positive multiples")
        run = self._runner()
        checkpoints = sorted({c for c in s.checkpoints if c < s.iterations} | {s.iterations})
        loss_blocks, mean_blocks, saved = [], [], {}
        done_blocks = 0
        inputs = self.block_inputs(streams, datasets, s.iterations // TRACE_EVERY,
                                   finished=lambda block: loss_blocks[block].block_until_ready())
        try:
            for checkpoint in checkpoints:
                while done_blocks < checkpoint // TRACE_EVERY:
                    # dispatched without waiting: the next blocks' numbers are drawn meanwhile
                    carry, losses, means = run(carry, loop_args, *next(inputs),
                                               done_blocks * TRACE_EVERY)
                    loss_blocks.append(losses)
                    mean_blocks.append(means)
                    done_blocks += 1
                saved[checkpoint] = jax.tree_util.tree_map(np.asarray, carry[0]["params"])
        finally:
            # the blocks run in order: once the last one has run, no call reads the minibatch
            # arrays, which the next chunk may then refill
            with contextlib.suppress(Exception):
                if loss_blocks:
                    loss_blocks[-1].block_until_ready()
            inputs.close()
        losses = np.stack([np.asarray(block) for block in loss_blocks])  # (blocks, T, seeds)
        means = np.stack([np.asarray(block) for block in mean_blocks])  # (blocks, seeds, d)
        loop_done = time.perf_counter()
        fit_seconds = (loop_done - started) / n
        losses = losses.transpose(2, 0, 1).reshape(n, -1)
        means = means.transpose(1, 0, 2)
        _, alive, failed_at, stopped_at, _ = (np.asarray(v) if i else v
                                              for i, v in enumerate(carry))
        final_params = jax.tree_util.tree_map(np.asarray, carry[0]["params"])
        results = []
        for i, (data, seed) in enumerate(zip(datasets, seeds)):
            if i and seeds[i] == seeds[0] and len(seeds) == 2:
                break  # the duplicate of a chunk of one
            try:
                result = self._result(
                    i, data, rngs[i], losses[i], means[i], int(failed_at[i]),
                    int(stopped_at[i]), (final_params[0][i], final_params[1][i]),
                    {c: (p[0][i], p[1][i]) for c, p in saved.items()}, starts[i], fit_seconds,
                    seed_base, seed)
            except NUMERICAL_ERRORS as err:
                # e.g. a full-rank covariance that is numerically not positive definite: this
                # seed's outcome, never the chunk's
                result = FitResult("failed", f"{type(err).__name__}: {err}",
                                   info={"fit_seconds": fit_seconds, "engine": "vectorised"})
            results.append(result)
        # where a chunk's time goes (read by the benchmarks): the compiled loop, then the
        # per-seed draws, diagnostics and records
        self.last_timings = {"loop_s": loop_done - started,
                             "post_s": time.perf_counter() - loop_done, "seeds": n}
        return results

    def fit(self, data: Dataset, seed_base: int, seed: int) -> FitResult:
        return self.fit_many([data], seed_base, [seed])[0]

    def moments(self, params) -> tuple[np.ndarray, np.ndarray]:
        mu, scale_params = (np.asarray(p, dtype=float) for p in params)
        if self.fullrank:
            chol = np.asarray(self._cholesky(scale_params))
            return mu, chol @ chol.T
        return mu, np.diag(np.logaddexp(0.0, scale_params) ** 2)

    def _result(self, i, data, rng, losses, means, failed_at, stopped_at, params, saved, start,
                fit_seconds, seed_base, seed) -> FitResult:
        s = self.settings
        done = failed_at or stopped_at or s.iterations
        blocks = done // TRACE_EVERY if not failed_at else (done - 1) // TRACE_EVERY
        info = {
            "iterations_done": done,
            "stopped_early": bool(stopped_at) and not failed_at,
            "final_loss": float(np.nanmean(losses[max(0, done - TRACE_EVERY):done])) if done
            else None,
            "loss_trace": _binned_mean(losses[:done], TRACE_EVERY) if done else np.array([]),
            "mean_trace": means[:blocks],
            "fit_seconds": fit_seconds,
            "flat_start": start,
            "flat_names": self.flat_names(),
            "engine": "vectorised",
        }
        if failed_at:
            value = losses[failed_at - 1]
            kind = "NaN" if np.isnan(value) else "infinite"
            # checkpoints before the failure are exactly the shorter runs, which finished
            before = {c: list(self.moments(p)) for c, p in saved.items() if c < failed_at}
            stored = {}
            if s.checkpoints and before:
                info.update(checkpoint_info(before))
                stored = checkpoint_draws(self.to_variables, before, s.draws, seed_base, seed)
            return FitResult("failed", f"NumericalFailure: {kind} loss at iteration {failed_at}",
                             info=info, checkpoint_draws=stored)
        mean, cov = self.moments(params)
        info.update(approx_mean=mean, approx_cov=cov)
        flat = rng.multivariate_normal(mean, cov, size=s.draws, method="cholesky")
        draws = {name: value[None, ...] for name, value in self.to_variables(flat).items()}
        if not all(np.all(np.isfinite(v)) for v in draws.values()):
            return FitResult("failed", "non-finite draws from the approximation", info=info)
        n_logp, with_khat = diagnostic_draws(s, seed)
        info.update(gaussian_importance_diagnostics(
            flat[:n_logp], mean, cov, lambda z: self.full_logp(z, data), with_khat, seed_base,
            seed))
        if len(info["mean_trace"]):
            info.update({f"{name}_trace": value for name, value in
                         self.to_variables(info["mean_trace"]).items()})
        stored = {}
        if s.checkpoints:
            # a seed that stopped early keeps its final state at every later checkpoint
            moments = {c: list(self.moments(p)) for c, p in saved.items()}
            info.update(checkpoint_info(moments))
            stored = checkpoint_draws(self.to_variables, moments, s.draws, seed_base, seed)
        return FitResult("ok", None, draws=draws, info=info, checkpoint_draws=stored)

    def full_logp(self, flat: np.ndarray, data: Dataset) -> np.ndarray:
        """log p(full data, z) with Jacobians for many draws z (one vectorised call per block)."""
        jnp = _jax().numpy
        if len(flat) == 0:
            return np.zeros(0)
        if self._prior_logp_many is not None:
            from vimodes.fastlik import mixture_loglike_many

            values = self.to_variables(flat)
            sigma = values["sigma"].reshape(len(flat))
            return (np.asarray(self._prior_logp_many(jnp.asarray(flat)))
                    + mixture_loglike_many(data.x, data.y, values["weights"], values["slopes"],
                                           sigma)
                    + mixture_form_offset(self.spec, len(data.x), sigma))
        x, y = jnp.asarray(data.x), jnp.asarray(data.y)
        return np.asarray(self._full_logp_many(jnp.asarray(flat), x, y))


# --- PyMC's optimisers as pure functions of (params, grads, state) ---

def _optimizer_init(name: str, params) -> dict:
    jnp = _jax().numpy
    if name == "adam":
        return {"t": jnp.zeros(()), "m": tuple(jnp.zeros_like(p) for p in params),
                "v": tuple(jnp.zeros_like(p) for p in params)}
    if name == "adagrad_window":
        n_win = ADAGRAD_WINDOW["n_win"]
        return {"i": jnp.zeros((), dtype=int),
                "accu": tuple(jnp.zeros((*p.shape, n_win)) for p in params)}
    raise ValueError(f"the vectorised engine implements adam and adagrad_window, not '{name}'")


def _optimizer_update(name: str, learning_rate: float):
    jnp = _jax().numpy

    def adam(params, grads, state):
        b1, b2, eps = ADAM["beta1"], ADAM["beta2"], ADAM["epsilon"]
        t = state["t"] + 1
        a_t = learning_rate * jnp.sqrt(1 - b2**t) / (1 - b1**t)
        m = tuple(b1 * m + (1 - b1) * g for m, g in zip(state["m"], grads))
        v = tuple(b2 * v + (1 - b2) * g**2 for v, g in zip(state["v"], grads))
        new = tuple(p - a_t * m_ / (jnp.sqrt(v_) + eps) for p, m_, v_ in zip(params, m, v))
        return new, {"t": t, "m": m, "v": v}

    def adagrad_window(params, grads, state):
        n_win, eps = ADAGRAD_WINDOW["n_win"], ADAGRAD_WINDOW["epsilon"]
        i = state["i"]
        accu = tuple(a.at[..., i].set(g**2) for a, g in zip(state["accu"], grads))
        new = tuple(p - learning_rate * g / jnp.sqrt(a.sum(axis=-1) + eps)
                    for p, g, a in zip(params, grads, accu))
        return new, {"i": jnp.where(i + 1 < n_win, i + 1, 0), "accu": accu}

    if name == "adam":
        return adam
    if name == "adagrad_window":
        return adagrad_window
    raise ValueError(f"the vectorised engine implements adam and adagrad_window, not '{name}'")
