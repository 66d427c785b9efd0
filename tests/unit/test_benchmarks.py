"""The benchmark script's own logic (its measurements are `make bench`, not tests): verdicts
come from the measured numbers, and the printed table is what `latest.json` holds."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from helpers import REPO



@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("run_benchmarks",
                                                  REPO / "benchmarks" / "run_benchmarks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("value, op, target, verdict", [
    (20.0, ">=", 20, "target met"), (19.99, ">=", 20, "target not met"),
    (1.5, "<=", 1.5, "target met"), (1.51, "<=", 1.5, "target not met")])
def test_a_verdict_follows_the_measured_value(bench, value, op, target, verdict):
    label, text = bench.target_row("ratio", value, op, target)
    assert label == f"ratio (target {op} {target:g})"
    assert text == f"{value:.2f} ({verdict})"


def test_every_printed_row_is_written_to_latest_json(bench, tmp_path, capsys):
    rows = [("VI chunked PyMC path (10 seeds per process)", "2.80 s/fit"),
            bench.target_row("VI ratio PyMC chunked / vectorised (chunk 100, all rows)", 4.6,
                             ">=", 20)]
    table = bench.Table(tmp_path / "results")
    table.add(rows[:1])
    saved = json.loads((tmp_path / "results" / "latest.json").read_text())
    assert [tuple(row) for row in saved["rows"]] == rows[:1]  # kept if the run stops here
    table.add(rows[1:])
    table.finish()
    printed = capsys.readouterr().out.splitlines()
    saved = json.loads((tmp_path / "results" / "latest.json").read_text())
    assert saved["header"] == printed[0] and saved["header"].startswith("# benchmarks ")
    assert [tuple(row) for row in saved["rows"]] == rows
    assert printed[1].endswith("2.80 s/fit")  # printed as soon as measured
    assert printed[3] == saved["header"] and printed[5].endswith("4.60 (target not met)")


def test_a_child_process_cpu_time_is_counted_with_all_its_threads(bench):
    # the per-CPU-second ratio reads the PyMC chunk's CPU time from its finished child
    import subprocess
    import sys

    before = bench._children_cpu_s()
    burn = ("import threading, time\n"
            "def spin():\n    end = time.process_time() + 0.3\n"
            "    while time.process_time() < end: pass\n"
            "threads = [threading.Thread(target=spin) for _ in range(2)]\n"
            "[t.start() for t in threads]; [t.join() for t in threads]\n")
    subprocess.run([sys.executable, "-c", burn], check=True)
    assert bench._children_cpu_s() - before >= 0.3


def test_no_ratio_row_states_a_verdict_by_hand(bench):
    """Every 'target' row of the script is built by target_row."""
    source = (REPO / "benchmarks" / "run_benchmarks.py").read_text()
    assert source.count("target_row(") >= 5  # the definition and four ratio rows
    assert "(target >=" not in source and "(target <=" not in source


def _benchmark_file(path, core_seconds, cores_busy=2 / 3):
    """A `benchmark:` file of a job that held ``core_seconds``: a one-core job waits part of
    its wall time (cpu_time < s), a job of parallel chains keeps more cores busy (> s)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wall = core_seconds if cores_busy <= 1 else core_seconds / cores_busy
    path.write_text(f"s\tcpu_time\n{wall}\t{wall * cores_busy}\n")


