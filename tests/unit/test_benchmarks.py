"""The benchmark script's own logic (its measurements are `make bench`, not tests): verdicts
come from the measured numbers, and the printed table is what `latest.json` holds."""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import pytest

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
    bench.print_rows(rows, SimpleNamespace(out=str(tmp_path / "results")))
    printed = capsys.readouterr().out.splitlines()
    saved = json.loads((tmp_path / "results" / "latest.json").read_text())
    assert saved["header"] == printed[0] and saved["header"].startswith("# benchmarks ")
    assert [tuple(row) for row in saved["rows"]] == rows
    assert printed[2].endswith("4.60 (target not met)")


def test_no_ratio_row_states_a_verdict_by_hand(bench):
    """Every 'target' row of the script is built by target_row."""
    source = (REPO / "benchmarks" / "run_benchmarks.py").read_text()
    assert source.count("target_row(") >= 5  # the definition and four ratio rows
    assert "(target >=" not in source and "(target <=" not in source
