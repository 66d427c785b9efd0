"""The smoke study through `snakemake --executor slurm` with the SLURM profile
(profiles/slurm) on the local single-node SLURM cluster of tests/slurm/cluster.sh, and
the same study run locally (`--cores 2`): every fit must have the same status and identical
posterior draws, and the fits table the same outcomes.

`make test-slurm` (pytest -m slurm -o addopts=""). Needs root on Debian 12: the cluster is
installed (apt, skipped when installed) and started if it is not up, and stopped afterwards only
if this module started it. Takes 15-25 minutes on a busy 2-core machine (see
docs/running-on-slurm.md); the timings are printed."""

import getpass
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import REPO, SMOKE, copy_workflow
from vimodes.config import load_study
from vimodes.idata import read_posterior

pytestmark = pytest.mark.slurm

BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
PROFILE = "profiles/slurm"
CONFIG = SMOKE
RUN_TIMEOUT_S = 3600
OUTCOME_COLUMNS = ["status", "outcome", "outcome_reason", "share_mode_A", "share_mode_B",
                   "share_collapsed", "centre_class", "centre_mass", "minority_share"]
ROW_KEY = ["cell_id", "seed", "level", "chain"]


def say(request, text: str) -> None:
    """A line on the terminal, also when pytest captures output."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        print(text)
        return
    with capture.global_and_fixture_disabled():
        print(text, flush=True)


def cluster(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLUSTER), *args], capture_output=True, text=True, timeout=timeout)


def run_snakemake(args: list[str], cwd: Path, env: dict) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run([SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=RUN_TIMEOUT_S)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed after {seconds:.0f} s in {cwd}:\n"
                             f"{result.stdout[-5000:]}\n{result.stderr[-5000:]}")
    return result, seconds


@pytest.fixture(scope="module")
def slurm_cluster(request):
    """The local cluster's environment (SLURM_CONF, account, partition)."""
    if os.geteuid() != 0:
        pytest.fail("the local SLURM cluster needs root (tests/slurm/README.md)")
    started_here = False
    if cluster("status").returncode != 0:
        t0 = time.monotonic()
        for step in ("install", "start"):
            result = cluster(step)
            assert result.returncode == 0, f"cluster.sh {step} failed:\n{result.stderr[-4000:]}"
        started_here = True
        say(request, f"\n[slurm] cluster installed/started in {time.monotonic() - t0:.0f} s")
    try:
        exports = dict(re.findall(r"^export (\w+)=(\S+)$", cluster("env").stdout, re.MULTILINE))
        assert {"SLURM_CONF", "VIMODES_SLURM_ACCOUNT", "VIMODES_SLURM_PARTITION"} <= set(exports)
        yield exports
    finally:
        if started_here:
            stopped = cluster("stop")
            assert stopped.returncode == 0, stopped.stderr[-2000:]


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory, request):
    """The smoke study through the SLURM profile. TMPDIR (passed into the jobs by sbatch
    --export=ALL) is a private folder, to check that the compile cache lands in node tmp."""
    base = tmp_path_factory.mktemp("slurm")
    work = copy_workflow(base / "wf", profiles=True)  # as a user runs it: with profiles/default
    node_tmp = base / "node-tmp"
    node_tmp.mkdir()
    env = {**os.environ, **slurm_cluster, "TMPDIR": str(node_tmp)}
    env.pop("VIMODES_COMPILEDIR", None)
    # a base_compiledir in PYTENSOR_FLAGS would win over the profile's VIMODES_COMPILEDIR
    env["PYTENSOR_FLAGS"] = ",".join(f for f in env.get("PYTENSOR_FLAGS", "").split(",")
                                     if f and not f.startswith("base_compiledir"))
    args = ["--profile", PROFILE, "--configfile", CONFIG,
            "--default-resources", f"slurm_account={slurm_cluster['VIMODES_SLURM_ACCOUNT']}",
            f"slurm_partition={slurm_cluster['VIMODES_SLURM_PARTITION']}", "mem_mb=1000",
            "runtime=10",
            "--slurm-init-seconds-before-status-checks", "2"]
    result, seconds = run_snakemake(args, work, env)
    say(request, f"\n[slurm] smoke study through --executor slurm: {seconds:.0f} s")
    return {"work": work, "node_tmp": node_tmp, "env": env, "args": args,
            "output": result.stdout + result.stderr, "seconds": seconds}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, request):
    work = copy_workflow(tmp_path_factory.mktemp("local") / "wf")
    _, seconds = run_snakemake(["--cores", "2", "--configfile", CONFIG], work, dict(os.environ))
    say(request, f"\n[slurm] smoke study locally (--cores 2): {seconds:.0f} s")
    return {"work": work, "seconds": seconds}


