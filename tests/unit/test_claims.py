"""The report's claims: each sentence of the answer quotes its paired contrast, oriented the
way the sentence reads, and the engine cross-check states agreement from the table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vimodes import report
from vimodes.contrasts import cell_contrasts
from vimodes.pipeline import summarise_cells

SEEDS = range(20)


def _fits() -> pd.DataFrame:
    rows = []

    def add(cell_id, grid, single, **axes):
        base = dict(model="marginal", method="advi", optimizer="default", iterations=10000,
                    init="default", batch_size=128, chains=None, data_regime="default",
                    engine="pymc")
        base.update(axes)
        for seed in SEEDS:
            rows.append({**base, "cell_id": cell_id, "grid": grid, "seed": seed, "level": "fit",
                         "chain": -1, "outcome": "mode_A" if single(seed) else "collapsed",
                         "fit_seconds": 1.0, "sigma_mean": 0.1})

    add("m_default_default", "main", lambda s: False)
    add("m_default_jitter", "main", lambda s: s < 4, init="jitter")
    add("m_adam_jitter", "main", lambda s: s < 18, optimizer="adam_1e-2", init="jitter")
    add("m_adam_default", "main", lambda s: s < 10, optimizer="adam_1e-2")
    add("v_adam_jitter", "main_vectorised", lambda s: s < 17, optimizer="adam_1e-2",
        init="jitter", engine="vectorised")
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def tables():
    fits = _fits()
    return fits, summarise_cells(fits), cell_contrasts(fits)


def test_find_contrast_orients_the_difference(tables):
    _, cells, contrasts = tables
    main = cells[cells["grid"] == "main"]
    forward = report.find_contrast(contrasts, main, "optimizer", "adam_1e-2", "default",
                                   init="jitter")
    backward = report.find_contrast(contrasts, main, "optimizer", "default", "adam_1e-2",
                                    init="jitter")
    assert forward["n_pairs"] == 20
    assert forward["rate_a"] == pytest.approx(18 / 20) and forward["rate_b"] == 4 / 20
    assert forward["diff"] == pytest.approx(0.7) and backward["diff"] == pytest.approx(-0.7)
    assert forward["diff_low"] == pytest.approx(-backward["diff_high"])
    assert forward["n_10"] == backward["n_01"] == 14
    assert report.find_contrast(contrasts, main, "optimizer", "adam_1e-2", "default",
                                init="nonexistent") is None


def test_answer_quotes_each_contrast_with_interval_and_seeds(tables):
    fits, cells, contrasts = tables
    section = report.answer_section(cells, fits, contrasts)
    text = " ".join(map(str, section.items))
    forward = report.find_contrast(contrasts, cells[cells["grid"] == "main"], "optimizer",
                                   "adam_1e-2", "default", init="jitter")
    assert "adam 1e-2 18/20 vs the default optimiser 4/20 seeds on a single mode" in text
    assert f"{100 * forward['diff_low']:+.0f} to {100 * forward['diff_high']:+.0f}" in text
    assert "jittered 18/20 vs symmetric 10/20" in text
    assert "a difference" in text  # 14 discordant pairs all one way: Holm p far below 0.05


def test_engine_section_states_agreement_from_the_table(tables):
    _, cells, contrasts = tables
    section = report.engine_section(cells, contrasts)
    assert section.tables[0].rows[0][2:4] == ["18/20", "17/20"]
    assert "none differs beyond chance" in section.paragraphs[0]
    flipped = contrasts.copy()
    flipped.loc[flipped["axis"] == "engine", "p_holm"] = 0.001
    assert "disagree beyond chance" in report.engine_section(cells, flipped).paragraphs[0]


def test_contrast_table_lists_every_contrast(tables):
    _, _, contrasts = tables
    section = report.contrasts_section(contrasts)
    assert len(section.tables[0].rows) == len(contrasts)
    assert np.isfinite(contrasts["p_holm"]).all()


def test_readme_block_is_the_reports_answer(tmp_path):
    report_md = tmp_path / "report.md"
    report_md.write_text("# Where does VI land? Study x\n\nsub\n\n## The answer\n\n- one\n- two\n\n"
                         "## Next\n\nmore\n\n"
                         f"## {report.STARTS_TITLE}\n\n| a | b |\n\n## After\n\nlast\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nold text\n{report.README_END}\noutro\n")
    text = report.update_readme(report_md, readme)
    assert "- one\n- two" in text and "old text" not in text and "more" not in text
    assert f"### {report.STARTS_TITLE}\n\n| a | b |" in text and "last" not in text
    assert text.startswith("intro\n") and text.endswith("outro\n")
    report_md.write_text(report_md.read_text().replace(report.STARTS_TITLE, "Something else"))
    with pytest.raises(ValueError, match="no '## Starts"):
        report.update_readme(report_md, readme)
    report_md.write_text(report_md.read_text().replace("Something else", report.STARTS_TITLE))
    readme.write_text("no block\n")
    with pytest.raises(ValueError, match="no results block"):
        report.update_readme(report_md, readme)
