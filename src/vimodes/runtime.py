"""Process set-up shared by the Snakemake scripts: logging into the rule's log file and a
compile cache that is safe under parallel jobs."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Iterator

# PyTensor waits at most this long for its compile-directory lock; the default (120 s) is too
# short when many cold jobs start together (pymc#6818).
COMPILE_LOCK_TIMEOUT_S = 1800
# XLA's persistent cache: least recently used entries are evicted beyond this size
JAX_CACHE_MAX_BYTES = 2 * 1024**3
# Garbage-collector thresholds of the workflow's processes, the Snakemake process and every job
# (CPython's default: 700, 10, 10): see script_logging
GC_THRESHOLDS = (50_000, 20, 50)


def configure_compile_cache() -> None:
    """Must run before pytensor and jax are imported. ``VIMODES_COMPILEDIR`` moves both caches,
    e.g. to node-local storage on a cluster (never NFS).

    PyTensor keeps its compiled C code between processes by itself; JAX does not unless told:
    every fit job of the vectorised engine would compile the same step again (several seconds
    each, measured in benchmarks/README.md), so XLA's persistent cache is switched on, for
    every compilation, in ``<VIMODES_COMPILEDIR>/jax`` or the user's cache folder. A size limit
    is set because only then does JAX take a file lock around each read and write of the cache
    (without one it writes entries in place, which a parallel job could read half-written).

    PyTensor's functions also keep their intermediate buffers between calls (``allow_gc=False``)
    unless the user's PYTENSOR_FLAGS say otherwise: a step of PyMC's ADVI at minibatch 128
    spends a quarter of its time freeing and reallocating them (3.2 -> 2.4 s per 10000-step
    meanfield fit, identical results; benchmarks/README.md), and the fits' graphs are small."""
    flags = [f for f in os.environ.get("PYTENSOR_FLAGS", "").split(",") if f]
    if not any(f.startswith("compile__timeout") for f in flags):
        flags.append(f"compile__timeout={COMPILE_LOCK_TIMEOUT_S}")
    if not any(f.startswith("allow_gc") for f in flags):
        flags.append("allow_gc=False")
    compiledir = os.environ.get("VIMODES_COMPILEDIR")
    if compiledir and not any(f.startswith("base_compiledir") for f in flags):
        flags.append(f"base_compiledir={compiledir}")
    os.environ["PYTENSOR_FLAGS"] = ",".join(flags)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_jax_cache_dir(compiledir)))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(JAX_CACHE_MAX_BYTES))


def limit_xla_cpu_threads(n_threads: int) -> None:
    """Create JAX's CPU client with a compute pool of ``n_threads`` threads.

    XLA sizes that pool from the CPUs the creating thread may run on (the JAX maintainers'
    way of limiting it, jax#1539), so the calling thread is narrowed to ``n_threads`` CPUs
    while the client is created; the pool's threads, which inherit that narrow set, then get
    every CPU back, so the scheduler still moves them freely. The vectorised engine's steps are
    small kernels that a second XLA thread does not make faster: with two it spent 25-30% more
    CPU time for the same wall time (benchmarks/README.md), while a study runs a job per core.
    Nothing changes where the client already exists or the system has no CPU affinity (macOS).
    """
    if not hasattr(os, "sched_setaffinity"):
        return
    import jax

    allowed = os.sched_getaffinity(0)
    before = _thread_ids()
    os.sched_setaffinity(0, sorted(allowed)[:max(1, n_threads)])
    try:
        jax.devices("cpu")
    finally:
        os.sched_setaffinity(0, allowed)
    for thread_id in _thread_ids() - before:
        with contextlib.suppress(OSError):  # a thread that has ended meanwhile
            os.sched_setaffinity(thread_id, allowed)


def _thread_ids() -> set[int]:
    with contextlib.suppress(OSError):
        return {int(name) for name in os.listdir("/proc/self/task")}
    return set()


def _jax_cache_dir(compiledir: str | None) -> Path:
    if compiledir:
        return Path(compiledir) / "jax"
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "vimodes" / "jax"


@contextlib.contextmanager
def script_logging(log_path: str | Path, freeze: bool = True) -> Iterator[logging.Logger]:
    """Send this script's logging, stdout and stderr to the rule's log file.

    A job process also collects garbage less often: importing PyMC creates millions of objects
    that live as long as the process, and CPython's default thresholds make the collector walk
    them again and again during the imports and once more at exit (about 1.5 of the 7 CPU-s a
    job spends importing PyMC on the 2-core VM, benchmarks/README.md). At the end the
    surviving objects are frozen, which spares the exit's final collection; ``freeze=False``
    where the process goes on (a fit group's chunks before the last: frozen objects are never
    collected, and a finished chunk's fitter lives in reference cycles)."""
    gc.set_threshold(*GC_THRESHOLDS)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as handle:
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = handle
        logging.basicConfig(stream=handle, level=logging.INFO, force=True,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
        try:
            yield logging.getLogger("vimodes")
        except BaseException:
            logging.getLogger("vimodes").exception("step failed")
            raise
        finally:
            handle.flush()
            sys.stdout, sys.stderr = old_out, old_err
            if freeze:
                gc.freeze()


_TIMER_LOCK = threading.Lock()


def coalesce_scheduler_timers() -> bool:
    """Keep at most one of Snakemake's re-evaluation timers pending (the Snakefile calls this).

    Snakemake 9's job scheduler starts a ``threading.Timer`` on every pass of its loop that,
    one rate-limit timespan later, wakes the loop for another pass -- which starts another
    timer. Timers therefore never die out and grow by one per finished job: in the default
    study 1100 of them woke Snakemake's process about 110 times a second, 26 of its 181
    CPU-minutes (benchmarks/README.md), and a longer timespan is no way out because the
    timers are not daemon threads (Snakemake then waits for the last one before it exits).
    One pending timer wakes the loop just as well. Returns whether the patch applies (False
    when a Snakemake version has no such method)."""
    try:
        from snakemake.scheduling.job_scheduler import JobScheduler
    except ImportError:
        return False
    original = getattr(JobScheduler, "_schedule_reevalutation", None)
    if original is None:
        return False
    if getattr(original, "coalesced", False):
        return True

    def schedule_reevaluation(self, delay) -> None:
        with _TIMER_LOCK:
            if getattr(self, "_vimodes_timer_pending", False):
                return
            self._vimodes_timer_pending = True

        def wake() -> None:
            with _TIMER_LOCK:
                self._vimodes_timer_pending = False
            self._open_jobs.release()

        timer = threading.Timer(delay, wake)
        timer.daemon = True  # the run's end never waits for a wake-up nobody needs
        timer.start()

    schedule_reevaluation.coalesced = True
    JobScheduler._schedule_reevalutation = schedule_reevaluation
    return True
