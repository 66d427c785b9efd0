"""Performance benchmarks (`make bench`): prints one table, every row measured in this run on
this machine, so the ratios compare like with like. Not part of the tests.

Rows:
  VI (question's setting: marginal model, meanfield ADVI, 10000 iterations, batch 128):
    naive      one fresh process per fit (import + compile + fit + write), the cost of a
               one-job-per-fit pipeline;
    chunked    the pipeline's path: one process fits a chunk of seeds, compiling once;
    floor      the same number of calls of the compiled step function alone.
  Vectorised VI engine, per chunk size: the compiled loop, draws + records, writing, and the
  CPU seconds of all the process's threads; its ratio to the chunked PyMC path by wall time of
  one process and per CPU-second (the second is what a study keeping every core busy gets).
  The 20x target is read per CPU-second from two measurements of each engine in the order
  PyMC, vectorised, vectorised, PyMC (A B B A), so that the VM speeding up or slowing down
  during the run weighs on both engines alike.
  NUTS (marginal model, one chain, 1000 tune + 1000 draws, N = 100000):
    pymc       PyMC's own sampler with pm.NormalMixture;
    pipeline   nutpie with the fused likelihood (the default);
    floor      gradient evaluations x time of one fused logp+gradient evaluation;
    numpyro    the optional JAX backend (when numpyro is installed), first data set including
               JIT compilation and a second one reusing the compiled sampler;
    numpyro vectorised  every chain of every seed (--nuts-vectorised SEEDSxCHAINS) in one
               compiled call, warm, against nutpie fitting the same seeds one after another.
  Scaling: NUTS seconds versus N; a whole one-cell `snakemake --cores 2` study versus its
  number of seeds (fixed cost and cost per seed).
VI rows use the default study's settings (chunk size, k-hat draws, convergence callback).
Usage: python benchmarks/run_benchmarks.py [--quick] [--chunk 50] [--scaling-seeds 4,16,64]
       [--vectorised-only] [--no-pymc-reference] [--vectorised-chunks 1,10,100,1000]
       [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402

from vimodes.runtime import configure_compile_cache  # noqa: E402

SEED_BASE = 20180913
QUESTION_MODEL = "as_asked_fix_all"  # the question's per-observation likelihood, every fix


def default_study_config() -> dict:
    """The default study's config (config/config.yaml), validated, defaults filled in."""
    from vimodes.config import load_study

    return load_study(REPO / "config" / "config.yaml").config


def _study(n_obs: int, seeds: int | list[int], method: str = "advi", chains: int = 1,
           sampler="nutpie", likelihood="fused"):
    """One cell with the default study's VI settings (k-hat draws, convergence callback)."""
    from vimodes.config import build_study

    return build_study({
        "study_name": "bench", "seed_base": SEED_BASE,
        "chunk_size": seeds if isinstance(seeds, int) else len(seeds),
        "data_regimes": {"default": {"n_obs": n_obs}},
        "nuts": {"sampler": sampler, "likelihood": likelihood},
        # k-hat (1000 draws, first vi.khat_seeds seeds only in the study) is timed on its own
        # row: per-fit rows without it compare like with like whatever the chunk size
        "vi": {**default_study_config()["vi"], "khat_seeds": 0},
        "grids": [{"name": "bench", "models": ["marginal"], "methods": [method],
                   "chains": [chains], "seeds": seeds}],
    })


def _write_data(study, folder: Path) -> list[str]:
    from vimodes.simulate import simulate_dataset

    paths = []
    for regime, seed in study.datasets():
        path = folder / f"seed-{seed}.nc"
        simulate_dataset(study, regime, seed, path)
        paths.append(str(path))
    return paths


