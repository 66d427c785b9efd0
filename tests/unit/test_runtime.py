"""vimodes.runtime: what the workflow's processes set up before they work."""

import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from snakemake.scheduling.job_scheduler import JobScheduler

from vimodes.runtime import coalesce_scheduler_timers


def test_snakemake_keeps_one_reevaluation_timer_pending():
    """Snakemake starts a timer per pass of its scheduling loop; unpatched, 50 passes leave 50
    live timer threads (and the process waits for all of them before it exits)."""
    assert coalesce_scheduler_timers()
    assert coalesce_scheduler_timers()  # idempotent: the Snakefile may be read twice
    scheduler = SimpleNamespace(_open_jobs=threading.Semaphore(0))
    before = threading.active_count()
    for _ in range(50):
        JobScheduler._schedule_reevalutation(scheduler, 0.3)
    pending = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
    assert threading.active_count() <= before + 1
    assert all(t.daemon for t in pending)
    assert scheduler._open_jobs.acquire(timeout=5)  # the one timer wakes the loop ...
    assert not scheduler._open_jobs.acquire(timeout=0.6)  # ... once
    JobScheduler._schedule_reevalutation(scheduler, 0.05)  # once it fired, the next may start
    assert scheduler._open_jobs.acquire(timeout=5)


def test_script_logging_freezes_only_when_asked(tmp_path):
    """A fit group's chunks before the last leave the collector free to reclaim their fitters
    (objects frozen by gc.freeze are never collected)."""
    import gc

    from vimodes.runtime import script_logging

    gc.unfreeze()
    thresholds = gc.get_threshold()
    try:
        with script_logging(tmp_path / "a.log", freeze=False):
            pass
        assert gc.get_freeze_count() == 0
        with script_logging(tmp_path / "b.log"):
            pass
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


_POOL_PROBE = """
import os, sys
sys.path.insert(0, {src!r})
import jax, jax.numpy as jnp
from vimodes.runtime import limit_xla_cpu_threads
allowed = os.sched_getaffinity(0)
limit_xla_cpu_threads({threads})
jax.jit(lambda v: (v * 2.0).sum())(jnp.ones(100_000)).block_until_ready()
names = {{}}
for tid in os.listdir("/proc/self/task"):
    with open(f"/proc/self/task/{{tid}}/comm") as handle:
        name = handle.read().strip()
    names[name] = names.get(name, 0) + 1
    assert os.sched_getaffinity(int(tid)) == allowed, (name, os.sched_getaffinity(int(tid)))
print(names.get("tf_XLAEigen", 0))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity (Linux) and two CPUs")
@pytest.mark.parametrize("threads", [1, 2])
def test_the_xla_cpu_pool_has_the_threads_asked_and_every_thread_keeps_every_cpu(threads):
    """A fresh process (the client is created once per process): XLA's compute pool has as
    many threads as asked, and no thread of the process is left pinned to fewer CPUs."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    probe = subprocess.run([sys.executable, "-c", _POOL_PROBE.format(src=src, threads=threads)],
                           capture_output=True, text=True, check=True)
    assert int(probe.stdout.split()[-1]) == threads
