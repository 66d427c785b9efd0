"""Reliability of the pipeline (tests/RELIABILITY.md): failures as data, atomic outputs, resume
after SIGINT and SIGKILL, exact reruns, bad input, damaged files and parallel cold compiles.

Fast tests run in the default suite; the `slow` ones (whole studies run, interrupted, resumed and
compared by canonical hash) run with `make test-slow`. Every study is .test/config/tiny.yaml (or a
subset of it) in a temporary copy of the workflow; the compile cache is the caller's (set
PYTENSOR_FLAGS=base_compiledir=... to isolate it) except in the cold-cache test.
"""

import copy
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import (QUICK, RUN_TIMEOUT_S, SNAKEMAKE, TINY, assert_no_traceback, copy_workflow,
                     fit_job_count, job_count, snakemake)
from vimodes.canonical import diff_hashes, study_hashes
from vimodes.config import load_study
from vimodes.records import (damage_message, find_damage, marked_incomplete, netcdf_problem, parquet_problem,
                             remove_stale_temporary_files, stale_temporary_files, write_arrays)

EXPLODE_CELL = "marginal__advi__explode__it1000__init-jitter__fullbatch"
CAVI_CELL = "marginal__cavi__it50__init-jitter"


def tiny_subset(work: Path, name: str, **changes) -> str:
    """A config file derived from tiny.yaml in the copy `work`; returns its relative path."""
    raw = yaml.safe_load((work / TINY).read_text())
    for key, value in changes.items():
        raw[key] = value
    path = work / "config" / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return f"config/{name}"


def chunk_dir(work: Path, cell: str, chunk: int) -> Path:
    return work / "data" / "fits" / cell / f"chunk-{chunk}"


# ----------------------------------------------------------------------------------------------
# 1. Failure as data (default suite)

def test_numerical_failure_is_recorded_and_the_study_completes(quick_study):
    """.test/config/quick.yaml has a cell whose every fit fails numerically (adam, learning rate 1e6)
    beside cells that succeed: the failures are records, the study reaches its report."""
    work, config, result, _ = quick_study
    study = load_study(work / config)
    assert {EXPLODE_CELL, CAVI_CELL} <= {c.cell_id for c in study.cells}
    for seed in (0, 1):
        record = json.loads((chunk_dir(work, EXPLODE_CELL, 0) / f"seed-{seed}.json").read_text())
        assert record["status"] == "failed"
        assert record["error"].startswith("NumericalFailure: ")
        assert "loss at iteration" in record["error"]
        assert not (chunk_dir(work, EXPLODE_CELL, 0) / f"seed-{seed}.nc").exists()
        ok = json.loads((chunk_dir(work, CAVI_CELL, 0) / f"seed-{seed}.json").read_text())
        assert ok["status"] == "ok" and (chunk_dir(work, CAVI_CELL, 0) / f"seed-{seed}.nc").exists()
    fits = pd.read_parquet(work / "data" / "tables" / "fits.parquet")
    failed = fits[(fits["cell_id"] == EXPLODE_CELL) & (fits["level"] == "fit")]
    assert list(failed["outcome"]) == ["failed", "failed"]
    assert failed["error"].str.startswith("NumericalFailure").all()
    cells = pd.read_csv(work / "data" / "tables" / "cells.csv").set_index("cell_id")
    assert cells.loc[EXPLODE_CELL, "n_fits"] == 2 and cells.loc[EXPLODE_CELL, "n_failed"] == 2
    assert cells.loc[CAVI_CELL, "n_failed"] == 0 and cells.loc[CAVI_CELL, "n_fits"] == 2
    summary = (work / "report" / "summary.md").read_text()
    assert f"`{EXPLODE_CELL}`" in summary
    assert "Error in rule" not in result.stdout + result.stderr  # no job failed, none retried


# ----------------------------------------------------------------------------------------------
# 2. Atomic outputs: a killed write never leaves a file at the final path (default suite)

KILLED_WRITER = textwrap.dedent('''
    import os, signal, sys
    from pathlib import Path
    from types import SimpleNamespace
    import numpy as np

    target, scenario = sys.argv[1], sys.argv[2]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    rng = np.random.default_rng(0)
    result = SimpleNamespace(
        draws={"slopes": rng.normal(size=(1, 200, 2)), "weights": rng.random((1, 200, 2)),
               "sigma": rng.random((1, 200))},
        sample_stats={"diverging": np.zeros((1, 200), bool)})
    if scenario.startswith("posterior"):
        from vimodes import idata
        if scenario == "posterior_overwrite":
            idata.write_posterior(target, result, {"seed": 1})  # complete; then rewritten
        original = idata._write_group

        def partial(root, name, group):  # the writer writes group by group
            if name == "sample_stats":
                root.sync()
                die()  # the posterior group is in the file, sample_stats is not
            return original(root, name, group)

        if scenario == "posterior_before_rename":
            idata.check_posterior_file = die  # the file is complete, not yet moved into place
        else:
            idata._write_group = partial
        result.draws["sigma"] = result.draws["sigma"] + 1.0
        idata.write_posterior(target, result, {"seed": 1})
    elif scenario == "dataset":
        from vimodes import simulate
        simulate.check_written = die  # written, killed while reading it back
        data = simulate.simulate(simulate.DataRegime(n_obs=500), 1, 7)
        simulate.write_dataset(data, target, {})
    elif scenario == "json":
        from vimodes import records
        write_text = Path.write_text
        Path.write_text = lambda self, text: (write_text(self, text[: len(text) // 2]), die())
        records.write_json({"status": "ok", "values": list(range(5000))}, target)
    print("not killed", flush=True)
''')


