"""Benchmark one logp + gradient evaluation of the mixture-of-regressions likelihood.

Compares, at N = 100000 (K = 2):

  (a) pm.NormalMixture, PyTensor C backend, logp and dlogp compiled separately (as PyMC
      does), and as one joint function;
  (b) pm.NormalMixture, PyTensor numba backend, separate and joint (nutpie compiles the
      joint logp+dlogp function with the numba backend);
  (c) the fused Op (vimodes.fastlik) under mode="NUMBA" (joint and separate), under the
      default C/Python mode, and the raw numba kernel;
  (d) optionally, nutpie: 1 chain, 1000 tune + 1000 draws, NormalMixture model vs fused
      model, wall time (compile included) and sampling time.

Usage::

    PYTENSOR_FLAGS=base_compiledir=/tmp/pytensor-bench \
        .venv/bin/python benchmarks/bench_likelihood.py [--n 100000] [--no-nutpie]

Runtime on a 2-core machine: roughly 2-4 minutes with the nutpie arm (most of it the
NormalMixture nutpie run and compiles), well under a minute without it.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np


def simulate(n, slopes=(3.0, -1.0), sigma=0.1, weights=(0.5, 0.5), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    z = rng.choice(len(slopes), size=n, p=np.asarray(weights))
    y = x * np.asarray(slopes)[z] + sigma * rng.normal(size=n)
    return x, y


def build_model(x, y, fused, k=2):
    from vimodes.fastlik import comparison_model

    return comparison_model(x, y, fused, n_components=k)


def time_call(fn, min_time=1.0, min_reps=10, max_reps=2000):
    fn()  # warm up
    times = []
    t_start = time.perf_counter()
    while len(times) < max_reps and (
        len(times) < min_reps or time.perf_counter() - t_start < min_time
    ):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times = np.asarray(times)
    return float(np.median(times)), float(times.min()), len(times)


def compile_variants(model, mode, point):
    """Return (separate_fn, joint_fn, compile_seconds) for logp+dlogp."""
    import pytensor

    t0 = time.perf_counter()
    kw = {} if mode is None else {"mode": mode}
    f_logp = model.compile_logp(**kw)
    f_dlogp = model.compile_dlogp(**kw)
    f_logp(point)
    f_dlogp(point)
    t_sep = time.perf_counter() - t0

    t0 = time.perf_counter()
    logp = model.logp()
    grads = pytensor.grad(logp, model.value_vars)
    f_joint = pytensor.function(model.value_vars, [logp, *grads], **kw)
    args = [point[v.name] for v in model.value_vars]
    f_joint(*args)
    t_joint = time.perf_counter() - t0

    def separate():
        return f_logp(point), f_dlogp(point)

    def joint():
        return f_joint(*args)

    return separate, joint, t_sep, t_joint, (f_logp, f_dlogp, f_joint)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--no-nutpie", action="store_true", help="skip the nutpie arm (d)")
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    args = ap.parse_args()

    warnings.filterwarnings("ignore")
    t_script = time.perf_counter()
    t0 = time.perf_counter()
    import pymc as pm  # noqa: F401
    import pytensor

    from vimodes.fastlik import fused_loglike_and_grad

    t_import = time.perf_counter() - t0

    x, y = simulate(args.n)
    m_ref = build_model(x, y, fused=False)
    m_fused = build_model(x, y, fused=True)
    # An unconstrained point near the truth (timing barely depends on it).
    point = {
        "w_simplex__": np.array([0.05]),
        "slopes": np.array([2.9, -1.05]),
        "sigma_log__": np.array(np.log(0.12)),
    }

    rows = []  # (label, median_ms, min_ms, reps, compile_s)

    def add(label, fn, compile_s):
        med, mn, reps = time_call(fn)
        rows.append((label, med * 1e3, mn * 1e3, reps, compile_s))
        print(f"  done: {label}: {med * 1e3:.3f} ms", flush=True)

    checks = {}
    for label_model, model in [("NormalMixture", m_ref), ("fused Op", m_fused)]:
        for mode, label_mode in [(None, "C"), ("NUMBA", "numba")]:
            sep, joint, t_sep, t_joint, fns = compile_variants(model, mode, point)
            tag = "c" if label_model == "fused Op" else ("a" if label_mode == "C" else "b")
            add(f"({tag}) {label_model}, {label_mode}, logp+dlogp separate", sep, t_sep)
            add(f"({tag}) {label_model}, {label_mode}, joint logp+dlogp fn", joint, t_joint)
            checks[(label_model, label_mode)] = joint()

    w = np.array([0.5 + 0.5 * np.tanh(0.05 / 2), 0.5 - 0.5 * np.tanh(0.05 / 2)])
    add("(c) raw numba kernel fused_loglike_and_grad", lambda: fused_loglike_and_grad(x, y, w, [2.9, -1.05], 0.12), 0.0)

    # Sanity: all variants agree.
    ref = checks[("NormalMixture", "C")]
    for key, val in checks.items():
        rel = abs(float(val[0]) - float(ref[0])) / abs(float(ref[0]))
        grel = max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.maximum(np.abs(np.asarray(b)), 1e-300)))
            for a, b in zip(val[1:], ref[1:])
        )
        print(f"  check {key}: rel. diff logp {rel:.1e}, max rel. diff grad {grel:.1e}")

    nutpie_rows = []
    if not args.no_nutpie:
        import nutpie

        for label, model in [("NormalMixture", m_ref), ("fused Op", m_fused)]:
            t0 = time.perf_counter()
            compiled = nutpie.compile_pymc_model(model)
            t_compile = time.perf_counter() - t0
            t0 = time.perf_counter()
            idata = nutpie.sample(
                compiled, chains=1, cores=1, tune=args.tune, draws=args.draws, seed=1,
                progress_bar=False,
            )
            t_sample = time.perf_counter() - t0
            slopes_mean = idata.posterior["slopes"].mean(("chain", "draw")).values
            # leapfrog steps = gradient evaluations, warm-up included
            n_grad = sum(
                int(idata[g]["n_steps"].sum())
                for g in ("warmup_sample_stats", "sample_stats")
                if g in idata.groups() and "n_steps" in idata[g]
            )
            nutpie_rows.append((label, t_compile, t_sample, slopes_mean, n_grad))
            print(f"  done: nutpie {label}: compile {t_compile:.1f} s, sample {t_sample:.1f} s", flush=True)

    print()
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs visible; pytensor {pytensor.__version__}; N = {args.n}, K = 2")
    print(f"import pymc/pytensor: {t_import:.1f} s")
    print()
    print(f"{'variant':<58} {'median ms':>10} {'min ms':>9} {'reps':>6} {'compile s':>10}")
    print("-" * 97)
    for label, med, mn, reps, comp in rows:
        print(f"{label:<58} {med:>10.3f} {mn:>9.3f} {reps:>6d} {comp:>10.1f}")
    if nutpie_rows:
        print()
        print(f"nutpie, 1 chain, {args.tune} tune + {args.draws} draws:")
        print(f"{'model':<16} {'compile s':>10} {'sample s':>9} {'total s':>8} {'leapfrogs':>10} {'ms/leapfrog':>12}  slopes mean")
        for label, tc, ts, sm, ng in nutpie_rows:
            print(f"{label:<16} {tc:>10.1f} {ts:>9.1f} {tc + ts:>8.1f} {ng:>10d} {1e3 * ts / max(ng, 1):>12.2f}  {np.round(sm, 3)}")
    print(f"\ntotal script wall time: {time.perf_counter() - t_script:.1f} s")


if __name__ == "__main__":
    main()
