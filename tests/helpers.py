"""What unit and workflow tests share: the repository's paths, the test configs of `.test/`,
runnable copies of the workflow, Snakemake runs and their output, and results computed once per
test session across pytest-xdist workers. Fixtures built from these live in conftest.py."""

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

# The test studies, as catalog workflows keep them: under .test/, run from the workflow's root
QUICK = ".test/config/quick.yaml"  # make test's end-to-end study
SMOKE = ".test/config/smoke.yaml"  # make test-slow's larger study
TINY = ".test/config/tiny.yaml"  # the reliability tests' study
# A method and a figure registered from outside the package, as a plugin would (the quick study
# runs them): on the path of the test session (conftest) and of every Snakemake run of a test
PLUGIN = ".test/plugin"

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


def copy_workflow(target: Path, profiles: bool = False) -> Path:
    """A runnable copy of the workflow (sources only) in `target`.

    With `profiles`, also profiles/ -- then Snakemake applies profiles/default to every run in
    the copy, as for a user. Without, a test sees Snakemake's own defaults (e.g. no
    --rerun-incomplete), which the tests of those defaults rely on.
    """
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", target / "Snakefile")
    for folder in ("workflow", "config", ".test", *(("profiles",) if profiles else ())):
        shutil.copytree(REPO / folder, target / folder, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return target


def with_plugin(env: dict | None) -> dict:
    """`env` (default: this process's) with the test plugin last on PYTHONPATH: a test that
    puts its own `sitecustomize` first shadows the plugin's and imports the plugin itself
    when its study needs it."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (env.get("PYTHONPATH", ""), str(REPO / PLUGIN)) if p)
    return env


def snakemake(*args, cwd, check=True, env=None, timeout=RUN_TIMEOUT_S):
    """Run the venv's snakemake in `cwd` (with the test plugin on PYTHONPATH); with `check`,
    fail with the tail of its output."""
    result = subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True,
                            env=with_plugin(env), timeout=timeout)
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


def is_fit_rule(rule: str) -> bool:
    """A rule that fits: fit_chunk (one chunk) or a fit group's rule (fit_group_<name>)."""
    return rule == "fit_chunk" or rule.startswith("fit_group_")


def fit_job_count(dry_run_output: str) -> int:
    """The fit jobs (fit_chunk and every fit group's rule) in the job-stats table of a dry run
    (the first count of each rule, as ``job_count``: Snakemake may print the table twice)."""
    counts = {}
    for line in dry_run_output.splitlines():
        parts = line.split()
        if len(parts) == 2 and is_fit_rule(parts[0]) and parts[1].isdigit():
            counts.setdefault(parts[0], int(parts[1]))
    return sum(counts.values())


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




def one_worker(module: str):
    """The mark of a test module that runs on one pytest-xdist worker (`make test` runs
    `--dist loadgroup`): its module-scoped fixtures (compiled fitters, fits, figures) are then
    built once, not once on each worker."""
    return pytest.mark.xdist_group(module)