@pytest.mark.parametrize("scenario, name", [
    ("posterior_mid_write", "seed-1.nc"),
    ("posterior_before_rename", "seed-1.nc"),
    ("posterior_overwrite", "seed-1.nc"),
    ("dataset", "seed-1.nc"),
    ("json", "seed-1.json"),
])
def test_killed_write_leaves_no_file_at_the_final_path(tmp_path, scenario, name):
    target = tmp_path / "out" / name
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target), scenario],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert "not killed" not in proc.stdout
    if scenario == "posterior_overwrite":
        # the first, complete write stands untouched: a rewrite replaces it only when complete
        assert target.exists() and netcdf_problem(target) is None
        from vimodes.idata import read_posterior
        assert read_posterior(target)["sigma"].max() < 1.0  # the old draws, not the new ones
    else:
        assert not target.exists()
    leftovers = stale_temporary_files([tmp_path / "out"])
    assert leftovers and all(p.name.startswith(f".{name}.") for p in leftovers)
    removed = remove_stale_temporary_files([tmp_path / "out"], log=lambda _: None)
    assert removed == leftovers and not stale_temporary_files([tmp_path / "out"])


# ----------------------------------------------------------------------------------------------
# 4. Canonical NetCDF: byte-identical across processes and hash seeds (default suite)

CANONICAL_WRITER = textwrap.dedent('''
    import sys, time
    from types import SimpleNamespace
    import numpy as np
    from vimodes.idata import write_posterior
    from vimodes.simulate import DataRegime, simulate, write_dataset

    out = sys.argv[1]
    rng = np.random.default_rng(3)
    result = SimpleNamespace(
        draws={"weights": rng.random((2, 50, 2)), "slopes": rng.normal(size=(2, 50, 2)),
               "sigma": rng.random((2, 50))},
        sample_stats={"step_size": rng.random((2, 50)), "diverging": np.zeros((2, 50), bool)})
    record = {"zeta": 1, "alpha": {"b": 2, "a": [1.5, None]}, "fit_seconds": time.time()}
    write_posterior(f"{out}/posterior.nc", result, record)
    write_dataset(simulate(DataRegime(n_obs=300), 4, 11), f"{out}/data.nc", {"config_hash": "x"})
''')


def test_netcdf_files_are_byte_identical_across_processes(tmp_path):
    digests = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        out.mkdir()
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        subprocess.run([sys.executable, "-c", CANONICAL_WRITER, str(out)], check=True, env=env,
                       timeout=300)
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted(out.glob("*.nc"))})
        time.sleep(1.1)  # HDF5 object timestamps, if any were written, would now differ
    assert digests[0] == digests[1] and len(digests[0]) == 2


def test_canonical_hashes_ignore_timings_only(tmp_path):
    from vimodes.canonical import output_sha256

    record = {"seed": 1, "status": "ok", "fit_seconds": 1.0, "setup_seconds": 2.0, "x": [0.5]}
    (tmp_path / "a.json").write_text(json.dumps(record))
    (tmp_path / "b.json").write_text(json.dumps({**record, "fit_seconds": 9.0,
                                                 "setup_seconds": 3.0}, indent=2))
    (tmp_path / "c.json").write_text(json.dumps({**record, "x": [0.5000000000000001]}))
    assert output_sha256(tmp_path / "a.json") == output_sha256(tmp_path / "b.json")
    assert output_sha256(tmp_path / "a.json") != output_sha256(tmp_path / "c.json")
    table = pd.DataFrame({"cell": ["a"], "fit_seconds_q25": [1.0], "median_fit_seconds": [2.0],
                          "sigma": [0.1]})
    table.to_parquet(tmp_path / "a.parquet")
    table.assign(fit_seconds_q25=5.0, median_fit_seconds=7.0).to_parquet(tmp_path / "b.parquet")
    table.assign(sigma=0.1 + 1e-16).to_parquet(tmp_path / "c.parquet")
    assert output_sha256(tmp_path / "a.parquet") == output_sha256(tmp_path / "b.parquet")
    assert output_sha256(tmp_path / "a.parquet") != output_sha256(tmp_path / "c.parquet")


# ----------------------------------------------------------------------------------------------
# 5. Bad input: every error class named by its path, no traceback (default suite)

def _schema_errors(raw):
    raw["chunk_sise"] = 2  # unknown key
    raw["draws"] = "many"  # wrong type
    raw["data_regimes"]["default"]["noise_sd"] = -1  # out of range
    raw["grids"][0]["methods"] = ["advi", "nutz"]  # unknown method
    raw["grids"][1]["seeds"] = []  # empty seed list


def _unknown_model(raw):
    raw["grids"][0]["models"] = ["marginel"]


def _duplicate_cell(raw):
    raw["grids"].append({**copy.deepcopy(raw["grids"][0]), "name": "twin"})


