"""NUTS with numpyro on JAX (``nuts.sampler: numpyro``): optional, for users with a GPU.

The PyMC model's joint log density (value variables in the unconstrained space, Jacobians
included, data as *arguments*) is compiled to one JAX function by PyTensor's JAX backend and
handed to numpyro's NUTS as a ``numpyro.factor``. The data are model arguments and the MCMC
object is built with ``jit_model_args=True``, so a chunk of seeds compiles the sampler once and
swaps data sets of the same size without recompiling -- the same contract as the nutpie path.

Several chains run vectorised on one device (``chain_method="vectorized"``), which is what a
single GPU does best. :meth:`NumpyroNuts.sample_many` goes further: every chain of every seed of
a chunk in one compiled call (numpyro's functional NUTS kernel, ``numpyro.infer.hmc.hmc``, with
MCMC's defaults: diagonal mass matrix and step size adapted over the warm-up, maximum tree
depth 10), each seed with its own data set and random key. Draws are mapped back to the
model's variables (weights on the simplex, ordered slopes, positive sigma) by PyTensor, exactly
as for the other methods.

jax and numpyro are imported only here, so the rest of the pipeline never pays for them.
"""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt

from vimodes.model_specs import VARIABLES

EXTRA_FIELDS = ("diverging", "num_steps", "adapt_state.step_size")


def _jaxify(inputs, outputs):
    """A PyTensor graph as a plain JAX function (rewritten for the JAX backend first)."""
    from pytensor.compile.mode import JAX
    from pytensor.graph.fg import FunctionGraph
    from pytensor.link.jax.dispatch import jax_funcify

    fgraph = FunctionGraph(inputs=inputs, outputs=outputs, clone=True)
    JAX.optimizer.rewrite(fgraph)
    return jax_funcify(fgraph)


