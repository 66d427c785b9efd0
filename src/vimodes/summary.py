"""report/summary.md: the per-cell table of outcome counts and rates, read from the cell table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vimodes.records import atomic_path, package_versions


def _rate(row, label: str) -> str:
    return (f"{row[f'rate_{label}']:.2f} [{row[f'rate_{label}_low']:.2f}, "
            f"{row[f'rate_{label}_high']:.2f}]")


#: classes that only occur with K > 2 components or an over-fitted model
K_CLASSES = ("mode_single", "partial_collapse", "overfit_empty", "overfit_duplicated")


def summary_markdown(cells: pd.DataFrame, study_name: str, config_hash: str) -> str:
    lines = [
        f"# Where does VI land? Study `{study_name}`",
        "",
        f"Config hash `{config_hash}`; {int(cells['n_fits'].sum())} fits in {len(cells)} cells. "
        "Rates are per cell with 95% Wilson intervals; single mode = mode_A + mode_B + "
        "mode_single (one labelling of K > 2 components); too wide (mode_too_wide, centred on a "
        "mode but too wide) is not in it. K > 2 and over-fitted cells: the last class columns.",
        "",
        "| cell | fits | mode A | mode B | too wide | spanning | collapsed | not converged "
        "| failed | mode single (K > 2) | partial collapse | overfit empty | overfit duplicated "
        "| single mode rate [95% CI] | median sigma |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, row in cells.sort_values(["grid", "cell_id"]).iterrows():
        lines.append(
            f"| `{row['cell_id']}` | {row['n_fits']} | {row['n_mode_A']} | {row['n_mode_B']} | "
            f"{row.get('n_mode_too_wide', 0)} | {row['n_spanning']} | {row['n_collapsed']} | "
            f"{row['n_not_converged']} | {row['n_failed']} | "
            # tables written before the K generalisation have no K > 2 classes
            + " | ".join(str(row.get(f"n_{c}", 0)) for c in K_CLASSES)
            + f" | {_rate(row, 'single_mode')} | {row['median_sigma']:.3g} |")
    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    lines += ["", f"Package versions: {versions}.", ""]
    return "\n".join(lines)


def write_summary(cells_path: str | Path, out_path: str | Path, study_name: str,
                  config_hash: str) -> None:
    cells = pd.read_parquet(cells_path)
    with atomic_path(out_path) as tmp:
        tmp.write_text(summary_markdown(cells, study_name, config_hash))
