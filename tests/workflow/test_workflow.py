"""The workflow as a user runs it: dry runs of every shipped config, lint, format, and one real
end-to-end run of the quick study (.test/config/quick.yaml; the larger smoke study in make test-slow)
whose outputs are checked."""

import json
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from helpers import (BIN, QUICK, SMOKE, assert_no_traceback, copy_workflow, fit_job_count,
                     is_fit_rule, job_count, snakemake)
from vimodes.config import load_study
from vimodes.simulate import study_blocks

@pytest.mark.parametrize("config", ["config/config.yaml", "config/full.yaml", SMOKE, QUICK])
def test_dry_run_plans_the_whole_grid(repo, tmp_path, config, cluster_dry_runs):
    study = load_study(repo / config)
    out = cluster_dry_runs.get(config)  # the large studies: planned once (conftest)
    if out is None:
        work = copy_workflow(tmp_path / "wf")
        out = snakemake("-n", "--quiet", "rules", "--configfile", config, cwd=work).stdout
    jobs = study.fit_jobs()
    assert fit_job_count(out) == len(jobs)
    assert job_count(out, "fit_chunk") == sum(job.name is None for job in jobs)
    for group in study.fit_groups():
        assert job_count(out, group.rule) == 1
    assert job_count(out, "simulate") == len(study_blocks(study))


def test_dry_run_with_an_extra_seed_grows_the_dag(repo, tmp_path):
    work = copy_workflow(tmp_path / "wf")
    base = snakemake("-n", "--quiet", "rules", "--configfile", SMOKE, cwd=work).stdout
    text = (work / SMOKE).read_text().replace("seeds: 3", "seeds: 5", 1)
    (work / "config" / "bigger.yaml").write_text(text)
    more = snakemake("-n", "--quiet", "rules", "--configfile", "config/bigger.yaml", cwd=work).stdout

    # the two new seeds' data sets lie in the block already planned (test_simulate: a block
    # holds its seeds whatever the study fits)
    bigger = load_study(work / "config" / "bigger.yaml")
    assert len(bigger.datasets()) == len(load_study(work / SMOKE).datasets()) + 2
    assert job_count(more, "simulate") == len(study_blocks(bigger)) == job_count(base, "simulate")
    assert fit_job_count(more) > fit_job_count(base)


