"""Profiles: a plain `snakemake --cores N` from the repository root uses profiles/default (the
workflow profile Snakemake looks up beside the Snakefile), and that profile does not undo the
SLURM profile's cluster settings when both apply."""

import yaml
from snakemake.cli import parse_args

from helpers import QUICK, copy_workflow, job_count, snakemake


WORKFLOW_PROFILE_MESSAGE = ("Using workflow specific profile profiles/default for setting default "
                            "command line arguments.")


def test_plain_run_uses_the_default_profile(tmp_path):
    """(The quick study's small DAG: what is tested is the profile lookup, not the plan.)"""
    work = copy_workflow(tmp_path / "wf", profiles=True)
    result = snakemake("-n", "--cores", "2", "--configfile", QUICK, cwd=work)
    assert WORKFLOW_PROFILE_MESSAGE in result.stderr
    assert job_count(result.stdout, "fit_chunk") > 0


def test_without_profiles_folder_no_profile_is_used(tmp_path):
    """The check above is not vacuous: the message comes from profiles/default alone."""
    work = copy_workflow(tmp_path / "wf")
    result = snakemake("-n", "--cores", "2", "--configfile", QUICK, cwd=work)
    assert "workflow specific profile" not in result.stderr


def test_default_profile_settings_reach_snakemake(tmp_path, monkeypatch):
    work = copy_workflow(tmp_path / "wf", profiles=True)
    monkeypatch.chdir(work)
    _, args = parse_args(["-n", "--cores", "2"])
    assert args.rerun_incomplete is True
    assert args.retries == 1
    assert args.scheduler == "greedy"
    # the rate limit that keeps the scheduler from re-solving every second (benchmarks/README.md)
    limit = args.max_jobs_per_timespan
    assert (limit.max_jobs, limit.timespan) == (1000, 10.0)
    assert args.cores == 2  # the command line's, the profile sets none


def test_default_profile_leaves_cluster_settings_to_the_slurm_profile(tmp_path, monkeypatch, repo):
    """Workflow-profile keys override --profile keys one by one, so profiles/default must not set
    cores (NUTS threads) or default-resources (the SLURM account and partition)."""
    default = yaml.safe_load((repo / "profiles" / "default" / "config.yaml").read_text())
    assert not {"cores", "jobs", "default-resources", "executor"} & set(default)
    work = copy_workflow(tmp_path / "wf", profiles=True)
    monkeypatch.chdir(work)
    _, args = parse_args(["-n", "--profile", "profiles/slurm"])
    assert args.executor == "slurm"
    assert {"slurm_account", "slurm_partition"} <= set(args.default_resources)
    assert args.rerun_incomplete is True and args.scheduler == "greedy"


def test_makefile_and_docs_name_the_profiles_where_they_are(repo):
    makefile = (repo / "Makefile").read_text()
    # `make run` relies on the workflow profile; naming it again with --profile would load it twice
    assert "--profile profiles/default" not in makefile
    for path in ["README.md", "Makefile", "docs/running-on-slurm.md", "tests/RELIABILITY.md"]:
        assert "workflow/profiles" not in (repo / path).read_text(), path