def _measured_run(tmp_path, name):
    """benchmarks/extrapolate_study.py as a module, and a run folder at ``tmp_path`` holding
    the test study ``name`` as its config (its benchmark files are the test's to write)."""
    spec = importlib.util.spec_from_file_location("extrapolate_study",
                                                  REPO / "benchmarks" / "extrapolate_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = REPO / ".test" / "config" / f"{name}.yaml"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(config.read_text())
    return module, config, module.load_study(config)


def test_a_study_extrapolated_onto_itself_gives_its_measured_core_seconds(tmp_path):
    """The extrapolation divides every job's core-seconds (its wall time, or its CPU time
    where it kept more than one core busy) by its units of work: applied to the study that was
    measured, it must return each kind's measured total."""
    module, config, study = _measured_run(tmp_path, "tiny")
    bench = tmp_path / "logs" / "benchmarks"
    expected = {}
    for number, (cell_id, chunk) in enumerate(study.fit_chunks()):
        cell = study.cell_by_id[cell_id]
        label = f"fit {cell.method} ({cell.engine}{', full batch' if cell.batch_size == 0 else ''})"
        expected[label] = expected.get(label, 0) + 10 + number
        # every other job ran parallel chains: 1.8 cores busy, its CPU time counts
        _benchmark_file(bench / "fit" / cell_id / f"chunk-{chunk}.tsv", 10 + number,
                        cores_busy=1.8 if number % 2 else 0.7)
        _benchmark_file(bench / "classify" / cell_id / f"chunk-{chunk}.tsv", 2)
    block_size = study.config["data_block_size"]
    blocks = module.study_blocks(study)
    for regime, block in blocks:
        first = block * block_size
        name = f"seeds-{first}-{first + block_size - 1}.tsv"
        _benchmark_file(bench / "simulate" / regime / name, 0.5)
    _benchmark_file(bench / "aggregate.tsv", 7)
    table, missing, jobs = module.extrapolate(module.measure(tmp_path), config)
    cpu = dict(zip(table["jobs of"], table["core_s"]))
    assert missing == []
    assert len(expected) == 2  # full-batch ADVI and CAVI: rates per kind, not pooled
    for label, seconds in expected.items():
        assert cpu[label] == pytest.approx(seconds)
    assert cpu["simulate"] == pytest.approx(0.5 * len(blocks))
    assert cpu["references, tables, figures, report (as measured)"] == 7
    assert jobs == 2 * len(study.fit_chunks()) + len(blocks)
    # twice the seeds per cell: twice the work of every kind
    doubled = yaml.safe_load(config.read_text())
    for grid in doubled["grids"]:
        grid["seeds"] *= 2
    target = tmp_path / "doubled.yaml"
    target.write_text(yaml.safe_dump(doubled))
    table2, _, _ = module.extrapolate(module.measure(tmp_path), target)
    cpu2 = dict(zip(table2["jobs of"], table2["core_s"]))
    for label in (*expected, "classify advi", "classify cavi"):
        assert cpu2[label] == pytest.approx(2 * cpu[label], rel=1e-3)
    # the data sets come in whole blocks: twice the seeds of a study within its first block
    # draws the same block
    assert max(seed for _, seed in study.datasets()) * 2 < block_size
    assert cpu2["simulate"] == pytest.approx(cpu["simulate"], rel=1e-3)
    # twice the iterations: twice the fitting, the same classifying and data sets
    longer = yaml.safe_load(config.read_text())
    for grid in longer["grids"]:
        grid["iterations"] = [2 * n for n in grid["iterations"]]
    target.write_text(yaml.safe_dump(longer))
    table3, _, _ = module.extrapolate(module.measure(tmp_path), target)
    cpu3 = dict(zip(table3["jobs of"], table3["core_s"]))
    for label in expected:
        assert cpu3[label] == pytest.approx(2 * cpu[label], rel=1e-3)
    for label in ("simulate", "classify advi", "classify cavi"):
        assert cpu3[label] == pytest.approx(cpu[label], rel=1e-3)


def test_a_fit_groups_core_seconds_are_shared_among_its_chunks(tmp_path):
    """A fit group's benchmark file (logs/benchmarks/fit_group/<name>.tsv) holds the
    core-seconds of several chunks: it is shared by their units of work, so the study extrapolated onto
    itself gives each kind's measured total, and the plan counts one fit job and one classify
    job per group."""
    module, config, study = _measured_run(tmp_path, "quick")
    assert study.fit_groups()  # the quick study groups its vectorised chunks
    bench = tmp_path / "logs" / "benchmarks"
    total = 0.0
    for number, job in enumerate(study.fit_jobs()):
        seconds = 10.0 + number
        if job.name is None:
            cell_id, chunk = job.members[0]
            _benchmark_file(bench / "fit" / cell_id / f"chunk-{chunk}.tsv", seconds)
            _benchmark_file(bench / "classify" / cell_id / f"chunk-{chunk}.tsv", 1)
        else:
            _benchmark_file(bench / "fit_group" / f"{job.name}.tsv", seconds)
            _benchmark_file(bench / "classify_group" / f"{job.name}.tsv", 1)
        total += seconds
    size = study.config["data_block_size"]
    for regime, block in module.study_blocks(study):
        name = f"seeds-{block * size}-{block * size + size - 1}.tsv"
        _benchmark_file(bench / "simulate" / regime / name, 0.5)
    table, missing, jobs = module.extrapolate(module.measure(tmp_path), config)
    fits = table[table["jobs of"].str.startswith("fit ")]
    assert missing == []
    assert fits["core_s"].sum() == pytest.approx(total, rel=1e-3)
    assert jobs == 2 * len(study.fit_jobs()) + len(module.study_blocks(study))


def test_files_of_another_grouping_are_not_counted(tmp_path):
    """A run directory may hold benchmark files of an earlier layout (one job per chunk, or
    other groups): they are neither a fit's core-seconds nor 'the rest'."""
    module, config, study = _measured_run(tmp_path, "quick")
    bench = tmp_path / "logs" / "benchmarks"
    for job in study.fit_jobs():
        if job.name is None:
            _benchmark_file(bench / "fit" / job.members[0][0] / "chunk-0.tsv", 10)
        else:
            _benchmark_file(bench / "fit_group" / f"{job.name}.tsv", 10)
    before = module.measure(tmp_path)
    grouped = sorted(study.grouped_cells)[0]
    _benchmark_file(bench / "fit" / grouped / "chunk-0.tsv", 1000)
    _benchmark_file(bench / "fit_group" / "gone_c0_0.tsv", 1000)
    after = module.measure(tmp_path)
    assert after["fit"] == before["fit"]
    assert after["rest_core_s"] == before["rest_core_s"] and after["jobs"] == before["jobs"]


def test_the_bracketed_ratio_cancels_a_linear_drift_of_the_machines_speed(bench):
    # the machine slows by 10% per measurement; PyMC measured at times 0 and 3, the
    # vectorised engine at 1 and 2 (A B B A): the ratio of the means is the true 20, the
    # first pair alone reads 18.2
    speed = [1 + 0.1 * t for t in range(4)]
    pymc = [1.0 * speed[0], 1.0 * speed[3]]
    vectorised = [0.05 * speed[1], 0.05 * speed[2]]
    assert bench.bracketed_ratio(pymc, vectorised) == pytest.approx(20.0)
    assert pymc[0] / vectorised[0] == pytest.approx(18.18, abs=0.01)
    with pytest.raises(ValueError, match="two measurements of each engine"):
        bench.bracketed_ratio(pymc, vectorised[:1])