# Validation reports every schema error at once; cross-references are checked once the schema
# passes and duplicate cells once the references resolve: three configs, three dry runs.
BAD_INPUTS = {
    "schema": (_schema_errors, [
        "config: unknown key 'chunk_sise'; did you mean 'chunk_size'?",
        "config.draws: expected type integer, found 'many'",
        "config.data_regimes.default.noise_sd: expected exclusiveMinimum 0, found -1",
        "config.grids[0].methods[1]: expected one of", "found 'nutz'; did you mean 'nuts'?",
        "config.grids[1].seeds: [] is not valid"]),
    "reference": (_unknown_model, [
        "config.grids[0].models: unknown model 'marginel'", "did you mean 'marginal'?"]),
    "duplicate": (_duplicate_cell, [
        "config.grids[2] ('twin'): duplicate cell "
        "'marginal__advi__adam__it1000__init-jitter__fullbatch', already declared by grid 'tiny'",
        "duplicate cell 'marginal__advi__explode__it1000__init-jitter__fullbatch'"]),
}


def test_bad_inputs_are_named_by_path_without_traceback(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    configs = {}
    for name, (spoil, _) in BAD_INPUTS.items():
        raw = yaml.safe_load((work / TINY).read_text())
        spoil(raw)
        (work / "config" / f"bad_{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        configs[name] = f"config/bad_{name}.yaml"
    with ThreadPoolExecutor(len(configs)) as pool:  # three dry runs at once
        results = dict(zip(configs, pool.map(
            lambda c: snakemake("-n", "--configfile", c, cwd=work, check=False),
            configs.values())))
    for name, (_, expected) in BAD_INPUTS.items():
        output = results[name].stdout + results[name].stderr
        assert results[name].returncode != 0, output
        assert "problem(s) in config file config/bad_" in output, output
        for text in expected:
            assert text in output, f"{name}: {text!r} missing from\n{output[-3000:]}"
        assert_no_traceback(output)
    assert not (work / "data").exists()


# ----------------------------------------------------------------------------------------------
# 6. Damaged files: detected, named and regenerated

def _write_outputs(folder: Path):
    """One good data file, fit chunk (ok + failed record) and parquet file."""
    from vimodes.records import write_json
    from vimodes.simulate import DataRegime, simulate, write_dataset

    data = folder / "data" / "sim" / "default" / "seed-0.nc"
    write_dataset(simulate(DataRegime(n_obs=200), 0, 1), data, {})
    chunk = folder / "data" / "fits" / "cell" / "chunk-0"
    chunk.mkdir(parents=True)
    shutil.copy(data, chunk / "seed-0.nc")  # any complete NetCDF file does for these checks
    write_json({"seed": 0, "status": "ok"}, chunk / "seed-0.json")
    write_json({"seed": 1, "status": "failed", "error": "NumericalFailure: x"},
               chunk / "seed-1.json")
    table = folder / "data" / "classified" / "cell" / "chunk-0.parquet"
    table.parent.mkdir(parents=True)
    pd.DataFrame({"a": range(100)}).to_parquet(table)
    return data, chunk, table


def test_the_integrity_check_runs_in_the_main_process_only(tmp_path):
    """REL 6: the Snakefile is read again by every process Snakemake starts for jobs (`--mode
    subprocess` / `remote`: cluster jobs, group jobs); those must not re-check the study (it
    would cost each job the scan and fail jobs on outputs other jobs are writing). A damaged
    data set stops the main process and is ignored by a job process, which still reads (and
    validates) the config."""
    work = copy_workflow(tmp_path / "wf")
    damaged = work / "data" / "sim" / "default" / "seeds-0-99" / "seed-0.nc"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))  # a truncated NetCDF-4 file
    main = snakemake("-n", "--configfile", QUICK, cwd=work, check=False)
    assert main.returncode != 0
    assert "--forcerun data/sim/default/seeds-0-99" in main.stdout + main.stderr
    job = snakemake("-n", "--configfile", QUICK, "--mode", "subprocess", cwd=work,
                    check=False)
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-2000:]
    assert "damaged" not in (job.stdout + job.stderr).lower()
    bad = snakemake("-n", "--configfile", QUICK, "--mode", "subprocess",
                    "--config", "chunk_sise=1", cwd=work, check=False)
    assert bad.returncode != 0 and "chunk_sise" in bad.stdout + bad.stderr  # the file was read