def test_bad_config_stops_before_any_job(repo, tmp_path):
    work = copy_workflow(tmp_path / "wf")
    text = (work / SMOKE).read_text()
    (work / "config" / "bad.yaml").write_text(text.replace("chunk_size: 3", "chunk_sise: 3")
                                             .replace("methods: [advi, fullrank_advi]",
                                                      "methods: [advi, fulrank_advi]", 1))
    result = snakemake("-n", "--configfile", "config/bad.yaml", cwd=work, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "config: unknown key 'chunk_sise'; did you mean 'chunk_size'?" in output
    assert "config.grids[0].methods[1]: expected one of" in output
    assert "found 'fulrank_advi'; did you mean 'fullrank_advi'?" in output
    assert_no_traceback(output)
    assert not (work / "data" / "sim").exists()


@pytest.mark.parametrize("config", ["config/config.yaml", "config/full.yaml"])
def test_dry_run_imports_no_pymc(config, cluster_dry_runs):
    """Planning reads only light modules: PyMC (and matplotlib) are imported by the jobs that
    fit or draw, never by `snakemake -n` of the shipped studies (every command pays for what
    planning imports). The dry runs ran under `python -X importtime` (conftest)."""
    imported = cluster_dry_runs["imports"][config]
    assert "vimodes.figure_specs" in imported  # the probe sees the workflow's own imports
    heavy = sorted(m for m in imported if m.split(".")[0] in ("pymc", "pytensor", "matplotlib"))
    assert not heavy, heavy


def test_lint_is_clean(tmp_path):
    """`snakemake --lint` on a copy of the workflow (never in the repository: its start-up
    integrity check may mark the user's outputs incomplete): exit 0 and no lint."""
    work = copy_workflow(tmp_path / "wf")
    result = snakemake("--lint", cwd=work, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Lints for" not in output, output[-3000:]


def test_ruff_clean(repo, tmp_path):
    """The Python code passes the project's ruff rules (pyproject.toml); the same command fails
    on a file with an undefined name (so the check itself can fail)."""
    result = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=repo, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\nprint(undefined_name)\n")
    control = subprocess.run([str(BIN / "ruff"), "check", "--config", str(repo / "pyproject.toml"),
                              str(bad)], capture_output=True, text=True)
    assert control.returncode == 1 and "F821" in control.stdout and "F401" in control.stdout


def test_snakefmt_clean(repo):
    files = ["Snakefile", *sorted(str(p.relative_to(repo)) for p in (repo / "workflow" / "rules").glob("*.smk"))]
    result = subprocess.run([str(BIN / "snakefmt"), "--check", *files], cwd=repo,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def check_study_outputs(work, config: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What every finished study holds: one classified row per (cell, seed) of the grid, a
    record per fit with its seed, config hash and PyMC version, outcome counts that add up,
    a rate inside its interval, every cell in the summary, the report; (fits, cells)."""
    study = load_study(work / config)
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
        assert record["status"] in ("ok", "failed")
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
    assert (work / "report" / "report.html").stat().st_size > 10_000
    return fit_rows, cells.set_index("cell_id")


def test_quick_study_end_to_end(quick_study):
    """.test/config/quick.yaml to its report: the outputs every study has, and the outcomes a correct
    pipeline gives on it (2 seeds, N = 500; observed: both fits of each assertion's cell)."""
    work, config, _, seconds = quick_study
    print(f"quick study: {seconds:.0f} s")
    fits, cells = check_study_outputs(work, config)
    ok = fits[fits["status"] == "ok"]
    # every successful fit of the corrected model is on a mode: full-batch adam (PyMC's
    # engine), the vectorised engine, CAVI from a jittered start, and each NUTS chain
    for cell in ("marginal__advi__adam__it1000__init-jitter__fullbatch",
                 "marginal__advi__adam__it1000__init-jitter__b128__engine-vectorised",
                 "marginal__cavi__it50__init-jitter"):
        assert cells.loc[cell, "n_single_mode"] == cells.loc[cell, "n_fits"] == 2, cell
    nuts = cells.loc["marginal__nuts__c2"]
    assert nuts["n_mode_A"] + nuts["n_mode_B"] + nuts["n_spanning"] == nuts["n_fits"] == 2
    # the question's model never is (its likelihood is not the mixture's)
    assert cells.loc["as_asked__advi__adam__it1000__init-jitter__b128__engine-vectorised",
                     "n_single_mode"] == 0
    assert len(ok) == len(fits) - 2  # the two fits of the exploding cell failed, no other


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    work = copy_workflow(tmp_path_factory.mktemp("smoke"))
    snakemake("--cores", "2", "--configfile", SMOKE, cwd=work)
    return work


@pytest.mark.slow
def test_smoke_study_end_to_end(smoke_run):
    """The larger smoke study (make test-slow): outputs, and the outcomes it must show. Observed
    on its 3 seeds (N = 2000, 1000 iterations): adam + jitter on the marginal model lands on a
    mode in 2/3 (PyMC's engine) and 1/3 (vectorised); PyMC's default optimiser in 0/3 in all
    three of its marginal-model cells; one-chain NUTS 2/2; the question's model 0/3 everywhere. The margins:
    at least one adam fit per engine on a mode, none with the default optimiser or the
    question's model, every one-chain NUTS fit on a mode."""
    _, cells = check_study_outputs(smoke_run, SMOKE)
    for engine in ("", "__engine-vectorised"):
        assert cells.loc[f"marginal__advi__adam__it1000__init-jitter__b128{engine}",
                         "n_single_mode"] >= 1
    default = cells[(cells["optimizer"] == "default") & (cells["model"] == "marginal")]
    assert len(default) == 3 and (default["n_single_mode"] == 0).all()
    nuts = cells.loc["marginal__nuts__c1"]
    assert nuts["n_single_mode"] == nuts["n_fits"] == 2
    c2 = cells.loc["marginal__nuts__c2"]
    assert c2["n_mode_A"] + c2["n_mode_B"] + c2["n_spanning"] == c2["n_fits"]
    assert (cells[cells["model"] == "as_asked"]["n_single_mode"] == 0).all()
    # README "Two VI engines": PyMC's full-rank ADVI fails on the ordered model (NaN gradient),
    # its meanfield ADVI does not; when a PyMC release changes this, the README must too
    ordered = cells[cells["model"] == "ordered"]
    fullrank = ordered[ordered["method"] == "fullrank_advi"]
    assert len(fullrank) == 2 and (fullrank["n_failed"] == fullrank["n_fits"]).all()
    assert (ordered[ordered["method"] == "advi"]["n_failed"] == 0).all()


def test_quick_rerun_has_nothing_to_do(quick_study):
    work, config, _, _ = quick_study
    result = snakemake("-n", "--configfile", config, cwd=work)
    assert "Nothing to be done" in result.stdout + result.stderr


def _dry_run_jobs(output: str, rule: str) -> list[dict[str, str]]:
    """The `input:` and `wildcards:` lines of every `rule` job of a (non-quiet) dry run."""
    jobs, current = [], None
    for line in output.splitlines():
        match = re.match(r"^(?:local)?rule (\w+):$", line)
        if match:
            current = {} if match.group(1) == rule else None
            if current is not None:
                jobs.append(current)
        elif current is not None and re.match(r"^    (input|wildcards): ", line):
            key, value = line.strip().split(": ", 1)
            current[key] = value
    return jobs


def test_cells_read_the_same_data_set_per_seed(tmp_path):
    """Common random numbers: every fit chunk of seed s reads data/sim/<regime>/seeds-<a>-<b>/
    seed-s.nc, the one data set of that seed, whatever the cell: its inputs are the blocks
    that hold its seeds, and its script reads each seed's file from them
    (``simulate.files_in_blocks``, test_simulate)."""
    from vimodes.simulate import files_in_blocks

    work = copy_workflow(tmp_path / "wf")
    study = load_study(work / SMOKE)
    out = snakemake("-n", "--configfile", SMOKE, cwd=work).stdout
    jobs = _dry_run_jobs(out, "fit_chunk")
    assert len(jobs) == len(study.fit_chunks())
    readers = {}
    size = study.config["data_block_size"]
    for job in jobs:
        wildcards = dict(item.split("=", 1) for item in job["wildcards"].split(", "))
        cell = study.cell_by_id[wildcards["cell"]]
        seeds = study.chunk_seeds(cell.cell_id, int(wildcards["chunk"]))
        folder = {s: f"data/sim/{cell.data_regime}/seeds-{s // size * size}-"
                     f"{s // size * size + size - 1}" for s in seeds}
        blocks = job["input"].split(", ")
        assert blocks == sorted(set(folder.values()))
        assert files_in_blocks(blocks, seeds) == [f"{folder[s]}/seed-{s}.nc" for s in seeds]
        for s in seeds:
            readers.setdefault((cell.data_regime, s), set()).add(cell.cell_id)
    assert len(readers) == len(study.datasets())
    assert all(len(cells) > 1 for cells in readers.values())  # shared by several cells


def makefile_figure_rules(repo) -> list[str]:
    """The --allowed-rules of `make figures`: the Makefile asks the figure registry for them
    (`python -m vimodes.figure_specs`), so this runs the same command."""
    text = (repo / "Makefile").read_text()
    assert "--allowed-rules $$($(BIN)/python -m vimodes.figure_specs)" in text
    result = subprocess.run([sys.executable, "-m", "vimodes.figure_specs"], capture_output=True,
                            text=True, check=True)
    return result.stdout.split()


def test_make_figures_never_refits(repo, quick_study, tmp_path):
    """`make figures`' snakemake command (target `figures`, --allowed-rules FIGURE_RULES) on a
    finished study whose VI fits are out of date (a fit setting, `vi.khat_draws`, changed: the
    fit rule's params trigger): figures and report are rebuilt, no fit (and nothing upstream of
    the tables) runs."""
    rules = makefile_figure_rules(repo)
    assert "figures" in rules and "write_report" in rules
    work = tmp_path / "copy"
    shutil.copytree(quick_study[0], work, symlinks=True)  # keeps mtimes and .snakemake
    config = "config/quick_stale.yaml"
    text = (work / quick_study[1]).read_text()
    assert "khat_draws: 20" in text
    (work / config).write_text(text.replace("khat_draws: 20", "khat_draws: 15"))
    fits_before = {p: p.stat().st_mtime_ns for p in (work / "data" / "fits").rglob("*")}
    # the fits are out of date: an unrestricted run would refit
    plain = snakemake("-n", "--quiet", "rules", "--configfile", config, cwd=work).stdout
    assert job_count(plain, "fit_chunk") > 0
    assert fit_job_count(plain) > job_count(plain, "fit_chunk")  # fit groups too
    planned = snakemake("figures", "-n", "--quiet", "rules", "--configfile", config,
                        "--allowed-rules", *rules, cwd=work).stdout
    assert fit_job_count(planned) == 0
    report = work / "report" / "report.html"
    report_before = report.stat().st_mtime_ns
    ran = snakemake("figures", "--cores", "2", "--configfile", config,
                    "--allowed-rules", *rules, cwd=work)
    text = ran.stdout + ran.stderr
    started = set(re.findall(r"^(?:local)?rule (\w+):$", text, re.MULTILINE))
    assert started and started <= set(rules), started
    assert not any(map(is_fit_rule, started)) and "simulate" not in started
    assert {p: p.stat().st_mtime_ns for p in (work / "data" / "fits").rglob("*")} == fits_before
    assert report.stat().st_mtime_ns > report_before  # rebuilt from the existing fits


def _documented_columns(repo) -> dict[str, list[str]]:
    """workflow/report/columns.md: the backquoted names of each table's section, by table."""
    sections, prose, table = {}, {}, None
    for line in (repo / "workflow" / "report" / "columns.md").read_text().splitlines():
        heading = re.match(r"^## `data/tables/(\w+)\.", line)
        if heading:
            table = heading.group(1)
            sections[table], prose[table] = [], ""
        elif table and line.startswith("| name"):
            table = None  # a table of row names (e.g. mechanism quantities), not of columns
        elif table and line.startswith("| ") and not line.startswith("| column"):
            sections[table] += re.findall(r"`([^`]+)`", line.split("|")[1])
        elif table and not line.startswith("|"):
            prose[table] += " " + line
    for table, text in prose.items():  # "For each metric in `a`, `b`: `<metric>_n`, ..."
        if "<metric>" in text:
            suffixes = re.findall(r"`<metric>_(\w+)`", text)
            metrics = re.findall(r"`(\w+)`", text.split("<metric>")[0])
            sections[table] += [f"{m}_{q}" for m in metrics for q in suffixes]
    return sections


def _pattern(name: str) -> re.Pattern:
    """A documented name as a regex: `*` any suffix, `<class>` an outcome class or single_mode,
    `_k_` a component index."""
    from vimodes.classify import OUTCOME_CLASSES

    classes = "|".join(("single_mode", *OUTCOME_CLASSES))
    text = re.escape(name).replace(r"\*", r"\w+").replace("<class>", f"(?:{classes})")
    text = text.replace("_k_", r"_\d+_")
    return re.compile(f"^{text}$")


def test_every_table_column_is_documented_and_every_documented_column_exists(repo, quick_study):
    work = quick_study[0]  # any finished study
    documented = _documented_columns(repo)
    assert {"fits", "cells", "metrics_by_class"} <= set(documented)
    fit_columns = set(pd.read_parquet(work / "data" / "tables" / "fits.parquet").columns)
    for table, names in documented.items():
        columns = set(pd.read_parquet(work / "data" / "tables" / f"{table}.parquet").columns)
        patterns = [_pattern(n) for n in names]
        if table != "fits":  # "cell axes: as above" / keyed by cell and class
            axes = {c for c in columns if c in fit_columns}
            patterns += [re.compile(f"^{re.escape(c)}$") for c in axes]
        undocumented = sorted(c for c in columns if not any(p.match(c) for p in patterns))
        assert not undocumented, f"{table}: columns missing from columns.md: {undocumented}"
        missing = sorted(n for n, p in zip(names, patterns) if not any(map(p.match, columns)))
        assert not missing, f"{table}: documented columns absent from the table: {missing}"


def test_snakemake_report_of_the_quick_study(quick_study, tmp_path):
    """`snakemake --report report.zip` (Snakemake's own report, advertised in the README)
    builds from the quick study's outputs: the archive holds its HTML entry page and every
    registered figure, with the registry's caption."""
    import zipfile

    from vimodes.figure_specs import FIGURE_SPECS

    work = tmp_path / "wf"
    shutil.copytree(quick_study[0], work, symlinks=True)
    snakemake("--report", "report.zip", "--configfile", quick_study[1], cwd=work)
    with zipfile.ZipFile(work / "report.zip") as archive:
        names = archive.namelist()
        assert any(n.endswith("report.html") for n in names), names[:20]
        pngs = {n.rsplit("/", 1)[-1] for n in names if n.endswith(".png")}
        assert {f"{name}.png" for name in FIGURE_SPECS} <= pngs
        html = "".join(archive.read(n).decode("utf-8", "replace") for n in names
                       if n.endswith(".html") or n.endswith(".js"))
    assert FIGURE_SPECS["regime_map"].title in html


def test_fits_rerun_when_the_pymc_version_or_a_chunks_seeds_change_and_only_then(
        quick_study, tmp_path):
    """The fit rule's rerun triggers on a finished study: another PyMC version (its `params:`
    entry; here PyMC's version as Snakemake's process sees it, changed by a sitecustomize)
    plans every fit job and nothing else upstream; one more seed plans only the new chunk of
    each grown cell and the chunks whose seed list changed (NUTS chunks hold 5 seeds), keeping
    every chunk whose seeds did not change."""
    work = tmp_path / "copy"
    shutil.copytree(quick_study[0], work, symlinks=True)
    config = quick_study[1]
    study = load_study(work / config)
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(
        "import importlib.metadata as m\n_version = m.version\n"
        "m.version = lambda name: '0.0.0+test' if name == 'pymc' else _version(name)\n"
        "import vimodes_test_plugin\n")  # this sitecustomize shadows the plugin's
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(probe), os.environ.get("PYTHONPATH")]))}
    other_pymc = snakemake("-n", "--quiet", "rules", "--configfile", config, cwd=work,
                           env=env).stdout
    assert fit_job_count(other_pymc) == len(study.fit_jobs())
    assert job_count(other_pymc, "simulate") == 0

    raw = yaml.safe_load((work / config).read_text())
    for grid in raw["grids"]:
        grid["seeds"] = 3  # chunk_size 2: seed 2 opens chunk 1 of the VI cells
    (work / "config" / "more_seeds.yaml").write_text(yaml.safe_dump(raw))
    bigger = load_study(work / "config" / "more_seeds.yaml")
    before = set(study.fit_chunks())
    changed = {(cell, k) for cell, k in bigger.fit_chunks() if (cell, k) not in before
               or bigger.chunk_seeds(cell, k) != study.chunk_seeds(cell, k)}
    kept = before - changed
    assert changed and kept  # both kinds occur, so the check below can fail either way
    more = snakemake("-n", "--configfile", "config/more_seeds.yaml", cwd=work).stdout
    planned = {(job["wildcards"].split("cell=")[1].split(",")[0],
                int(job["wildcards"].split("chunk=")[1].split(",")[0]))
               for job in _dry_run_jobs(more, "fit_chunk")}
    groups = {group.rule: group for group in bigger.fit_groups()}
    planned_groups = set(re.findall(r"^(?:local)?rule (fit_group_\w+):$", more, re.MULTILINE))
    assert planned_groups  # the quick study groups its vectorised chunks
    planned |= {member for rule in planned_groups for member in groups[rule].members}
    assert planned == changed


# ---------------------------------------------------------------------------------------------
# Config files as the workflow reads them (the loader's own messages: unit/test_config_files.py)


def test_workflow_refuses_a_partial_config_file(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    (work / "config" / "partial.yaml").write_text("chunk_size: 5\n")
    result = snakemake("-n", "--configfile", "config/partial.yaml", cwd=work, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "1 problem(s) in config file config/partial.yaml:" in output
    assert "missing required top-level key(s) study_name, grids" in output
    assert not (work / "data" / "sim").exists()


def test_workflow_default_study_with_a_config_value(tmp_path, cluster_dry_runs):
    """--config changes one value of the default study (here: fewer seeds per job); the
    default study's own plan is the session's dry run of config/config.yaml (conftest)."""
    work = copy_workflow(tmp_path / "wf")
    smaller = snakemake("-n", "--quiet", "rules", "--config", "chunk_size=25", cwd=work).stdout
    default = cluster_dry_runs["config/config.yaml"]
    assert fit_job_count(smaller) > fit_job_count(default) > 0
