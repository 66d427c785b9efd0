"""Progress of a study at the level of fits, for a person watching ``make run``.

Snakemake reports jobs ("12 of 1054 steps"), but a fit job holds up to 100 fits and a simulate
job a block of data sets, so its count says little about the time left. This counts fit records
(``data/fits/<cell>/chunk-<k>/seed-<s>.json``, written as each fit finishes) against the fits
the study plans, and estimates the time left from the rate since the watch started.

``python -m vimodes.progress [--config FILE] [--every S] -- COMMAND ...`` runs COMMAND (e.g.
``snakemake --cores 2``), prints one progress line to stderr every S seconds while it runs, and
exits with COMMAND's exit status.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from vimodes.config import Study, load_study


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    seconds_left: float | None  # None: no rate yet

    def text(self) -> str:
        share = self.done / self.total if self.total else 1.0
        line = f"fits: {self.done}/{self.total} ({100 * share:.0f}%)"
        if self.seconds_left is not None and self.done < self.total:
            line += f", about {_duration(self.seconds_left)} left at the rate so far"
        return line


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def fits_done(study: Study, root: str | Path = ".") -> int:
    """Fit records on disk for the study's planned (cell, seed) pairs."""
    root = Path(root)
    done = 0
    for cell in study.cells:
        for chunk, seeds in enumerate(study.chunks(cell)):
            folder = root / "data" / "fits" / cell.cell_id / f"chunk-{chunk}"
            if folder.is_dir():
                done += sum((folder / f"seed-{seed}.json").is_file() for seed in seeds)
    return done


def fits_planned(study: Study) -> int:
    return sum(len(cell.seeds) for cell in study.cells)


def progress(study: Study, root: str | Path, started: tuple[float, int] | None,
             now: float) -> Progress:
    """Progress now; ``started`` = (time, fits done then) of the watch's start, for the rate."""
    done, total = fits_done(study, root), fits_planned(study)
    left = None
    if started is not None:
        elapsed, gained = now - started[0], done - started[1]
        if elapsed > 0 and gained > 0:
            left = (total - done) * elapsed / gained
    return Progress(done, total, left)


def watch(command: list[str], study: Study, root: str | Path = ".", every: float = 60.0,
          stream=sys.stderr) -> int:
    """Run ``command``; every ``every`` seconds while it runs, one progress line to ``stream``."""
    start = (time.monotonic(), fits_done(study, root))
    process = subprocess.Popen(command)
    while True:
        try:
            return process.wait(timeout=every)
        except subprocess.TimeoutExpired:
            print(f"[progress] {progress(study, root, start, time.monotonic()).text()}",
                  file=stream, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vimodes.progress", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/config.yaml",
                        help="the study's config (default: %(default)s)")
    parser.add_argument("--every", type=float, default=60.0,
                        help="seconds between progress lines (default: %(default)s)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the command to run, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run (give it after --)")
    return watch(command, load_study(args.config), ".", args.every)


if __name__ == "__main__":
    sys.exit(main())