def submissions(output: str) -> list[tuple[int, str]]:
    """(SLURM job id, path of its log) of every job Snakemake submitted."""
    return [(int(job), log) for job, log in
            re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", output)]


def test_only_fits_are_submitted_and_all_complete(slurm_run):
    study = load_study(slurm_run["work"] / CONFIG)
    jobs = submissions(slurm_run["output"])
    rules = {re.search(r"/slurm_logs/rule_(\w+?)/", log).group(1) for _, log in jobs}
    assert rules == {"fit_chunk"}
    assert len(jobs) == len(study.fit_chunks()), "a fit was resubmitted"
    ids = ",".join(str(job) for job, _ in jobs)
    sacct = subprocess.run(["sacct", "--clusters", "all", "-X", "-n", "-P", "-j", ids,
                            "-o", "JobID,State,AllocCPUS"], env=slurm_run["env"],
                           capture_output=True, text=True, check=True).stdout
    rows = {int(job): (state, int(cpus)) for job, state, cpus in
            (line.split("|") for line in sacct.splitlines() if line)}
    assert set(rows) == {job for job, _ in jobs}
    assert {state for state, _ in rows.values()} == {"COMPLETED"}
    # a NUTS job asks one core per chain (threads are not capped by --cores on a cluster)
    for job, log in jobs:
        cell = study.cell_by_id[re.search(r"/rule_fit_chunk/(.+)_\d+/", log).group(1)]
        expected = cell.chains if cell.method == "nuts" else 1
        assert rows[job][1] == expected, (cell.cell_id, rows[job])


def test_compile_cache_is_node_local(slurm_run):
    """The profile's precommand sourced jobenv.sh on the node: PyTensor compiled under TMPDIR."""
    cache = slurm_run["node_tmp"] / f"vimodes-pytensor-{getpass.getuser()}"
    assert list(cache.glob("compiledir_*")), f"no PyTensor compile dir in {cache}"


def test_fits_match_the_local_run(slurm_run, local_run):
    """Same status and identical posterior draws for every fit of every chunk."""
    study = load_study(slurm_run["work"] / CONFIG)
    checked = 0
    for cell_id, chunk in study.fit_chunks():
        dirs = [run["work"] / "data" / "fits" / cell_id / f"chunk-{chunk}"
                for run in (slurm_run, local_run)]
        assert sorted(p.name for p in dirs[0].iterdir()) == sorted(p.name for p in dirs[1].iterdir())
        for seed in study.chunk_seeds(cell_id, chunk):
            on_slurm, local = (json.loads((d / f"seed-{seed}.json").read_text()) for d in dirs)
            assert on_slurm["status"] == local["status"], (cell_id, seed)
            if (dirs[0] / f"seed-{seed}.nc").exists():
                draws = [read_posterior(d / f"seed-{seed}.nc") for d in dirs]
                assert draws[0].keys() == draws[1].keys()
                for name in draws[0]:
                    np.testing.assert_array_equal(draws[0][name], draws[1][name],
                                                  err_msg=f"{cell_id} seed {seed}: {name}")
            checked += 1
    assert checked == sum(len(c.seeds) for c in study.cells)


def test_fit_tables_match_the_local_run(slurm_run, local_run):
    tables = [pd.read_parquet(run["work"] / "data" / "tables" / "fits.parquet")
              .sort_values(ROW_KEY).reset_index(drop=True)[ROW_KEY + OUTCOME_COLUMNS]
              for run in (slurm_run, local_run)]
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert (slurm_run["work"] / "report" / "report.html").is_file()


def test_slurm_rerun_has_nothing_to_do(slurm_run):
    result = subprocess.run([SNAKEMAKE, *slurm_run["args"], "-n"], cwd=slurm_run["work"],
                            env=slurm_run["env"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Nothing to be done" in result.stdout + result.stderr
