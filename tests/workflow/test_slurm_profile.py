"""The SLURM profile (profiles/slurm) without a cluster: a dry run of the default study
through the profile plans every job, submits only fits to SLURM, and gives every fit job the
resources sbatch needs. The real run on a local cluster is tests/workflow/test_slurm.py (`make test-slurm`)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import TINY, copy_workflow, is_fit_rule
from vimodes.config import load_study
from vimodes.simulate import study_blocks

BIN = Path(sys.executable).parent
PROFILE = "profiles/slurm"
# the fit jobs (fit_chunk, fit_group_<name>) and the mechanism; the rest are localrules
# (workflow/rules/common.smk)
SUBMITTED_RULES = {"fit_chunk", "mechanism"}


def parse_dry_run(output: str) -> list[dict]:
    """The jobs of a (non-quiet) dry run: rule, local or not, wildcards and resources."""
    jobs = []
    for line in output.splitlines():
        match = re.match(r"^(localrule|rule) (\w+):$", line)
        if match:
            jobs.append({"local": match.group(1) == "localrule", "rule": match.group(2),
                         "resources": {}, "wildcards": {}})
        elif jobs and line.startswith("    resources: "):
            jobs[-1]["resources"] = dict(item.split("=", 1) for item in
                                         line[len("    resources: "):].split(", "))
        elif jobs and line.startswith("    wildcards: "):
            jobs[-1]["wildcards"] = dict(item.split("=", 1) for item in
                                         line[len("    wildcards: "):].split(", "))
    return jobs


@pytest.fixture(scope="module")
def slurm_dry_run(tmp_path_factory):
    # with profiles/default, which Snakemake reads too and which overrides the SLURM profile
    work = copy_workflow(tmp_path_factory.mktemp("slurm-profile"), profiles=True)
    # no cluster: a dry run must not call sbatch/sacct/squeue
    env = {**os.environ, "SLURM_CONF": str(work / "no-such-slurm.conf")}
    result = subprocess.run([str(BIN / "snakemake"), "--profile", PROFILE, "-n",
                             "--configfile", "config/config.yaml"],
                            cwd=work, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "localrules directive specifies rules that are not" not in result.stderr
    return work, parse_dry_run(result.stdout)


def test_profile_has_the_cluster_settings(repo):
    profile = yaml.safe_load((repo / PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["jobs"] >= 1 and profile["retries"] >= 1 and profile["rerun-incomplete"]
    assert profile["slurm-init-seconds-before-status-checks"] > 0
    resources = profile["default-resources"]
    assert {"slurm_account", "slurm_partition", "mem_mb", "runtime"} <= set(resources)
    # placeholders the user must replace (the SLURM plugin refuses an unknown account)
    assert "FILL_IN" in resources["slurm_account"] and "FILL_IN" in resources["slurm_partition"]
    # the node-local compile cache and HDF5 setting, sourced on the node before each job
    sourced = profile["precommand"].split()
    assert sourced[0] == "." and (repo / sourced[1]).is_file()
    script = (repo / sourced[1]).read_text()
    assert "export VIMODES_COMPILEDIR" in script and "HDF5_USE_FILE_LOCKING=FALSE" in script


def test_job_environment_script_is_node_local(tmp_path, repo):
    """jobenv.sh, sourced by /bin/sh as SLURM runs it, points the compile cache at node tmp."""
    script = repo / PROFILE / "jobenv.sh"
    env = {"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path)}
    out = subprocess.run(["sh", "-c", f'. "{script}" && echo "$VIMODES_COMPILEDIR" && '
                          'echo "$HDF5_USE_FILE_LOCKING"'], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    assert out == [f"{tmp_path}/vimodes-pytensor-{user}", "FALSE"]


def test_slurm_dry_run_plans_every_job(slurm_dry_run):
    work, jobs = slurm_dry_run
    study = load_study(work / "config" / "config.yaml")
    fits = [j for j in jobs if j["rule"] == "fit_chunk"]
    singles = {job.members[0] for job in study.fit_jobs() if job.name is None}
    assert {(j["wildcards"]["cell"], int(j["wildcards"]["chunk"])) for j in fits} == singles
    assert len(fits) == len(singles)
    groups = sorted(j["rule"] for j in jobs if j["rule"].startswith("fit_group_"))
    assert groups == sorted(group.rule for group in study.fit_groups()) and groups
    assert singles | {m for group in study.fit_groups() for m in group.members} == \
        set(study.fit_chunks())
    assert sum(j["rule"] == "simulate" for j in jobs) == len(study_blocks(study))
    classified = [j for j in jobs if j["rule"] == "classify_chunk"]
    assert {(j["wildcards"]["cell"], int(j["wildcards"]["chunk"])) for j in classified} == singles
    assert sorted(j["rule"] for j in jobs if j["rule"].startswith("classify_group_")) == \
        sorted(group.classify_rule for group in study.fit_groups())
    assert any(j["rule"] == "write_report" for j in jobs)


def localrules(common_smk: str) -> set[str]:
    """The rule names of the `localrules:` directive."""
    block = re.search(r"^localrules:\n((?:    \w+,?\n)+)", common_smk, re.MULTILINE)
    assert block, "no localrules: directive in workflow/rules/common.smk"
    return {name.strip(" ,") for name in block.group(1).splitlines()}


def test_only_fits_are_submitted_to_slurm(slurm_dry_run):
    """(A dry run prints every job as `rule`, so the localrules directive is read; the real
    submissions are checked by tests/workflow/test_slurm.py.)"""
    work, jobs = slurm_dry_run
    local = localrules((work / "workflow" / "rules" / "common.smk").read_text())
    planned = {j["rule"] for j in jobs}
    assert local <= planned  # no typo: every named rule exists and runs in the default study
    submitted = planned - local - {"all"}
    # a fit group's classify rule is local by `localrule: True` in its definition (a dry run
    # prints local jobs as `rule` too)
    classify_groups = {rule for rule in submitted if rule.startswith("classify_group_")}
    definition = re.search(r"name:\s+group\.classify_rule\n(.*?)\n\n",
                           (work / "workflow" / "rules" / "fit.smk").read_text(), re.DOTALL)
    assert classify_groups and definition and "localrule: True" in definition.group(1)
    submitted -= classify_groups
    assert {rule for rule in submitted if not rule.startswith("fit_group_")} == SUBMITTED_RULES
    assert submitted != SUBMITTED_RULES  # the default study's fit groups are submitted too


def test_every_fit_job_has_slurm_resources(slurm_dry_run):
    _, jobs = slurm_dry_run
    fits = [j for j in jobs if is_fit_rule(j["rule"])]
    assert fits and any(j["rule"] != "fit_chunk" for j in fits)
    for job in fits:
        res = job["resources"]
        assert int(res["mem_mb"]) >= 1000, job
        assert int(res["runtime"]) >= 5, job
        assert res["slurm_account"] and res["slurm_partition"], job


FAKE_SLURM = {
    # the user's accounts, as `sacctmgr -n -s list user $USER format=account%256` prints them
    "sacctmgr": 'echo "  myaccount"\n',
    # every submission is recorded and refused, so that nothing runs
    "sbatch": 'echo "$@" >> "$FAKE_SLURM_LOG"\necho "sbatch: error: fake cluster" >&2\nexit 1\n',
    "sacct": "exit 0\n", "squeue": "exit 0\n", "scancel": "exit 0\n", "sinfo": "exit 0\n",
    "sshare": "exit 0\n", "scontrol": "exit 0\n",
}


def _fake_slurm_run(work: Path, tmp_path: Path, *extra: str) -> tuple[str, str]:
    """The real profile (not a dry run) on one fit chunk of tiny.yaml, with fake SLURM commands
    on PATH: the output, and the sbatch calls made."""
    bin_dir = tmp_path / "fake-slurm-bin"
    bin_dir.mkdir(parents=True)
    for name, body in FAKE_SLURM.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "sbatch.log"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "FAKE_SLURM_LOG": str(log)}
    study = load_study(work / TINY)
    cell, chunk = study.fit_chunks()[0]
    result = subprocess.run([str(BIN / "snakemake"), f"data/fits/{cell}/chunk-{chunk}",
                             "--profile", PROFILE, "--configfile", TINY,
                             "--retries", "0", "--slurm-init-seconds-before-status-checks", "1",
                             *extra], cwd=work, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode != 0  # the fake sbatch refuses everything
    return result.stdout + result.stderr, log.read_text() if log.exists() else ""


def test_profile_ships_no_usable_placeholder_and_the_override_is_submitted(tmp_path):
    """The shipped profile's account/partition are placeholders: a real run with them stops
    before anything is submitted (the plugin refuses the unknown account). The documented
    override (--default-resources slurm_account=... slurm_partition=... mem_mb=... runtime=...)
    reaches sbatch with that account and partition."""
    work = copy_workflow(tmp_path / "wf", profiles=True)
    output, sbatch = _fake_slurm_run(work, tmp_path / "placeholder")
    assert "The given account FILL_IN_account appears to be invalid" in output, output[-3000:]
    assert sbatch == "", "a job was submitted with the placeholder account"

    shutil.rmtree(work / ".snakemake", ignore_errors=True)
    output, sbatch = _fake_slurm_run(
        work, tmp_path / "override", "--default-resources", "slurm_account=myaccount",
        "slurm_partition=cpu", "mem_mb=1000", "runtime=10")
    assert "appears to be invalid" not in output, output[-3000:]
    calls = sbatch.splitlines()
    assert calls, output[-3000:]
    for call in calls:
        assert "-A myaccount" in call and "-p cpu" in call, call
        assert "FILL_IN" not in call, call