def test_integrity_check_finds_every_kind_of_damage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Snakemake's paths are relative to its working directory
    data, chunk, table = (p.relative_to(tmp_path) for p in _write_outputs(tmp_path))
    chunks = {str(chunk): (0, 1)}
    assert find_damage([str(data)], chunks, [str(table)]) == []

    size = data.stat().st_size
    with open(data, "r+b") as handle:
        handle.truncate(size // 2)
    (chunk / "seed-0.nc").write_bytes(b"")
    with open(table, "r+b") as handle:
        handle.truncate(table.stat().st_size - 5)
    damage = {d.path: d for d in find_damage([str(data)], chunks, [str(table)])}
    assert damage[str(data)].reason == f"truncated ({size // 2} of {size} bytes)"
    assert damage[str(chunk / "seed-0.nc")].reason == "empty (0 bytes)"
    assert damage[str(chunk / "seed-0.nc")].output == str(chunk)
    assert "truncated" in damage[str(table)].reason

    # stored arrays another cell reuses (Pathfinder's paths) must load
    write_arrays({"log_p": np.zeros((2, 3))}, chunk / "seed-1.paths.npz")
    assert str(chunk / "seed-1.paths.npz") not in {d.path for d in find_damage([], chunks)}
    stored = (chunk / "seed-1.paths.npz").read_bytes()
    (chunk / "seed-1.paths.npz").write_bytes(stored[: len(stored) // 2])
    reasons = {d.path: d.reason for d in find_damage([], chunks)}
    assert reasons[str(chunk / "seed-1.paths.npz")].startswith("unreadable")
    (chunk / "seed-1.paths.npz").unlink()

    (chunk / "seed-0.nc").unlink()
    (chunk / "seed-1.json").write_text('{"seed": 1, "status": "fai')
    problems = {d.path: d.reason for d in find_damage([], chunks)}
    assert problems[str(chunk / "seed-0.nc")] == "missing (its record says status 'ok')"
    assert problems[str(chunk / "seed-1.json")].startswith("truncated or not valid JSON")
    (chunk / "seed-1.json").write_text('{"seed": 7, "status": "ok"}')
    reasons = {d.path: d.reason for d in find_damage([], chunks)}
    assert reasons[str(chunk / "seed-1.json")] == "holds seed 7, expected 1"
    (chunk / "seed-1.json").unlink()
    reasons = {d.path: d.reason for d in find_damage([], chunks)}
    assert reasons[str(chunk / "seed-1.json")] == "missing (the chunk is incomplete)"
    # a chunk of another layout (chunk_size changed) is left to Snakemake's params trigger
    (chunk / "seed-0.json").write_text('{"seed": 0, "status": "ok", "chunk_seeds": [0, 1, 2]}')
    assert find_damage([], chunks) == []
    (chunk / "seed-0.json").write_text('{"seed": 0, "status": "ok", "chunk_seeds": [0, 1]}')
    (tmp_path / "foreign.nc").write_text("not hdf5")
    assert "no HDF5 signature" in netcdf_problem(tmp_path / "foreign.nc")
    assert parquet_problem(tmp_path / "foreign.nc").startswith("truncated or not a parquet")

    # a data set missing from its block (a folder output that exists) is damage of the block;
    # a block not drawn yet is not
    block = data.parent
    (tmp_path / "moved.nc").write_bytes(data.read_bytes())
    data.unlink()
    writers = {str(data): str(block), str(tmp_path / "undrawn" / "seed-5.nc"): "undrawn"}
    missing = find_damage(writers)
    assert [(d.path, d.reason, d.output) for d in missing] == [
        (str(data), "missing from its block of data sets", str(block))]
    assert find_damage([str(data)]) == []  # without the block: a missing file is not damage
    # a block Snakemake marked incomplete (its job was killed) is left to --rerun-incomplete
    assert find_damage(writers, skip={str(block)}) == []
    data.write_bytes((tmp_path / "moved.nc").read_bytes())
    assert find_damage(writers) and find_damage(writers)[0].reason.startswith("truncated")

    # the message names every damaged file and the --forcerun option with each output once
    (chunk / "seed-0.nc").write_bytes(b"")
    found = find_damage([str(data)], chunks, [str(table)])
    assert {d.output for d in found} == {str(data), str(chunk), str(table)}
    message = damage_message(found)
    for path in (data, chunk / "seed-0.nc", table):
        assert f"  - {path}: " in message
    assert forcerun_args(message) == sorted([str(data), str(chunk), str(table)])
    assert f"  rm -rf {' '.join(forcerun_args(message))}" in message
    # once deleted (the message's first step), an output is no longer damage
    shutil.rmtree(chunk)
    data.unlink()
    table.unlink()
    assert find_damage([str(data)], chunks, [str(table)]) == []


def forcerun_args(message: str) -> list[str]:
    """The outputs of the `--forcerun` line of an integrity-check message."""
    line = next(ln for ln in message.splitlines() if ln.strip().startswith("--forcerun "))
    return line.split()[1:]


def test_integrity_check_is_fast_for_thousands_of_outputs(tmp_path):
    """4000 fit chunks (8000 records, 4000 posterior files) and 100 data sets."""
    data, chunk, table = _write_outputs(tmp_path)
    record = json.dumps({"seed": 0, "status": "ok", "loss_trace": list(range(100))})
    chunks = {}
    for k in range(4000):
        folder = tmp_path / "many" / f"chunk-{k}"
        folder.mkdir(parents=True)
        shutil.copyfile(chunk / "seed-0.nc", folder / "seed-0.nc")  # distinct files, not links
        (folder / "seed-0.json").write_text(record)
        (folder / "seed-1.json").write_text(record.replace('"seed": 0', '"seed": 1')
                                            .replace('"ok"', '"failed"'))
        chunks[str(folder)] = (0, 1)
    data_files = []
    for s in range(100):
        data_files.append(str(tmp_path / f"data-{s}.nc"))
        shutil.copyfile(data, data_files[-1])
    tables = []
    for s in range(100):
        tables.append(str(tmp_path / f"table-{s}.parquet"))
        shutil.copyfile(table, tables[-1])
    files = [*data_files, *tables,
             *(str(p) for p in (tmp_path / "many").rglob("*") if p.is_file())]
    assert len({os.stat(f).st_ino for f in files}) == len(files) == 12_200
    started = time.perf_counter()
    assert find_damage(data_files, chunks, tables) == []
    elapsed = time.perf_counter() - started
    print(f"integrity check of 12,200 files: {elapsed:.2f} s")
    assert elapsed < 10  # about 0.5 s on an idle 2-core machine


def test_damaged_outputs_are_named_and_planned_for_regeneration(quick_study, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(quick_study[0], work, symlinks=True)  # keeps mtimes and .snakemake
    config = quick_study[1]
    data = work / "data" / "sim" / "default" / "seeds-0-99" / "seed-1.nc"
    with open(data, "r+b") as handle:
        handle.truncate(1000)
    fit_nc = chunk_dir(work, CAVI_CELL, 0) / "seed-0.nc"
    with open(fit_nc, "r+b") as handle:
        handle.truncate(fit_nc.stat().st_size - 100)
    fit_json = chunk_dir(work, EXPLODE_CELL, 0) / "seed-1.json"
    fit_json.write_text(fit_json.read_text()[:200])
    (data.parent / ".seed-0.nc.x1y2.tmp").write_bytes(b"\x89HDF")  # a killed write's leftover

    refused = snakemake("data/tables/cells.csv", "report/summary.md", "-n",
                        "--configfile", config, cwd=work, check=False)
    text = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert "Integrity check: 3 damaged output file(s) in 3 output(s)" in text
    assert "data/sim/default/seeds-0-99/seed-1.nc: truncated (1000 of" in text
    assert f"data/fits/{CAVI_CELL}/chunk-0/seed-0.nc: truncated" in text
    assert f"data/fits/{EXPLODE_CELL}/chunk-0/seed-1.json: truncated or not valid JSON" in text
    forced = forcerun_args(text)
    assert forced == sorted(["data/sim/default/seeds-0-99", f"data/fits/{CAVI_CELL}/chunk-0",
                             f"data/fits/{EXPLODE_CELL}/chunk-0"])
    # the recipe: delete them, then --forcerun them: the damaged data set's block, every chunk
    # that reads it (the two damaged ones among them) and everything downstream are planned
    for output in forced:
        shutil.rmtree(work / output) if (work / output).is_dir() else (work / output).unlink()
    out = snakemake("data/tables/cells.csv", "report/summary.md", "-n", "--configfile", config,
                    "--forcerun", *forced, cwd=work)
    text = out.stdout + out.stderr
    study = load_study(work / config)
    block = range(study.config["data_block_size"])
    readers = [(cell, k) for cell, k in study.fit_chunks()
               if set(block) & set(study.chunk_seeds(cell, k))]
    assert {(CAVI_CELL, 0), (EXPLODE_CELL, 0)} <= set(readers)
    assert job_count(text, "simulate") == 1
    # every job holding a reader is planned, and holds readers only (a fit group's chunks share
    # their grid's seeds)
    jobs = [job for job in study.fit_jobs() if set(job.members) & set(readers)]
    assert fit_job_count(text) == len(jobs)
    assert {member for job in jobs for member in job.members} == set(readers)
    assert job_count(text, "aggregate") == 1
    # a real run (here only the data set's block) starts by removing the killed write's leftover
    snakemake(str(data.parent.relative_to(work)), "--cores", "1", "--configfile", config,
              "--forcerun", *forced, cwd=work)
    assert netcdf_problem(data) is None
    assert not stale_temporary_files([work / "data"])


# ----------------------------------------------------------------------------------------------
# Slow: whole studies (make test-slow)

def snakemake_state(workdir: Path) -> tuple[bool, set[str]]:
    """(is `workdir` locked by a Snakemake run, outputs Snakemake marked incomplete), read from
    Snakemake 9's own records (.snakemake/locks; .snakemake/incomplete: one file per output,
    named by the urlsafe base64 of its path, cut into '@'-prefixed folder names). Only this
    test reads them, to check what Snakemake itself does on an interrupt."""
    import base64

    state = Path(workdir) / ".snakemake"
    locks = state / "locks"
    locked = locks.is_dir() and any(locks.iterdir())
    incomplete = set()
    root = state / "incomplete"
    if root.is_dir():
        for dirpath, _, filenames in os.walk(root):
            parts = [p.lstrip("@") for p in Path(dirpath).relative_to(root).parts]
            for name in filenames:
                if name == "migration_underway":
                    continue
                try:
                    incomplete.add(base64.urlsafe_b64decode("".join([*parts, name])).decode())
                except (ValueError, UnicodeDecodeError):
                    continue
    return locked, incomplete


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """The workflow sources copied once, so that every run of a comparison uses the same
    sources even if the repository changes meanwhile (tiny.yaml extends config/config.yaml)."""
    return copy_workflow(tmp_path_factory.mktemp("snapshot"))


def from_snapshot(snapshot: Path, target: Path) -> Path:
    shutil.copytree(snapshot, target, symlinks=True)
    return target


def run_tiny(work: Path, *extra, cores=2, env=None):
    return snakemake("--cores", str(cores), "--configfile", TINY, *extra, cwd=work, env=env)


@pytest.fixture(scope="module")
def baseline(snapshot, tmp_path_factory):
    """The uninterrupted tiny study (--cores 2) and the canonical hashes of its outputs."""
    work = from_snapshot(snapshot, tmp_path_factory.mktemp("baseline") / "wf")
    started = time.perf_counter()
    run_tiny(work)
    hashes = study_hashes(work)
    print(f"baseline: {len(hashes)} outputs in {time.perf_counter() - started:.0f} s")
    return work, hashes


def _assert_same_study(expected: dict, work: Path):
    found = study_hashes(work)
    assert not diff_hashes(expected, found), "\n".join(diff_hashes(expected, found))


def _fit_outputs(hashes: dict) -> int:
    return sum(1 for k in hashes if k.startswith("data/fits/"))


@pytest.mark.slow
def test_rerun_with_one_core_is_identical(snapshot, baseline, tmp_path):
    """Same config, a second run, --cores 1 instead of 2: identical NetCDF bytes, records (less
    timings) and tables (less timings)."""
    work = from_snapshot(snapshot, tmp_path / "wf")
    run_tiny(work, cores=1)
    _assert_same_study(baseline[1], work)
    assert _fit_outputs(baseline[1]) == 9 + 6  # 9 records, 6 posterior files (3 fits failed)


def _group_alive(pgid: int) -> list[str]:
    ps = subprocess.run(["ps", "-o", "pid=,stat=,args=", "-g", str(pgid)], capture_output=True,
                        text=True).stdout
    return [line for line in ps.splitlines() if line.split()[1][0] != "Z"]


def _mid_chunks(work: Path) -> list[str]:
    """The two-seed chunks that hold the record of their first seed but not of their second.
    CAVI's chunks are left out: a CAVI fit of the tiny study takes milliseconds (its job imports
    no PyMC), so its second seed can be written between this poll and the interrupt's arrival,
    which says nothing about what runs after an interrupt."""
    return [str(d.relative_to(work)) for d in (work / "data" / "fits").glob("*/chunk-0")
            if "__cavi__" not in d.parent.name
            and (d / "seed-0.json").exists() and not (d / "seed-1.json").exists()]


def _fit_job_pids(work: Path) -> list[int]:
    """The Python processes of fit_chunk jobs running in `work` (Snakemake runs a script as a
    copy under .snakemake/scripts/)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if cwd == str(work) and any(a.endswith(b"fit_chunk.py") for a in args):
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
def test_an_interrupted_fit_job_fails_and_its_retry_completes_the_study(snapshot, baseline,
                                                                        tmp_path):
    """REL 1: an interrupt is not a numerical failure. SIGINT to one running fit job's process
    (mid-chunk: its first seed written): the job fails (no `failed` fit record is written for
    it), Snakemake restarts it (`--retries 1`, as profiles/default sets), and the study ends
    identical to the uninterrupted one."""
    work = from_snapshot(snapshot, tmp_path / "wf")
    log = open(tmp_path / "run.log", "w")
    proc = subprocess.Popen([SNAKEMAKE, "--cores", "2", "--configfile", TINY, "--retries", "1"],
                            cwd=work, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (_mid_chunks(work) and _fit_job_pids(work)):
        assert proc.poll() is None and time.monotonic() < deadline, "study ended before"
        time.sleep(0.05)
    interrupted = _mid_chunks(work)
    for pid in _fit_job_pids(work):
        os.kill(pid, signal.SIGINT)
    assert proc.wait(timeout=RUN_TIMEOUT_S) == 0
    text = (tmp_path / "run.log").read_text()
    assert "Error in rule fit_chunk" in text and "Trying to restart job" in text
    for chunk in interrupted:
        for record in (work / chunk).glob("seed-*.json"):
            assert "KeyboardInterrupt" not in record.read_text(), record
    _assert_same_study(baseline[1], work)


def test_outputs_marked_incomplete_are_not_damage(tmp_path, monkeypatch):
    """Snakemake's incomplete markers (.snakemake/incomplete/<urlsafe base64 of the path>, split
    into '@'-prefixed folders when too long) are read back as paths, and find_damage leaves
    those outputs to --rerun-incomplete; the same partial chunk unmarked is damage."""
    import base64

    monkeypatch.chdir(tmp_path)
    chunk = "data/fits/" + "/".join(["c" * 100] * 3) + "/chunk-0"  # too long for one marker
    Path(chunk).mkdir(parents=True)
    Path(chunk, "seed-0.json").write_text(json.dumps({"status": "failed", "seed": 0}))
    encoded = base64.urlsafe_b64encode(chunk.encode()).decode()
    pieces = [encoded[i:i + 254] for i in range(0, len(encoded), 254)]
    marker = Path(".snakemake/incomplete", *["@" + s for s in pieces[:-1]], pieces[-1])
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")
    Path(".snakemake/incomplete/migration_underway").write_text("")
    assert marked_incomplete() == {chunk}
    assert [d.output for d in find_damage([], {chunk: [0, 1]})] == [chunk]  # seed 1 missing
    assert find_damage([], {chunk: [0, 1]}, skip=marked_incomplete()) == []


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGINT", "SIGINT-group", "SIGKILL-group"])
def test_resume_after_interrupt_gives_the_same_study(snapshot, baseline, tmp_path, how):
    """Interrupt the study as soon as a fit chunk of two seeds has written its first seed, then
    resume with the documented recipe and compare every output with the uninterrupted run.

    SIGINT: to the Snakemake process only (`kill -INT <pid>`; it stops its own jobs).
    SIGINT-group: to the whole process group, as Ctrl-C in a terminal does (jobs get it too).
    SIGKILL-group: `kill -9` of the whole process group (`os.killpg`), as an OOM kill of the
    session's cgroup, a lost node or a closed terminal with `kill -9 -<pgid>` does. A SIGKILL of
    Snakemake alone would orphan its running jobs, which keep writing; see RELIABILITY.md.
    """
    work = from_snapshot(snapshot, tmp_path / "wf")
    log = open(tmp_path / "interrupted.log", "w")
    proc = subprocess.Popen([SNAKEMAKE, "--cores", "2", "--configfile", TINY], cwd=work,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (mid_at_kill := _mid_chunks(work)):  # the chunks seen mid-way, then the kill
        assert proc.poll() is None and time.monotonic() < deadline, "study ended before the kill"
        time.sleep(0.05)
    sig = signal.SIGKILL if how.startswith("SIGKILL") else signal.SIGINT
    if how.endswith("-group"):
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    proc.wait(timeout=300)
    time.sleep(2)
    assert _group_alive(proc.pid) == [], "jobs survived the interrupted Snakemake"
    assert not (work / "data" / "tables" / "cells.parquet").exists()  # interrupted mid-study
    locked, incomplete = snakemake_state(work)
    print(f"{how}: locked={locked}, incomplete={sorted(incomplete)}")
    # interrupted mid-chunk: a two-seed chunk held the record of its first seed only; it is
    # marked incomplete (so that --rerun-incomplete redoes it) and, where the jobs got the
    # signal themselves, nothing wrote its second seed after it. A SIGINT to Snakemake alone
    # reaches the jobs only when Snakemake terminates them ("this might take some time"): a
    # job may finish the seed it is on (0.2 s per seed here), which the rerun redoes anyway.
    assert mid_at_kill, "the interrupt did not land in the middle of a chunk"
    assert set(mid_at_kill) <= incomplete, (mid_at_kill, incomplete)
    if how.endswith("-group"):
        for chunk in mid_at_kill:
            assert not (work / chunk / "seed-1.json").exists(), chunk
    # Snakemake releases its lock on SIGINT; a SIGKILL leaves it (hence --unlock)
    assert locked == (sig == signal.SIGKILL), f"{how}: locked={locked}"

    # the recipe (tests/RELIABILITY.md): --unlock if the directory is still locked, then
    # --rerun-incomplete
    if locked:
        snakemake("--unlock", "--configfile", TINY, cwd=work)
    resumed = run_tiny(work, "--rerun-incomplete")
    assert "Error in rule" not in resumed.stdout + resumed.stderr
    _assert_same_study(baseline[1], work)


@pytest.mark.slow
def test_damaged_files_are_regenerated(baseline, tmp_path):
    """Truncate a data set, a posterior file and a fit record of a finished study: the next run
    names them (and refuses to reuse them), the recipe regenerates the identical study."""
    work = tmp_path / "copy"
    shutil.copytree(baseline[0], work, symlinks=True)
    data = work / "data" / "sim" / "default" / "seeds-0-99" / "seed-2.nc"
    with open(data, "r+b") as handle:
        handle.truncate(4096)
    adam = "marginal__advi__adam__it1000__init-jitter__fullbatch"
    fit_nc = chunk_dir(work, adam, 0) / "seed-1.nc"
    with open(fit_nc, "r+b") as handle:
        handle.truncate(fit_nc.stat().st_size // 2)
    fit_json = chunk_dir(work, CAVI_CELL, 0) / "seed-0.json"
    fit_json.write_text(fit_json.read_text()[:-20])

    refused = snakemake("--cores", "2", "--configfile", TINY, cwd=work, check=False)
    text = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "Integrity check: 3 damaged output file(s)" in text
    for path in (data, fit_nc, fit_json):
        assert str(path.relative_to(work)) in text
    for output in forcerun_args(text):
        shutil.rmtree(work / output) if (work / output).is_dir() else (work / output).unlink()
    run_tiny(work, "--forcerun", *forcerun_args(text))
    _assert_same_study(baseline[1], work)


# ----------------------------------------------------------------------------------------------
# 7. Parallel fits on a cold compile cache

def test_compile_cache_flags(monkeypatch):
    """fit_chunk.py calls configure_compile_cache() before importing pytensor: a long lock
    timeout unless one is given, buffers kept between calls unless the user says otherwise, and
    VIMODES_COMPILEDIR moves the cache."""
    from vimodes.runtime import COMPILE_LOCK_TIMEOUT_S, configure_compile_cache

    monkeypatch.setenv("PYTENSOR_FLAGS", "base_compiledir=/tmp/x")
    monkeypatch.delenv("VIMODES_COMPILEDIR", raising=False)
    configure_compile_cache()
    assert os.environ["PYTENSOR_FLAGS"] == (f"base_compiledir=/tmp/x,"
                                            f"compile__timeout={COMPILE_LOCK_TIMEOUT_S},"
                                            "allow_gc=False")
    monkeypatch.setenv("PYTENSOR_FLAGS", "compile__timeout=5,allow_gc=True")
    monkeypatch.setenv("VIMODES_COMPILEDIR", "/tmp/y")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
    monkeypatch.delenv("JAX_COMPILATION_CACHE_MAX_SIZE", raising=False)
    configure_compile_cache()
    assert os.environ["PYTENSOR_FLAGS"] == "compile__timeout=5,allow_gc=True,base_compiledir=/tmp/y"
    # XLA's persistent cache beside PyTensor's, for every compilation, with a size limit
    # (JAX locks the cache for parallel processes only when it has one)
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == "/tmp/y/jax"
    assert os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
    assert int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"]) > 0
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/tmp/z")  # a user's own setting stays
    configure_compile_cache()
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == "/tmp/z"


def test_the_jax_cache_serves_a_second_process(tmp_path):
    """A jitted function compiled in one process is read from the persistent cache by the next
    (what each vectorised fit job gains from configure_compile_cache)."""
    child = textwrap.dedent('''
        from vimodes.runtime import configure_compile_cache
        configure_compile_cache()
        import jax, jax.numpy as jnp
        print(float(jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T)(jnp.ones((3, 3))).sum()))
    ''')
    env = {**os.environ, "VIMODES_COMPILEDIR": str(tmp_path)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env.pop("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", None)
    env.pop("JAX_COMPILATION_CACHE_MAX_SIZE", None)
    first = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True,
                           text=True, check=True)
    entries = sorted(p.name for p in (tmp_path / "jax").iterdir() if p.name.endswith("-cache"))
    assert any(name.startswith("jit__lambda") for name in entries), entries
    assert (tmp_path / "jax" / ".lockfile").exists()  # reads and writes are locked
    second = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True,
                            text=True, check=True)
    assert second.stdout == first.stdout
    assert sorted(p.name for p in (tmp_path / "jax").iterdir()
                  if p.name.endswith("-cache")) == entries  # nothing compiled again


# sitecustomize.py put first on the fit jobs' PYTHONPATH: each fit_chunk.py process writes the
# compile settings PyTensor ran with when it exits.
COMPILE_SETTINGS_PROBE = textwrap.dedent('''
    import atexit, json, os, sys

    def _report():
        if "fit_chunk" not in " ".join(sys.argv) or "pytensor" not in sys.modules:
            return
        config = sys.modules["pytensor"].config
        path = os.path.join(os.environ["VIMODES_TEST_PROBES"], f"{os.getpid()}.json")
        with open(path, "w") as handle:
            json.dump({"argv": sys.argv, "compile__timeout": config.compile__timeout,
                       "base_compiledir": str(config.base_compiledir)}, handle)

    atexit.register(_report)
''')


@pytest.mark.slow
def test_parallel_fits_on_a_cold_compile_cache_all_succeed(tmp_path):
    """Six fit jobs at once (--cores 6 on any machine) on an empty base_compiledir with no
    compile__timeout given: runtime.configure_compile_cache raises the lock timeout, so jobs
    queued behind the compile lock wait instead of crashing (pymc#6818)."""
    from vimodes.runtime import COMPILE_LOCK_TIMEOUT_S

    work = copy_workflow(tmp_path / "wf")
    compiledir = tmp_path / "pytensor-cold"
    probe_dir, probes = tmp_path / "probe", tmp_path / "probes"
    probe_dir.mkdir()
    probes.mkdir()
    (probe_dir / "sitecustomize.py").write_text(COMPILE_SETTINGS_PROBE)
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={compiledir}",
               VIMODES_TEST_PROBES=str(probes),
               PYTHONPATH=os.pathsep.join(filter(None, [str(probe_dir),
                                                        os.environ.get("PYTHONPATH")])))
    env.pop("VIMODES_COMPILEDIR", None)
    study = load_study(work / TINY)
    targets = [f"data/fits/{cell}/chunk-{chunk}" for cell, chunk in study.fit_chunks()]
    started = time.perf_counter()
    snakemake(*targets, "--cores", "6", "--configfile", TINY, cwd=work, env=env)
    elapsed = time.perf_counter() - started
    setup = []
    for cell, chunk in study.fit_chunks():
        for seed in study.chunk_seeds(cell, chunk):
            record = json.loads((chunk_dir(work, cell, chunk) / f"seed-{seed}.json").read_text())
            expected = "failed" if cell == EXPLODE_CELL else "ok"
            assert record["status"] == expected, record["error"]
            setup.append(record["setup_seconds"])
    logs = " ".join(p.read_text() for p in (work / "logs" / "fit").rglob("*.log"))
    assert "Timeout" not in logs and "filelock" not in logs
    assert any(compiledir.rglob("*.so"))  # the cache was built by these jobs
    # every fit job compiled with the raised lock timeout, in the given cache: without
    # configure_compile_cache() the timeout is PyTensor's default (120 s) and this fails
    seen = [json.loads(p.read_text()) for p in probes.glob("*.json")]
    # CAVI's jobs fit with numpy alone and never import PyTensor
    # (test_layers.py::test_a_numpy_fitter_runs_without_importing_pymc)
    compiling = [t for t in targets if "__cavi__" not in t]
    assert len(seen) == len(compiling), seen
    for job in seen:
        assert job["compile__timeout"] == COMPILE_LOCK_TIMEOUT_S, job
        assert job["base_compiledir"] == str(compiledir), job
    print(f"cold parallel fits: {len(targets)} jobs in {elapsed:.0f} s, "
          f"setup {min(setup):.0f}-{max(setup):.0f} s")
