"""Fit-level progress (vimodes.progress): counts the fit records of the planned fits, estimates
the time left from the rate, and wraps a command without changing its exit status."""

import io
import sys

import pytest

from helpers import SMOKE
from vimodes.config import load_study
from vimodes.progress import Progress, fits_done, fits_planned, progress, watch


@pytest.fixture()
def study(repo):
    return load_study(repo / SMOKE)


def _record(root, study, index, seed_index=0):
    cell = study.cells[index]
    seed = study.chunks(cell)[0][seed_index]
    folder = root / "data" / "fits" / cell.cell_id / "chunk-0"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"seed-{seed}.json").write_text("{}")


def test_counts_only_the_records_of_planned_fits(tmp_path, study):
    assert fits_done(study, tmp_path) == 0
    _record(tmp_path, study, 0)
    _record(tmp_path, study, 1)
    stray = tmp_path / "data" / "fits" / "not_a_cell" / "chunk-0"
    stray.mkdir(parents=True)
    (stray / "seed-0.json").write_text("{}")
    (tmp_path / "data" / "fits" / study.cells[0].cell_id / "chunk-0" / "seed-9999.json"
     ).write_text("{}")
    assert fits_done(study, tmp_path) == 2
    assert fits_planned(study) == sum(len(c.seeds) for c in study.cells)


def test_time_left_from_the_rate_since_the_start(tmp_path, study):
    total = fits_planned(study)
    _record(tmp_path, study, 0)
    _record(tmp_path, study, 1)
    p = progress(study, tmp_path, started=(100.0, 0), now=160.0)  # 2 fits in 60 s
    assert (p.done, p.total) == (2, total)
    assert p.seconds_left == pytest.approx((total - 2) * 30.0)
    assert progress(study, tmp_path, started=(100.0, 2), now=160.0).seconds_left is None
    assert Progress(2, 10, 3900.0).text() == "fits: 2/10 (20%), about 1 h 5 min left at the " \
                                             "rate so far"
    assert Progress(10, 10, 0.0).text() == "fits: 10/10 (100%)"


def test_watch_prints_progress_and_returns_the_exit_status(tmp_path, study):
    stream = io.StringIO()
    status = watch([sys.executable, "-c", "import time, sys; time.sleep(1.5); sys.exit(3)"],
                   study, tmp_path, every=0.4, stream=stream)
    assert status == 3
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2
    assert all(line.startswith(f"[progress] fits: 0/{fits_planned(study)} (0%)")
               for line in lines)