CHILD = """
import sys, time, json
t0 = time.perf_counter()
sys.path.insert(0, {src!r})
from vimodes.runtime import configure_compile_cache
configure_compile_cache()
from vimodes.config import build_study
from vimodes.pipeline import fit_chunk
study = build_study(json.loads({config!r}))
cell = study.cells[0].cell_id
fit_chunk(study, cell, {chunk}, {paths!r}, {out!r})
print(json.dumps({{"seconds": time.perf_counter() - t0}}))
"""


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_chunk_process(study, chunk: int, paths: list[str], out: Path) -> tuple[float, float]:
    """Wall time and CPU seconds (all threads) of a fresh Python process that fits one chunk,
    as a Snakemake job would."""
    code = CHILD.format(src=str(REPO / "src"), config=json.dumps(study.config), chunk=chunk,
                        paths=paths, out=str(out))
    started, cpu_started = time.perf_counter(), _children_cpu_s()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - started, _children_cpu_s() - cpu_started


def bench_vi(chunk: int, folder: Path) -> dict:
    from vimodes.fitting import FitSettings, VIFitter

    study = _study(100_000, chunk)
    paths = _write_data(study, folder)
    # warm the compile cache once, so that every path below measures warm-cache costs
    run_chunk_process(_study(100_000, 1), 0, paths[:1], folder / "warm")
    naive = [run_chunk_process(_study(100_000, [i]), 0, [p], folder / f"naive-{i}")[0]
             for i, p in enumerate(paths[:3])]
    chunked, chunked_cpu = run_chunk_process(study, 0, paths, folder / "chunked")

    settings = FitSettings.from_cell(study.cells[0], study.config)
    fitter = VIFitter(settings, 100_000)
    from vimodes.simulate import read_dataset

    fitter.set_data(read_dataset(paths[0]))
    started = time.perf_counter()
    for _ in range(settings.iterations):
        fitter.step()
    floor = time.perf_counter() - started
    return {"naive_s_per_fit": float(np.median(naive)), "chunked_s_per_fit": chunked / chunk,
            "chunked_cpu_s_per_fit": chunked_cpu / chunk,
            "floor_s_per_fit": floor, "chunk_size": chunk, "study": study, "data_paths": paths}


def bracketed_ratio(reference_cpu: list[float], engine_cpu: list[float]) -> float:
    """The per-CPU-second ratio of two engines each measured twice, A B B A: the ratio of the
    means, so that a drift of the machine's speed during the run weighs on both alike."""
    if len(reference_cpu) != 2 or len(engine_cpu) != 2:
        raise ValueError(f"A B B A needs two measurements of each engine, got "
                         f"{len(reference_cpu)} and {len(engine_cpu)}")
    return float(np.mean(reference_cpu) / np.mean(engine_cpu))


def bracketed_target_rows(folder: Path, vi: dict, first: dict) -> list[tuple[str, str]]:
    """The 20x target's reading: the vectorised chunk of 100 measured again, then the chunked
    PyMC path again (its first measurement opened the run, the vectorised one's first came
    with the chunk-size rows)."""
    second = bench_vectorised([100], folder)[0]
    _, pymc_cpu = run_chunk_process(vi["study"], 0, vi["data_paths"], folder / "chunked-again")
    pymc = [vi["chunked_cpu_s_per_fit"], pymc_cpu / vi["chunk_size"]]
    vectorised = [first["cpu_s_per_fit"], second["cpu_s_per_fit"]]
    return [("VI chunked PyMC path, CPU per fit: first / second measurement",
             f"{pymc[0]:.3f} / {pymc[1]:.3f} CPU-s/fit"),
            ("vectorised, chunk 100, CPU per fit (all rows): first / second measurement",
             f"{vectorised[0]:.4f} / {vectorised[1]:.4f} CPU-s/fit"),
            target_row("VI ratio PyMC chunked / vectorised per CPU-second, chunk 100, means of "
                       "two measurements each (A B B A)", bracketed_ratio(pymc, vectorised),
                       ">=", 20)]


