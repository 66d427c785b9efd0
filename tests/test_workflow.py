"""The workflow as a user runs it: dry runs of every shipped config, lint, format, and one real
end-to-end run of the smoke study whose outputs are checked."""

import json
import subprocess

import pandas as pd
import pytest

from conftest import BIN, copy_workflow, job_count, snakemake
from vimodes.config import load_study

@pytest.mark.parametrize("config", ["config.yaml", "smoke.yaml", "full.yaml"])
def test_dry_run_plans_the_whole_grid(repo, tmp_path, config):
    work = copy_workflow(tmp_path / "wf")
    study = load_study(work / "config" / config)
    out = snakemake("-n", "--quiet", "rules", "--configfile", f"config/{config}", cwd=work).stdout
    assert job_count(out, "fit_chunk") == len(study.fit_chunks())
    assert job_count(out, "simulate") == len(study.datasets())


def test_dry_run_with_an_extra_seed_grows_the_dag(repo, tmp_path):
    work = copy_workflow(tmp_path / "wf")
    base = snakemake("-n", "--quiet", "rules", "--configfile", "config/smoke.yaml", cwd=work).stdout
    text = (work / "config" / "smoke.yaml").read_text().replace("seeds: 3", "seeds: 5", 1)
    (work / "config" / "bigger.yaml").write_text(text)
    more = snakemake("-n", "--quiet", "rules", "--configfile", "config/bigger.yaml", cwd=work).stdout

    assert job_count(more, "simulate") == job_count(base, "simulate") + 2
    assert job_count(more, "fit_chunk") > job_count(base, "fit_chunk")


def test_bad_config_stops_before_any_job(repo, tmp_path):
    work = copy_workflow(tmp_path / "wf")
    text = (work / "config" / "smoke.yaml").read_text()
    (work / "config" / "bad.yaml").write_text(text.replace("chunk_size: 3", "chunk_sise: 3")
                                             .replace("methods: [advi, fullrank_advi]",
                                                      "methods: [advi, fulrank_advi]", 1))
    result = snakemake("-n", "--configfile", "config/bad.yaml", cwd=work, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "unknown key 'chunk_sise'; did you mean 'chunk_size'?" in output
    assert "'fulrank_advi'" in output and "did you mean 'fullrank_advi'" in output
    assert "Traceback" not in output
    assert not (work / "data" / "sim").exists()


def test_dry_run_imports_no_pymc(tmp_path):
    """Planning reads only light modules: PyMC (and matplotlib) are imported by the jobs that
    fit or draw, never by `snakemake -n` (every command pays for what planning imports)."""
    import sys

    work = copy_workflow(tmp_path / "wf")
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "snakemake", "-n",
                             "--configfile", "config/smoke.yaml"], cwd=work,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "vimodes.figure_specs" in imported  # the probe sees the workflow's own imports
    heavy = sorted(m for m in imported if m.split(".")[0] in ("pymc", "pytensor", "matplotlib"))
    assert not heavy, heavy


def test_lint_is_clean(repo):
    result = snakemake("--lint", cwd=repo, check=False)
    assert "Lints for" not in result.stdout + result.stderr, result.stdout[-3000:]


def test_snakefmt_clean(repo):
    files = ["Snakefile", *sorted(str(p.relative_to(repo)) for p in (repo / "workflow" / "rules").glob("*.smk"))]
    result = subprocess.run([str(BIN / "snakefmt"), "--check", *files], cwd=repo,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    work = copy_workflow(tmp_path_factory.mktemp("smoke"))
    snakemake("--cores", "2", "--configfile", "config/smoke.yaml", cwd=work)
    return work


def test_smoke_study_end_to_end(smoke_run):
    work = smoke_run
    study = load_study(work / "config" / "smoke.yaml")
    fits = pd.read_parquet(work / "data" / "tables" / "fits.parquet")
    fit_rows = fits[fits["level"] == "fit"]
    expected = {(c.cell_id, s) for c in study.cells for s in c.seeds}
    assert set(zip(fit_rows["cell_id"], fit_rows["seed"])) == expected
    assert len(fit_rows) == len(expected)
    for cell_id, seed in expected:
        chunk = next(i for i, seeds in enumerate(study.chunks(study.cell_by_id[cell_id]))
                     if seed in seeds)
        record = json.loads((work / "data" / "fits" / cell_id / f"chunk-{chunk}" /
                             f"seed-{seed}.json").read_text())
        assert record["status"] in ("ok", "failed", "incomplete")
        assert record["seed"] == seed and record["version_pymc"]
        assert record["config_hash"] == study.config_hash()
    assert fit_rows["outcome"].notna().all()
    cells = pd.read_parquet(work / "data" / "tables" / "cells.parquet")
    assert set(cells["cell_id"]) == {c.cell_id for c in study.cells}
    classes = ["mode_A", "mode_B", "mode_too_wide", "spanning", "collapsed", "not_converged",
               "failed"]
    assert (cells[[f"n_{c}" for c in classes]].sum(axis=1) == cells["n_fits"]).all()
    assert ((cells["rate_single_mode_low"] <= cells["rate_single_mode"]) &
            (cells["rate_single_mode"] <= cells["rate_single_mode_high"])).all()
    summary = (work / "report" / "summary.md").read_text()
    for _, row in cells.iterrows():
        assert f"`{row['cell_id']}`" in summary
    # the corrected model with the NUTS reference lands on a mode; the question's model never does
    nuts = cells[(cells["method"] == "nuts") & (cells["model"] == "marginal")]
    assert (nuts["n_mode_A"] + nuts["n_mode_B"] + nuts["n_spanning"] == nuts["n_fits"]).all()
    as_asked = cells[cells["model"] == "as_asked"]
    assert (as_asked["n_single_mode"] == 0).all()


def test_smoke_rerun_has_nothing_to_do(smoke_run):
    result = snakemake("-n", "--configfile", "config/smoke.yaml", cwd=smoke_run)
    assert "Nothing to be done" in result.stdout + result.stderr
