# The report: figure tables from the fit files, figures from tables only (one wildcard rule for
# every figure of the registry vimodes.figure_specs, drawn by vimodes.plots.FIGURES), and
# report/report.html + report/report.md from the tables and figures (vimodes.report).
# Planning imports neither PyMC nor matplotlib (tests/workflow/test_workflow.py checks it).

from vimodes.figure_specs import name_pattern
from vimodes.model_specs import SLOPE_PRIOR_SD
from vimodes.workflow_plan import (
    figures_command,
    grid_limits,
    report_dataset,
    study_command,
)

# the data set of the log-density grid: seed 0 (or the smallest fitted seed) of regime `default`
REPORT_REGIME, REPORT_SEED = report_dataset(STUDY)
GRID_LOW, GRID_HIGH, GRID_POINTS = grid_limits(
    STUDY.config["data_regimes"][REPORT_REGIME]["slopes"]
)
CONFIG_FILES = workflow.overwrite_configfiles or workflow.configfiles

FIGURE_NAMES = list(FIGURE_SPECS)
FIGURE_FILES = expand("figures/{name}.{ext}", name=FIGURE_NAMES, ext=["png", "svg"])


rule figures:
    """Rebuild every figure and the report from the existing tables only, never refitting:

    make figures  [CONFIGFILE=.test/config/smoke.yaml]
    = snakemake figures --cores 2 --allowed-rules $(python -m vimodes.figure_specs)
        [--configfile .test/config/smoke.yaml] [--forceall]

    (the allowed rules are vimodes.figure_specs.FIGURE_RULES: figures, write_report,
    plot_figure and the table rules loss_traces, representative_draws, nuts_chain_draws,
    posterior_grid;

    `--allowed-rules` makes the fit tables in data/tables/ inputs that must already exist;
    `--forceall` redraws figures that are up to date. Plain `snakemake figures` also works:
    it reruns only what is out of date, which after a finished study is only the figures.)
    """
    input:
        FIGURE_FILES,
        "report/report.html",
        "report/report.md",


rule loss_traces:
    """Per fit and stored loss value: the loss trajectory, with the fit's final outcome class."""
    input:
        fits="data/tables/fits.parquet",
        fit_dirs=all_chunk_outputs("data/fits/{cell}/chunk-{chunk}"),
    output:
        "data/tables/loss_traces.parquet",
    log:
        "logs/report/loss_traces.log",
    benchmark:
        "logs/benchmarks/report/loss_traces.tsv"
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/loss_traces.py"


rule representative_draws:
    """A subsample of the slope draws of a few representative fits per (method, outcome)."""
    input:
        fits="data/tables/fits.parquet",
        fit_dirs=all_chunk_outputs("data/fits/{cell}/chunk-{chunk}"),
    output:
        "data/tables/representative_draws.parquet",
    log:
        "logs/report/representative_draws.log",
    benchmark:
        "logs/benchmarks/report/representative_draws.tsv"
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        per_class=3,
        n_draws=200,
    script:
        "../scripts/representative_draws.py"


rule nuts_chain_draws:
    """Every draw of every chain of the slopes of one multi-chain NUTS fit whose chains
    span both permutation modes (empty without one), for the figure nuts_chains."""
    input:
        fits="data/tables/fits.parquet",
        fit_dirs=all_chunk_outputs("data/fits/{cell}/chunk-{chunk}"),
    output:
        "data/tables/nuts_chain_draws.parquet",
    log:
        "logs/report/nuts_chain_draws.log",
    benchmark:
        "logs/benchmarks/report/nuts_chain_draws.tsv"
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/nuts_chain_draws.py"


rule posterior_grid:
    """The corrected model's log posterior density over a (w0, w1) grid for one data set
    (weights and sigma at their true values), and that data set's summary."""
    input:
        data_blocks(REPORT_REGIME, [REPORT_SEED]),
    output:
        grid="data/tables/posterior_grid.parquet",
        summary="data/tables/data_summary.parquet",
    log:
        "logs/report/posterior_grid.log",
    benchmark:
        "logs/benchmarks/report/posterior_grid.tsv"
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        regime=REPORT_REGIME,
        seed=REPORT_SEED,
        low=GRID_LOW,
        high=GRID_HIGH,
        points=GRID_POINTS,
        slope_prior_sd=SLOPE_PRIOR_SD,
    script:
        "../scripts/posterior_grid.py"


rule plot_figure:
    """One figure of the registry vimodes.figure_specs, PNG and SVG, drawn from its tables only
    by vimodes.plots.FIGURES[name]; report category and caption from the registry."""
    input:
        unpack(figure_inputs),
    output:
        png=report(
            "figures/{name}.png",
            caption="../report/figure.rst",
            category=figure_category,
        ),
        svg="figures/{name}.svg",
    log:
        "logs/figures/{name}.log",
    benchmark:
        "logs/benchmarks/figures/{name}.tsv"
    wildcard_constraints:
        name=name_pattern(),
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        figure="{name}",
        title=figure_title,
        caption=figure_caption,
    script:
        "../scripts/plot_figure.py"


rule write_report:
    """report/report.html (figures embedded, opens offline) and report/report.md from the
    tables and figures, with the report's main tables as CSV."""
    input:
        cells="data/tables/cells.parquet",
        fits="data/tables/fits.parquet",
        data_summary="data/tables/data_summary.parquet",
        mechanism="data/tables/mechanism.parquet",
        contrasts="data/tables/contrasts.parquet",
        figures=expand("figures/{name}.png", name=FIGURE_NAMES),
        svgs=expand("figures/{name}.svg", name=FIGURE_NAMES),
        html_template=workflow.source_path("../report/report.html.j2"),
        md_template=workflow.source_path("../report/report.md.j2"),
    output:
        html="report/report.html",
        md="report/report.md",
        headline=report(
            "report/tables/headline.csv",
            caption="../report/headline_table.rst",
            category="0. Tables",
        ),
        question=report(
            "report/tables/question.csv",
            caption="../report/question_table.rst",
            category="0. Tables",
        ),
    log:
        "logs/report/write_report.log",
    benchmark:
        "logs/benchmarks/report/write_report.tsv"
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        study_name=STUDY.config["study_name"],
        config_hash=STUDY.config_hash(),
        seed_base=STUDY.config["seed_base"],
        command=study_command(CONFIG_FILES),
        figures_command=figures_command(CONFIG_FILES),
    script:
        "../scripts/write_report.py"