class NumpyroNuts:
    """numpyro NUTS for a PyMC model whose data live in the shared variables ``x_data``,
    ``y_data`` (replaced by function arguments here)."""

    def __init__(self, model, x_data, y_data, *, draws: int, tune: int, chains: int,
                 target_accept: float):
        import jax
        import numpyro
        import numpyro.distributions as dist
        from numpyro.infer import MCMC, NUTS
        from pytensor.graph.replace import graph_replace

        from vimodes.fastlik import register_jax_dispatch

        register_jax_dispatch()  # the fused likelihood Op, if the model holds it; enables x64
        self._jax = jax
        self.model = model
        self.value_vars = list(model.value_vars)
        self.names = [v.name for v in self.value_vars]
        self.initial_point = model.initial_point()
        self.shapes = {name: self.initial_point[name].shape for name in self.names}
        x, y = pt.dvector("x"), pt.dvector("y")
        logp = graph_replace(model.logp(jacobian=True), {x_data: x, y_data: y})
        logp_fn = _jaxify([*self.value_vars, x, y], [logp])
        names, shapes = self.names, self.shapes
        self._logp_fn = logp_fn
        self.tune, self.draws, self.target_accept = tune, draws, target_accept
        self._many = None

        def numpyro_model(x_obs, y_obs):
            values = [numpyro.sample(name, dist.ImproperUniform(
                dist.constraints.real, (), event_shape=shapes[name])) for name in names]
            numpyro.factor("model_logp", logp_fn(*values, x_obs, y_obs)[0])

        self.chains = chains
        self.mcmc = MCMC(NUTS(numpyro_model, target_accept_prob=target_accept),
                         num_warmup=tune, num_samples=draws, num_chains=chains,
                         chain_method="vectorized" if chains > 1 else "sequential",
                         progress_bar=False, jit_model_args=True)
        self._to_variables = self._compile_to_variables()

    def _compile_to_variables(self):
        """(draws, *shape) arrays of value variables -> the model's variables, by PyTensor."""
        inputs, outputs = {}, []
        for name in self.names:
            inputs[name] = pt.tensor(name, shape=(None, *self.shapes[name]), dtype="float64")
        for var_name in VARIABLES:
            rv = self.model[var_name]
            value = inputs[self.model.rvs_to_values[rv].name]
            transform = self.model.rvs_to_transforms.get(rv)
            outputs.append(transform.backward(value, *rv.owner.inputs) if transform else value)
        fn = pytensor.function(list(inputs.values()), outputs)
        return lambda samples: dict(zip(VARIABLES, fn(*(samples[n] for n in self.names))))

    def initial_values(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """PyMC's initial point plus U(-1, 1) jitter per chain (as PyMC's jitter+adapt_diag)."""
        # numpyro wants a leading chain axis only when it runs several chains
        lead = (self.chains,) if self.chains > 1 else ()
        return {name: self.initial_point[name] + rng.uniform(-1, 1, (*lead, *self.shapes[name]))
                for name in self.names}

    def sample(self, x: np.ndarray, y: np.ndarray, seed: int) -> tuple[dict, dict]:
        """Draws (chains, draws, *shape) of the model's variables and sampler statistics."""
        rng = np.random.default_rng(seed)
        init = self.initial_values(rng)
        self.mcmc.run(self._jax.random.PRNGKey(seed), x, y, init_params=init,
                      extra_fields=EXTRA_FIELDS)
        samples = {k: np.asarray(v) for k, v in self.mcmc.get_samples(group_by_chain=True).items()}
        chains, draws = samples[self.names[0]].shape[:2]
        flat = {k: v.reshape(chains * draws, *v.shape[2:]) for k, v in samples.items()}
        variables = {k: v.reshape(chains, draws, *v.shape[1:])
                     for k, v in self._to_variables(flat).items()}
        extra = self.mcmc.get_extra_fields(group_by_chain=True)
        stats = {"diverging": np.asarray(extra["diverging"]),
                 "n_steps": np.asarray(extra["num_steps"]),
                 "step_size": np.asarray(extra["adapt_state.step_size"])}
        return variables, stats

    # --- many seeds at once ---
    def _many_sampler(self):
        """One jitted function: (inits, xs, ys, keys) with leading (seeds, chains) axes on inits
        and keys and a seeds axis on the data -> (z, diverging, num_steps, step_size) of the
        kept draws, each (seeds, chains, draws, ...)."""
        if self._many is not None:
            return self._many
        jax = self._jax
        from numpyro.infer.hmc import hmc

        logp_fn, names = self._logp_fn, self.names
        tune, draws = self.tune, self.draws

        def potential_for(x, y):
            return lambda z: -logp_fn(*(z[name] for name in names), x, y)[0]

        init_kernel, sample_kernel = hmc(potential_fn_gen=potential_for, algo="NUTS")

        def one_chain(init, x, y, key):
            state = init_kernel(init, tune, target_accept_prob=self.target_accept,
                                model_args=(x, y), rng_key=key)

            def step(current, _):
                current = sample_kernel(current, model_args=(x, y))
                return current, (current.z, current.diverging, current.num_steps,
                                 current.adapt_state.step_size)

            _, kept = jax.lax.scan(step, state, None, length=tune + draws)
            return jax.tree_util.tree_map(lambda a: a[tune:], kept)

        # the chains of a seed share its data set; each seed has its own
        per_seed = jax.vmap(one_chain, in_axes=(0, None, None, 0))
        self._many = jax.jit(jax.vmap(per_seed))
        return self._many

    def sample_many(self, xs: list[np.ndarray], ys: list[np.ndarray],
                    seeds: list[int]) -> list[tuple[dict, dict]]:
        """``sample`` for many data sets at once: every chain of every seed in one compiled
        call. Seed ``s`` starts its chains from ``default_rng(s)`` and samples with the keys
        ``MCMC.run(PRNGKey(s))`` would use, as ``sample`` does; its draws do not depend on the
        other seeds of the call (tested), but need not equal ``sample``'s bit for bit: XLA
        compiles the batched kernel differently, and NUTS amplifies a last-bit difference."""
        jax = self._jax
        jnp = jax.numpy
        inits = {name: [] for name in self.names}
        keys = []
        for seed in seeds:
            values = self.initial_values(np.random.default_rng(seed))
            for name in self.names:  # a chain axis also for one chain
                inits[name].append(values[name].reshape(self.chains, *self.shapes[name]))
            # the keys MCMC.run hands its kernels: one per chain (when several), split again
            # by HMC.init, which keeps the first half
            key = jax.random.PRNGKey(seed)
            chain_keys = jax.random.split(key, self.chains) if self.chains > 1 else key[None]
            keys.append(jax.vmap(jax.random.split)(chain_keys)[:, 0])
        z, diverging, n_steps, step_size = self._many_sampler()(
            {name: jnp.asarray(np.stack(v)) for name, v in inits.items()},
            jnp.asarray(np.stack(xs)), jnp.asarray(np.stack(ys)), jnp.stack(keys))
        z = {name: np.asarray(v) for name, v in z.items()}
        out = []
        for i in range(len(seeds)):
            samples = {name: v[i] for name, v in z.items()}  # (chains, draws, *shape)
            chains, draws = samples[self.names[0]].shape[:2]
            flat = {k: v.reshape(chains * draws, *v.shape[2:]) for k, v in samples.items()}
            variables = {k: v.reshape(chains, draws, *v.shape[1:])
                         for k, v in self._to_variables(flat).items()}
            stats = {"diverging": np.asarray(diverging[i]), "n_steps": np.asarray(n_steps[i]),
                     "step_size": np.asarray(step_size[i])}
            out.append((variables, stats))
        return out