def bench_vectorised(chunk_sizes, folder: Path, iterations: int = 10000,
                     model: str = "marginal") -> list[dict]:
    """The vectorised engine in one process, per chunk size: the compiled loop (JIT compile
    excluded: a warm-up chunk of the same size runs first), then the per-seed draws, k-hat and
    records, then writing the fit files -- separate rows, so that what dominates shows."""
    from vimodes.fitting import FitSettings
    from vimodes.idata import write_posterior
    from vimodes.records import EncodedRecord, write_json
    from vimodes.simulate import DataRegime, simulate
    from vimodes.vectorised import VectorisedVIFitter

    regime = DataRegime.from_config({"n_obs": 100_000, "slopes": [3.0, -1.0],
                                     "weights": [0.5, 0.5], "noise_sd": 0.1,
                                     "x_low": -1.0, "x_high": 1.0})
    vi = default_study_config()["vi"]
    settings = FitSettings(model=model, method="advi", optimizer_name="adagrad_window",
                           learning_rate=0.001, iterations=iterations, init_kind="default",
                           batch_size=128, convergence_tolerance=vi["convergence_tolerance"],
                           khat_draws=vi["khat_draws"], khat_seeds=0,
                           elbo_draws=vi["elbo_draws"], draws=1000, engine="vectorised")
    fitter = VectorisedVIFitter(settings, regime.n_obs)
    base = simulate(regime, 0, SEED_BASE)
    out = []
    for size in chunk_sizes:
        # a data set per seed, as in a study: the minibatch gather's cost depends on how much
        # memory the chunk's data take (one data set repeated stays in the CPU's caches)
        datasets = [simulate(regime, seed, SEED_BASE) for seed in range(size)]
        warm = fitter.fit_many(datasets, SEED_BASE, list(range(size)))  # JIT compile
        # the first file written imports and sets up netCDF4/HDF5: kept out of the timed rows
        write_posterior(folder / "vec-warm.nc", warm[0], {"seed": 0, **warm[0].info})
        # CPU seconds of every thread of this process: the loop's host thread draws and
        # gathers the next block's minibatches while XLA runs the current one
        cpu_started = time.process_time()
        results = fitter.fit_many(datasets, SEED_BASE, list(range(size)))
        fit_cpu = time.process_time() - cpu_started
        timing = dict(fitter.last_timings)
        # every fit's files, as a chunk job writes them: a sample of 20 files is at the mercy
        # of one full garbage collection of the process's ~560 000 objects (~0.3 s, i.e. 15 ms
        # per file of 20, measured) landing among them or not
        started, cpu_started = time.perf_counter(), time.process_time()
        for seed, result in enumerate(results):
            record = {"seed": seed, **result.info}
            encoded = EncodedRecord(record)  # as fit_chunk: the record encoded once
            write_posterior(folder / f"vec-{seed}.nc", result, record, encoded=encoded)
            write_json(encoded, folder / f"vec-{seed}.json")
        timing["write_s_per_fit"] = (time.perf_counter() - started) / size
        timing["cpu_s_per_fit"] = (fit_cpu / size + (time.process_time() - cpu_started) / size)
        out.append(timing)
    # what one fit's k-hat costs (the study computes it for the first vi.khat_seeds seeds):
    # the full-data log density at khat_draws draws, then k-hat with its bootstrap MCSE
    from vimodes.metrics import gaussian_logq, psis_khat_mcse

    mean, cov = results[0].info["approx_mean"], results[0].info["approx_cov"]
    flat = np.random.default_rng(0).multivariate_normal(mean, cov, size=vi["khat_draws"])
    started = time.perf_counter()
    log_p = fitter.full_logp(flat, base)
    logp_s = time.perf_counter() - started
    psis_khat_mcse(log_p, gaussian_logq(flat, mean, cov), rng=0)
    out.append({"khat_logp_s": logp_s, "khat_total_s": time.perf_counter() - started,
                "khat_draws": vi["khat_draws"]})
    return out


