"""vimodes.runtime: what the workflow's processes set up before they work."""

import threading
from types import SimpleNamespace

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
