"""Session fixtures of the test suite (helpers.py holds the functions they use)."""

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import (PLUGIN, QUICK, REPO, RUN_TIMEOUT_S, copy_workflow, once_per_session,
                     output_snapshot, snakemake, snapshot_changes)

# The tests compile as the fit jobs do (vimodes.runtime.configure_compile_cache): PyTensor's
# cache with the long lock timeout and XLA's persistent cache, in the user's cache folders, so
# that the session's processes (pytest workers, Snakemake jobs) and later sessions reuse what
# was compiled. Set before any test module imports pytensor or jax.
from vimodes.runtime import GC_THRESHOLDS, configure_compile_cache  # noqa: E402

configure_compile_cache()
# as in the workflow's processes (vimodes.runtime.script_logging): a test process holds PyMC,
# JAX and Snakemake, whose objects the default thresholds make the collector walk again and again
gc.set_threshold(*GC_THRESHOLDS)

# The test plugin's method and figure are registered in the test session as in the Snakemake
# runs of the tests (helpers.snakemake), before any test module imports the registries' readers
sys.path.insert(0, str(REPO / PLUGIN))
import vimodes_test_plugin  # noqa: E402,F401


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session", autouse=True)
def working_tree_outputs_untouched():
    """Fails the session (an error at teardown) if any test touched the working tree's data/,
    figures/, report/, logs/ or .snakemake/ (e.g. a Snakemake run in the repository itself,
    whose start-up integrity check could mark the user's outputs incomplete)."""
    before = output_snapshot()
    yield
    changes = snapshot_changes(before, output_snapshot())
    assert not changes, ("the test session changed the working tree's outputs:\n"
                         + "\n".join(changes[:50]))


# ---------------------------------------------------------------------------------------------
# Results shared by many tests: built once per session, started in the background as soon as
# the tests are collected. A worker that needs one before it is ready waits, but while it is
# being built both workers go on with the tests that do not need it, so no core idles behind a
# build that runs on one core (the dry runs) or waits for its first test to come up.


def build_quick_study(folder: Path) -> dict:
    """The default suite's one end-to-end study, .test/config/quick.yaml, from the data to the
    report (about two minutes on 2 cores)."""
    import time

    work = copy_workflow(folder)
    started = time.perf_counter()
    result = snakemake("--cores", "2", "--configfile", QUICK, cwd=work)
    return {"work": str(work), "stdout": result.stdout, "stderr": result.stderr,
            "seconds": time.perf_counter() - started}


CLUSTER_STUDIES = ("config/config.yaml", "config/full.yaml")


def build_cluster_dry_runs(folder: Path) -> dict:
    """The (non-quiet) dry-run output of the default and the full study through the SLURM
    profile, as docs/running-on-slurm.md runs them (the full study's DAG takes ~40 s to plan),
    both at once: config path -> stdout. --cores 4 lets a four-chain NUTS job ask for its 4 CPUs
    (a dry run otherwise assumes one core); no cluster is called. Run under
    `python -X importtime`: the key "imports" maps each config to the top-level packages the
    planning process imported."""
    work = copy_workflow(folder, profiles=True)
    env = {**os.environ, "SLURM_CONF": str(work / "no-such-slurm.conf")}
    runs = {config: subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "snakemake", "--profile", "profiles/slurm",
         "-n", "--cores", "4", "--configfile", config], cwd=work, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for config in CLUSTER_STUDIES}
    outputs = {"imports": {}}
    for config, run in runs.items():
        stdout, stderr = run.communicate(timeout=RUN_TIMEOUT_S)
        assert run.returncode == 0, stdout[-3000:] + stderr[-3000:]
        outputs[config] = stdout
        outputs["imports"][config] = sorted({
            line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
            if line.startswith("import time:")})
    return outputs


SHARED_BUILDS = {"quick_study": ("quick", build_quick_study),
                 "cluster_dry_runs": ("dry_runs", build_cluster_dry_runs)}
_builds: dict = {}  # fixture name -> Future of its result, in this process


def start_shared_build(config, fixture: str):
    """The Future of the shared result behind `fixture`, started now unless it already is.
    Every process starts it; the file lock of once_per_session lets one of them build it."""
    from concurrent.futures import ThreadPoolExecutor

    if fixture not in _builds:
        name, build = SHARED_BUILDS[fixture]
        # pytest creates its temporary folder on first use: here, in this thread, before two
        # build threads could race to create it
        config._tmp_path_factory.getbasetemp()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        _builds[fixture] = pool.submit(once_per_session, config._tmp_path_factory, name, build)
        pool.shutdown(wait=False)
    return _builds[fixture]


def pytest_collection_finish(session):
    needed = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    for fixture in SHARED_BUILDS.keys() & needed:
        start_shared_build(session.config, fixture)


@pytest.fixture(scope="session")
def quick_study(request):
    """The quick study's run (build_quick_study): (copy, config path, the run's output,
    seconds). Tests that change it work on a copy (`shutil.copytree(..., symlinks=True)`
    keeps mtimes)."""
    from types import SimpleNamespace

    run = start_shared_build(request.config, "quick_study").result()
    output = SimpleNamespace(stdout=run["stdout"], stderr=run["stderr"])
    return Path(run["work"]), QUICK, output, run["seconds"]


@pytest.fixture(scope="session")
def cluster_dry_runs(request) -> dict[str, str]:
    """The dry runs of the default and the full study (build_cluster_dry_runs)."""
    return start_shared_build(request.config, "cluster_dry_runs").result()