def bench_study_scaling(seed_counts, folder: Path, cores: int = 2) -> list[tuple[int, float]]:
    """Wall time of a whole `snakemake --cores 2` study run (simulate, fit, classify, aggregate,
    figures, report) of one main cell -- marginal model, meanfield ADVI, adam 1e-2, jittered
    start, N = 100000, the default study's chunk size -- against its number of seeds."""
    import shutil

    import yaml

    default = default_study_config()
    times = []
    for n_seeds in seed_counts:
        work = folder / f"study-{n_seeds}"
        work.mkdir(parents=True)
        shutil.copy(REPO / "Snakefile", work / "Snakefile")
        for sub in ("workflow", "config"):
            shutil.copytree(REPO / sub, work / sub, ignore=shutil.ignore_patterns("__pycache__"))
        config = {key: default[key] for key in (
            "seed_base", "draws", "chunk_size", "nuts_chunk_size", "data_regimes", "optimizers",
            "inits", "vi", "classifier")}
        config["study_name"] = f"scaling-{n_seeds}"
        config["grids"] = [{"name": "scaling", "models": ["marginal"], "methods": ["advi"],
                            "optimizers": ["adam_1e-2"], "inits": ["jitter"], "seeds": n_seeds}]
        (work / "config" / "scaling.yaml").write_text(yaml.safe_dump(config))
        started = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "snakemake"), "--cores", str(cores),
                        "--configfile", "config/scaling.yaml", "--quiet"], cwd=work, check=True,
                       capture_output=True)
        times.append((n_seeds, time.perf_counter() - started))
    return times


def bench_nuts(n_obs: int, folder: Path, samplers=("pymc", "pipeline")) -> dict:
    from vimodes.fitting import FitSettings, NutsFitter
    from vimodes.simulate import read_dataset

    study = _study(n_obs, 1, method="nuts")
    data = read_dataset(_write_data(study, folder / f"nuts-{n_obs}")[0])
    out = {}
    for name in samplers:
        sampler, likelihood = {"pymc": ("pymc", "pymc"), "pipeline": ("nutpie", "fused"),
                               "numpyro": ("numpyro", "fused")}[name]
        settings = FitSettings(model="marginal", method="nuts", chains=1, draws=1000, tune=1000,
                               sampler=sampler, likelihood=likelihood)
        started = time.perf_counter()
        fitter = NutsFitter(settings, n_obs)
        result = fitter.fit(data, SEED_BASE, 0)
        out[f"{name}_s"] = time.perf_counter() - started
        out[f"{name}_status"] = result.status
        if name == "numpyro":  # a second data set: what a chunk pays once JAX has compiled
            started = time.perf_counter()
            again = fitter.fit(data, SEED_BASE, 1)
            out["numpyro_warm_s"] = time.perf_counter() - started
            out["numpyro_warm_status"] = again.status
        if name == "pipeline":
            out["gradient_evaluations_draws"] = result.info["gradient_evaluations"]
    return out


def bench_nuts_vectorised(n_obs: int, n_seeds: int, chains: int, folder: Path) -> dict:
    """Every chain of every seed in one compiled numpyro call (``NutsFitter.fit_many``), warm
    (second call), against nutpie fitting the same seeds one after another (compiled once)."""
    import os

    from vimodes.fitting import FitSettings, NutsFitter
    from vimodes.simulate import read_dataset

    study = _study(n_obs, n_seeds, method="nuts", chains=chains)
    datasets = [read_dataset(p) for p in _write_data(study, folder / f"nuts-many-{n_obs}")]
    seeds = [d.seed for d in datasets]
    out = {"chains": n_seeds * chains}
    for sampler in ("numpyro", "nutpie"):
        settings = FitSettings(model="marginal", method="nuts", chains=chains, draws=1000,
                               tune=1000, sampler=sampler, likelihood="fused",
                               threads=os.cpu_count() or 1)
        fitter = NutsFitter(settings, n_obs)
        started = time.perf_counter()
        if sampler == "numpyro":
            fitter.fit_many(datasets, SEED_BASE, seeds)  # compiles
            out["numpyro_first_s"] = time.perf_counter() - started
            started = time.perf_counter()
            results = fitter.fit_many(datasets, SEED_BASE, seeds)
        else:
            results = [fitter.fit(d, SEED_BASE, seed) for d, seed in zip(datasets, seeds)]
        out[f"{sampler}_s"] = time.perf_counter() - started
        out[f"{sampler}_status"] = ",".join(sorted({r.status for r in results}))
    return out


