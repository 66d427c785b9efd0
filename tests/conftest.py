import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
RUN_TIMEOUT_S = 1800  # one study on a busy 2-core machine takes 2-5 minutes

# The tests compile as the fit jobs do (vimodes.runtime.configure_compile_cache): PyTensor's
# cache with the long lock timeout and XLA's persistent cache, in the user's cache folders, so
# that the session's processes (pytest workers, Snakemake jobs) and later sessions reuse what
# was compiled. Set before any test module imports pytensor or jax.
sys.path.insert(0, str(REPO / "src"))
from vimodes.runtime import configure_compile_cache  # noqa: E402

configure_compile_cache()


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


# The working tree's outputs belong to the user: no test may create, change or delete anything
# under these paths (tests run Snakemake only in copies made by copy_workflow).
GUARDED = ("data", "figures", "report", "logs", ".snakemake")


def output_snapshot(root: Path = REPO) -> dict[str, tuple[int, int]]:
    """Every file and folder under the guarded paths of `root`: (mtime_ns, size) by path."""
    found = {}
    for name in GUARDED:
        top = root / name
        if not top.exists():
            continue
        found[name] = (top.stat().st_mtime_ns, 0)
        for folder, dirs, files in os.walk(top):
            for entry in dirs + files:
                path = Path(folder) / entry
                st = path.lstat()
                found[str(path.relative_to(root))] = (st.st_mtime_ns, st.st_size)
    return found


def snapshot_changes(before: dict, after: dict) -> list[str]:
    changes = [f"created {p}" for p in sorted(after.keys() - before.keys())]
    changes += [f"deleted {p}" for p in sorted(before.keys() - after.keys())]
    changes += [f"modified {p}" for p in sorted(before.keys() & after.keys())
                if before[p] != after[p]]
    return changes


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


def copy_workflow(target: Path, profiles: bool = False) -> Path:
    """A runnable copy of the workflow (sources only) in `target`.

    With `profiles`, also profiles/ -- then Snakemake applies profiles/default to every run in
    the copy, as for a user. Without, a test sees Snakemake's own defaults (e.g. no
    --rerun-incomplete), which the tests of those defaults rely on.
    """
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", target / "Snakefile")
    for folder in ("workflow", "config", *(("profiles",) if profiles else ())):
        shutil.copytree(REPO / folder, target / folder, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return target


def snakemake(*args, cwd, check=True, env=None, timeout=RUN_TIMEOUT_S):
    """Run the venv's snakemake in `cwd`; with `check`, fail with the tail of its output."""
    result = subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True,
                            env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-4000:]}")
    return result


def assert_no_traceback(output: str) -> None:
    """What a user sees of a refused config: the problems, and no stack frames but the one
    location Snakemake prints for the error (the line of common.smk that raised it)."""
    import re

    frames = re.findall(r'File "([^"]+)", line \d+', output)
    assert "Traceback" not in output, output[-3000:]
    assert all(frame.endswith("workflow/rules/common.smk") for frame in frames), frames
    assert len(frames) <= 2, frames  # "WorkflowError in file ..." and its one frame line


def job_count(dry_run_output: str, rule: str) -> int:
    """The count of `rule` in the job-stats table of a dry run."""
    for line in dry_run_output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == rule and parts[1].isdigit():
            return int(parts[1])
    return 0


QUICK = "config/quick.yaml"


def once_per_session(tmp_path_factory, name: str, build):
    """`build(folder)` -> a JSON-able result, computed once per test session even when
    pytest-xdist runs the session in several worker processes (`make test`): the first worker
    builds under a file lock in the session's shared temporary folder, the others reuse it."""
    import json

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER") is None:  # one process: nothing to share
        return build(tmp_path_factory.mktemp(name))
    shared = base.parent  # pytest-<n>/ of this session, holding popen-gw0/, popen-gw1/, ...
    folder, done = shared / name, shared / f"{name}.json"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            done.write_text(json.dumps(build(folder)))
        return json.loads(done.read_text())


@pytest.fixture(scope="session")
def quick_study(tmp_path_factory):
    """The default suite's one end-to-end study, config/quick.yaml, from the data to the
    report (about two minutes on 2 cores), run once per session: (copy, config path, the
    run's output, seconds). Tests that change it work on a copy
    (`shutil.copytree(..., symlinks=True)` keeps mtimes)."""
    import time
    from types import SimpleNamespace

    def build(folder):
        work = copy_workflow(folder)
        started = time.perf_counter()
        result = snakemake("--cores", "2", "--configfile", QUICK, cwd=work)
        return {"work": str(work), "stdout": result.stdout, "stderr": result.stderr,
                "seconds": time.perf_counter() - started}

    run = once_per_session(tmp_path_factory, "quick", build)
    output = SimpleNamespace(stdout=run["stdout"], stderr=run["stderr"])
    return Path(run["work"]), QUICK, output, run["seconds"]


@pytest.fixture(scope="session")
def cluster_dry_runs(tmp_path_factory) -> dict[str, str]:
    """The (non-quiet) dry-run output of the default and the full study through the SLURM
    profile, as docs/running-on-slurm.md runs them, once per session (the full study's DAG
    takes ~40 s to plan): config path -> stdout. --cores 4 lets a four-chain NUTS job ask for
    its 4 CPUs (a dry run otherwise assumes one core); no cluster is called. Run under
    `python -X importtime`: the key "imports" maps each config to the top-level packages the
    planning process imported."""

    def build(folder):
        work = copy_workflow(folder, profiles=True)
        env = {**os.environ, "SLURM_CONF": str(work / "no-such-slurm.conf")}
        outputs = {"imports": {}}
        for config in ("config/config.yaml", "config/full.yaml"):
            result = subprocess.run([sys.executable, "-X", "importtime", "-m", "snakemake",
                                     "--profile", "profiles/slurm", "-n", "--cores", "4",
                                     "--configfile", config], cwd=work, env=env,
                                    capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            outputs[config] = result.stdout
            outputs["imports"][config] = sorted({
                line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")})
        return outputs

    return once_per_session(tmp_path_factory, "dry_runs", build)
