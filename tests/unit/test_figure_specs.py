"""The figure registry (vimodes.figure_specs) is the one place a figure is declared: the plot
functions, the workflow's plot_figure rule, the figures command, the report's captions and
sections all follow it, and a figure registered there alone is planned and reported."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from helpers import REPO, SMOKE
from vimodes import figure_specs
from vimodes.figure_specs import FIGURE_RULES, FIGURE_SPECS, FigureSpec

TEMPLATE = REPO / "workflow" / "report" / "figure.rst"
DUMMY = FigureSpec("dummy_share", "A dummy figure", "Share of fits per `method`; a test.",
                   category="9. Test", inputs=("fits", "cells"))


def _src_env(**extra) -> dict:
    path = os.pathsep.join([*extra.pop("prepend", []), str(REPO / "src"),
                            os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **extra}


def test_the_registry_imports_no_heavy_module():
    code = ("import sys, vimodes.figure_specs, vimodes.workflow_plan, vimodes.model_specs; "
            "print(sorted(m for m in ('pymc', 'pytensor', 'matplotlib', 'pandas', 'scipy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_src_env(), check=True).stdout
    assert out.strip() == "[]"


def test_plots_has_one_function_per_registered_figure():
    """The package's figures are drawn by plots.FIGURES; a figure from outside (the test
    plugin's) names its own function; every function takes exactly its spec's tables."""
    from vimodes import plots

    outside = {name for name, spec in FIGURE_SPECS.items() if spec.function}
    assert outside == {"plugin_share"}  # the test plugin's (conftest registers it)
    assert set(plots.FIGURES) == set(FIGURE_SPECS) - outside
    for name, spec in FIGURE_SPECS.items():
        function = plots.figure_function(name)
        assert tuple(inspect.signature(function).parameters) == spec.inputs, name
    with pytest.raises(KeyError, match="no function"):
        plots.figure_function("no_such_figure")


def test_the_report_takes_titles_captions_and_sections_from_the_registry():
    from vimodes import report

    assert dict(report.FIGURE_INFO) == {n: (s.title, s.caption) for n, s in FIGURE_SPECS.items()}
    source = inspect.getsource(report)
    for spec in FIGURE_SPECS.values():
        if not spec.function:  # the package's own figures (not the test plugin's)
            assert spec.section and f'Section("{spec.section}"' in source, spec.name


def test_no_caption_files_besides_the_template():
    captions = {p.stem for p in (REPO / "workflow" / "report").glob("*.rst")}
    assert captions.isdisjoint(FIGURE_SPECS) and "figure" in captions


@pytest.mark.parametrize("name", list(FIGURE_SPECS))
def test_caption_template_renders_every_caption(name):
    """What `snakemake --report` does with the caption: Jinja, then reStructuredText."""
    import jinja2
    from docutils.core import publish_parts

    spec = FIGURE_SPECS[name]
    snakemake = SimpleNamespace(params=SimpleNamespace(title=spec.title, caption=spec.rst_caption),
                                wildcards=SimpleNamespace(name=name),
                                config={"study_name": "smoke"})
    text = jinja2.Environment().from_string(TEMPLATE.read_text()).render(snakemake=snakemake)
    html = publish_parts(text, writer="html",
                         settings_overrides={"report_level": 2, "halt_level": 2})["body"]
    assert f"<strong>{spec.title}.</strong>" in html.replace("&#x27;", "'")
    assert "<tt" in html or "<code" in html or "`" not in spec.caption
    assert "smoke" in html


def test_rule_helpers_follow_the_registry(monkeypatch):
    monkeypatch.setitem(FIGURE_SPECS, DUMMY.name, DUMMY)
    pattern = figure_specs.name_pattern()
    assert re.fullmatch(pattern, "dummy_share") and re.fullmatch(pattern, "runtime")
    assert not re.fullmatch(pattern, "dummy")
    assert DUMMY.input_paths == {"fits": "data/tables/fits.parquet",
                                 "cells": "data/tables/cells.parquet"}
    assert DUMMY.rst_caption == "Share of fits per ``method``; a test."
    assert figure_specs.figures_in("") == ["plugin_share", "dummy_share"]  # in registry order
    with pytest.raises(ValueError, match="twice"):
        figure_specs.register(DUMMY)


def test_figures_command_allows_exactly_the_figure_rules():
    from vimodes.workflow_plan import figures_command

    command = figures_command([SMOKE])
    assert command.split("--allowed-rules ")[1].split() == list(FIGURE_RULES)
    makefile = (REPO / "Makefile").read_text()
    assert "--allowed-rules $$($(BIN)/python -m vimodes.figure_specs)" in makefile
    assert "plot_" not in makefile
    out = subprocess.run([sys.executable, "-m", "vimodes.figure_specs"], capture_output=True,
                         text=True, env=_src_env(), check=True).stdout
    assert out.split() == list(FIGURE_RULES)


def test_a_registered_figure_is_drawn_and_reported(tmp_path, monkeypatch):
    """In process: a FigureSpec and a function are all a new figure needs to be in the report."""
    import pandas as pd

    from vimodes import plots, report

    def fig_dummy_share(fits, cells):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(2, 2))
        fig.add_subplot().bar(["fits", "cells"], [len(fits), len(cells)])
        return fig

    monkeypatch.setitem(FIGURE_SPECS, DUMMY.name, DUMMY)
    monkeypatch.setitem(plots.FIGURES, DUMMY.name, fig_dummy_share)
    inputs = {}
    for table in DUMMY.inputs:
        inputs[table] = tmp_path / f"{table}.parquet"
        pd.DataFrame({"x": [1, 2]}).to_parquet(inputs[table])
    outputs = [tmp_path / "dummy_share.png", tmp_path / "dummy_share.svg"]
    plots.make_figure(DUMMY.name, inputs, outputs)
    assert all(p.stat().st_size > 0 for p in outputs)
    assert report.FIGURE_INFO[DUMMY.name] == (DUMMY.title, DUMMY.caption)
    assert set(plots.FIGURES) <= set(FIGURE_SPECS)