def nuts_vectorised_rows(args, folder: Path) -> list[tuple[str, str]]:
    if not args.nuts_vectorised or importlib.util.find_spec("numpyro") is None:
        return []
    n_seeds, chains = (int(n) for n in args.nuts_vectorised.split("x"))
    many = bench_nuts_vectorised(100_000, n_seeds, chains, folder / "nuts-many")
    per_chain = {name: many[f"{name}_s"] / many["chains"] for name in ("numpyro", "nutpie")}
    what = f"{n_seeds} seeds x {chains} chains, 1000 + 1000, N=1e5"
    return [(f"NUTS numpyro, {what}, one compiled call (first call incl. compile)",
             f"{many['numpyro_first_s']:.1f} s"),
            (f"NUTS numpyro, {what}, one call, warm",
             f"{many['numpyro_s']:.1f} s = {per_chain['numpyro']:.1f} s/chain "
             f"({many['numpyro_status']})"),
            (f"NUTS nutpie + fused, {what}, seed after seed",
             f"{many['nutpie_s']:.1f} s = {per_chain['nutpie']:.1f} s/chain "
             f"({many['nutpie_status']})"),
            ("NUTS ratio numpyro vectorised / nutpie, per chain",
             f"{per_chain['numpyro'] / per_chain['nutpie']:.2f}")]


