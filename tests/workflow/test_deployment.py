"""Deployment with `--sdm conda`: the rules' conda environment carries the exact pins of
requirements.lock (so a pin change changes the environment's hash) and nothing that resolves
only by accident (no relative -r/-e lines)."""

import os
import re

import pytest
import yaml

from helpers import QUICK, copy_workflow, job_count, snakemake
from vimodes.workflow_plan import conda_environment


def test_conda_environment_is_generated_from_the_lock(repo):
    lock = (repo / "requirements.lock").read_text()
    env_file = (repo / "workflow" / "envs" / "vimodes.yaml").read_text()
    assert env_file == conda_environment(lock), "run `make conda-env`"
    env = yaml.safe_load(env_file)
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(pip) == sorted(line for line in lock.splitlines() if line.strip())
    assert not any(line.startswith("-") for line in pip)
    assert "python=3.11" in env["dependencies"]


def test_a_loose_requirement_is_refused():
    with pytest.raises(ValueError, match="not an exact pin: numpy>=2"):
        conda_environment("pymc==5.28.5\nnumpy>=2\n")
    with pytest.raises(ValueError, match="-e ."):
        conda_environment("-e .\n")


def test_every_rule_declares_the_environment(repo):
    """Every rule that runs a script names the one environment file (a new rule cannot silently
    run outside it under --sdm conda)."""
    for path in sorted((repo / "workflow" / "rules").glob("*.smk")):
        for rule in re.split(r"\nrule ", path.read_text())[1:]:
            name = rule.split(":", 1)[0]
            if "script:" in rule:
                assert 'conda:\n        "../envs/vimodes.yaml"' in rule, f"{path.name}: {name}"


# A stand-in for the conda executable that answers the three questions Snakemake asks before
# planning with --sdm conda (the development machine has no conda); nothing is installed.
FAKE_CONDA = """#!/usr/bin/env bash
case "$*" in
  "--version") echo "conda 24.11.3";;
  "info --json") echo '{"conda_version": "24.11.3", "root_prefix": "/nonexistent",
    "conda_prefix": "/nonexistent", "envs_dirs": [], "pkgs_dirs": [], "platform": "linux-64"}';;
  "config --get channel_priority --json") echo '{"get": {"channel_priority": "strict"}}';;
  *) echo "stand-in conda cannot: $*" >&2; exit 1;;
esac
"""


def conda_env_location(work, env) -> str:
    listed = snakemake("--list-conda-envs", "--sdm", "conda", "--configfile", QUICK,
                       cwd=work, env=env).stdout
    row = next(line for line in listed.splitlines() if line.startswith("workflow/envs/"))
    return row.split()[-1]


def test_sdm_conda_dry_run_and_the_environment_follows_the_lock(tmp_path):
    """With --sdm conda the quick study plans (a dry run) with every rule in the one
    environment, and a changed pin gives the environment another hash (so Snakemake builds a
    new one) -- which the former `-r ../../requirements.lock` line never did."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "conda").write_text(FAKE_CONDA)
    (bin_dir / "conda").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    work = copy_workflow(tmp_path / "wf")
    planned = snakemake("-n", "--sdm", "conda", "--configfile", QUICK, cwd=work,
                        env=env)
    text = planned.stdout + planned.stderr
    assert "Conda environment workflow/envs/vimodes.yaml will be created." in text
    assert job_count(planned.stdout, "fit_chunk") > 0
    before = conda_env_location(work, env)
    env_file = work / "workflow" / "envs" / "vimodes.yaml"
    env_file.write_text(env_file.read_text().replace("numpy==", "numpy<=", 1))
    assert conda_env_location(work, env) != before