def bench_gradient(n_obs: int = 100_000, repeats: int = 200) -> float:
    import pytensor
    import pytensor.tensor as pt

    from vimodes.fastlik import mixture_regression_loglike
    from vimodes.simulate import DataRegime, simulate

    data = simulate(DataRegime(n_obs=n_obs), 0, SEED_BASE)
    w, s, sg = pt.vector("w"), pt.vector("s"), pt.scalar("sg")
    logp = mixture_regression_loglike(pt.as_tensor(data.x), pt.as_tensor(data.y), w, s, sg)
    fn = pytensor.function([w, s, sg], [logp, *pytensor.grad(logp, [w, s, sg])], mode="NUMBA")
    args = (np.array([0.5, 0.5]), np.array([3.0, -1.0]), np.array(0.1))
    fn(*args)
    started = time.perf_counter()
    for _ in range(repeats):
        fn(*args)
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk", type=int, default=None,
                        help="seeds per VI chunk (default: the default study's chunk_size)")
    parser.add_argument("--scaling-seeds", default="4,16,64",
                        help="seed counts of the study-scaling rows ('' to skip)")
    parser.add_argument("--quick", action="store_true", help="skip PyMC's NUTS and the N scan")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--vectorised-chunks", default="1,10,100,1000",
                        help="chunk sizes of the vectorised-engine rows ('' to skip)")
    parser.add_argument("--nuts-vectorised", default="2x2",
                        help="SEEDSxCHAINS of the vectorised numpyro NUTS rows, against nutpie "
                             "('' to skip; on a GPU e.g. 25x4)")
    parser.add_argument("--vectorised-only", action="store_true",
                        help="only the vectorised-engine rows and the chunked PyMC row they "
                             "are compared with (the GPU run: see benchmarks/README.md)")
    parser.add_argument("--no-pymc-reference", action="store_true",
                        help="skip the chunked PyMC row (and so the ratios against it): on a "
                             "GPU machine its CPU timing is not this machine's reference")
    parser.add_argument("--require-gpu", action="store_true",
                        help="stop with an error unless jax's default device is a GPU")
    args = parser.parse_args()
    if args.require_gpu:
        import jax

        if jax.default_backend() != "gpu":
            parser.error(f"--require-gpu: jax's default backend is {jax.default_backend()!r} "
                         f"({jax.devices()}); install the CUDA build of jax (make bench-gpu)")
    configure_compile_cache()
    args.chunk = args.chunk or default_study_config()["chunk_size"]
    table = Table(Path(args.out))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        vi = None
        if not args.no_pymc_reference:
            vi = bench_vi(args.chunk, folder)
            table.add([(f"VI chunked PyMC path ({args.chunk} seeds per process)",
                        f"{vi['chunked_s_per_fit']:.2f} s/fit")])
        rows, chunk_100 = vectorised_rows(args, folder, vi)
        table.add(rows)
        if vi is not None and chunk_100 is not None:
            table.add(bracketed_target_rows(folder, vi, chunk_100))
        table.add(nuts_vectorised_rows(args, folder))
        if args.vectorised_only or vi is None:
            return table.finish()
        table.add([("VI naive: one process per fit", f"{vi['naive_s_per_fit']:.2f} s/fit"),
                   (f"VI chunked ({args.chunk} seeds per process)",
                    f"{vi['chunked_s_per_fit']:.2f} s/fit"),
                   ("VI floor: 10000 step-function calls", f"{vi['floor_s_per_fit']:.2f} s/fit"),
                   target_row("VI ratio chunked / floor",
                              vi['chunked_s_per_fit'] / vi['floor_s_per_fit'], "<=", 1.5),
                   target_row("VI ratio naive / chunked",
                              vi['naive_s_per_fit'] / vi['chunked_s_per_fit'], ">=", 5)])
        grad = bench_gradient()
        table.add([("fused logp+grad, N=1e5", f"{grad * 1e3:.2f} ms")])
        nuts = bench_nuts(100_000, folder, ("pipeline",) if args.quick else ("pymc", "pipeline"))
        total_evals = nuts["gradient_evaluations_draws"] * 2  # tuning steps ~ sampling steps
        table.add([("NUTS pipeline (nutpie + fused), 1 chain 1000+1000, N=1e5",
                    f"{nuts['pipeline_s']:.1f} s ({nuts['pipeline_status']})"),
                   ("NUTS floor: ~2 x draw-phase gradient evaluations x eval time",
                    f"{total_evals * grad:.1f} s ({total_evals} evals)")])
        if not args.quick:
            table.add([("NUTS PyMC sampler, same",
                        f"{nuts['pymc_s']:.1f} s ({nuts['pymc_status']})"),
                       target_row("NUTS ratio PyMC / pipeline",
                                  nuts['pymc_s'] / nuts['pipeline_s'], ">=", 5)])
            for n_obs in (1_000, 10_000):
                scan = bench_nuts(n_obs, folder, ("pipeline",))
                table.add([(f"NUTS pipeline, N={n_obs}", f"{scan['pipeline_s']:.1f} s")])
        if importlib.util.find_spec("numpyro") is not None:
            jax_nuts = bench_nuts(100_000, folder / "numpyro", ("numpyro",))
            table.add([("NUTS numpyro (JAX, CPU here), same, incl. JIT compile",
                        f"{jax_nuts['numpyro_s']:.1f} s ({jax_nuts['numpyro_status']})"),
                       ("NUTS numpyro, next data set (compiled sampler reused)",
                        f"{jax_nuts['numpyro_warm_s']:.1f} s "
                        f"({jax_nuts['numpyro_warm_status']})")])
        seed_counts = [int(n) for n in args.scaling_seeds.split(",") if n]
        if seed_counts:
            scaling = bench_study_scaling(seed_counts, folder / "scaling")
            table.add([(f"study wall time, one main cell, {n_seeds} seeds, --cores 2",
                        f"{seconds:.1f} s ({seconds / n_seeds:.2f} s/seed)")
                       for n_seeds, seconds in scaling])
            if len(scaling) > 1:
                slope, fixed = np.polyfit(*np.array(scaling).T, 1)
                table.add([("study wall time ~ fixed + slope x seeds",
                            f"{fixed:.1f} s + {slope:.2f} s/seed")])
    table.finish()


def vectorised_rows(args, folder: Path, vi: dict | None) -> tuple[list[tuple[str, str]],
                                                                   dict | None]:
    """The vectorised engine's rows, and its chunk-100 timing (None without that size)."""
    import jax

    sizes = [int(n) for n in args.vectorised_chunks.split(",") if n]
    if not sizes:
        return [], None
    chunk_100 = None
    rows = [("vectorised engine device", f"{jax.default_backend()} ({jax.devices()[0]})")]
    flops_per_seed_step = 128 * 2 * 30  # batch x components x ~(forward + backward) flops
    for timing in bench_vectorised(sizes, folder):
        if "khat_logp_s" in timing:
            rows.append((f"k-hat of one fit ({timing['khat_draws']} draws): full-data log "
                         f"density / with the bootstrap MCSE",
                         f"{timing['khat_logp_s']:.2f} / {timing['khat_total_s']:.2f} s (the "
                         f"first vi.khat_seeds seeds of a cell)"))
            continue
        n = timing["seeds"]
        chunk_100 = timing if n == 100 else chunk_100
        loop = timing["loop_s"] / n
        step = timing["loop_s"] / 1e4
        gflops = flops_per_seed_step * n / step / 1e9
        rows += [(f"vectorised, chunk {n}: loop (10000 steps)",
                  f"{loop:.4f} s/fit ({1 / loop:.1f} fits/s; {step * 1e6:.0f} us/step for the "
                  f"chunk, ~{gflops:.2f} GFLOP/s)"),
                 (f"vectorised, chunk {n}: draws + ELBO + record (no k-hat)",
                  f"{timing['post_s'] / n:.4f} s/fit"),
                 (f"vectorised, chunk {n}: writing the fit files",
                  f"{timing['write_s_per_fit']:.4f} s/fit")]
        total = loop + timing["post_s"] / n + timing["write_s_per_fit"]
        rows.append((f"vectorised, chunk {n}: CPU time of all its threads (all rows)",
                     f"{timing['cpu_s_per_fit']:.4f} CPU-s/fit "
                     f"({timing['cpu_s_per_fit'] / total:.2f} cores busy)"))
        if vi is not None and (n == 100 or n == max(sizes)):
            rows.append((f"VI ratio PyMC chunked / vectorised, wall time of one process "
                         f"(chunk {n}, all rows)", f"{vi['chunked_s_per_fit'] / total:.2f}"))
            # per CPU-second: what a machine whose cores are all kept busy (a study) gets; the
            # target's verdict is read from the A B B A pair (bracketed_target_rows)
            ratio = vi["chunked_cpu_s_per_fit"] / timing["cpu_s_per_fit"]
            rows.append((f"VI ratio PyMC chunked / vectorised per CPU-second (chunk {n}, all "
                         f"rows; first measurements)", f"{ratio:.2f}"))
    if 100 in sizes:
        # the question's hand-written likelihood runs as PyMC writes it (its own graph, not the
        # fused form): the study's question and ablation cells pay this per-step cost
        question = bench_vectorised([100], folder, model=QUESTION_MODEL)
        rows += [(f"vectorised, chunk 100, {QUESTION_MODEL}: loop (10000 steps)",
                  f"{question[0]['loop_s'] / 100:.4f} s/fit"),
                 (f"k-hat of one {QUESTION_MODEL} fit: full-data log density / with the "
                  f"bootstrap MCSE",
                  f"{question[1]['khat_logp_s']:.2f} / {question[1]['khat_total_s']:.2f} s")]
    return rows, chunk_100


def target_row(label: str, value: float, op: str, target: float) -> tuple[str, str]:
    """A ratio's row with its verdict, decided here from the measured value (never typed)."""
    met = {">=": value >= target, "<=": value <= target}[op]
    return (f"{label} (target {op} {target:g})",
            f"{value:.2f} ({'target met' if met else 'target not met'})")


class Table:
    """The run's rows: each printed (and the JSON rewritten) as soon as it is measured, so that
    a run stopped part-way (a time limit on a lent GPU machine) keeps what it measured; the
    aligned table is printed at the end."""

    def __init__(self, out: Path):
        self.rows: list[tuple[str, str]] = []
        self.out = out
        self.header = (f"# benchmarks {time.strftime('%Y-%m-%d')} on {platform.node()} "
                       f"({platform.processor() or platform.machine()}, "
                       f"{__import__('os').cpu_count()} cores)")
        print(self.header, flush=True)

    def add(self, rows: list[tuple[str, str]]) -> None:
        for label, value in rows:
            print(f"  {label}: {value}", flush=True)
        self.rows += rows
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "latest.json").write_text(
            json.dumps({"header": self.header, "rows": self.rows}, indent=1))

    def finish(self) -> None:
        width = max((len(r[0]) for r in self.rows), default=0)
        print(self.header)
        for label, value in self.rows:
            print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main()
