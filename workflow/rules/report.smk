# The report: figure tables from the fit files, figures from tables only (one rule each), and
# report/report.html + report/report.md from the tables and figures (vimodes.plots, vimodes.report).

from vimodes.models import SLOPE_PRIOR_SD
from vimodes.report import grid_limits, report_dataset, study_command

# the data set of the log-density grid: seed 0 (or the smallest fitted seed) of regime `default`
REPORT_REGIME, REPORT_SEED = report_dataset(STUDY)
GRID_LOW, GRID_HIGH, GRID_POINTS = grid_limits(
    STUDY.config["data_regimes"][REPORT_REGIME]["slopes"]
)
CONFIG_FILES = workflow.overwrite_configfiles or workflow.configfiles

FIGURE_NAMES = [
    "outcome_rates",
    "question_model",
    "loss_traces",
    "slope_draws",
    "khat_by_class",
    "errors_by_class",
    "minority_share",
    "budget_curves",
    "runtime",
]
FIGURE_FILES = expand("figures/{name}.{ext}", name=FIGURE_NAMES, ext=["png", "svg"])
FIGURES_COMMAND = (
    study_command(CONFIG_FILES, "figures")
    + " --allowed-rules figures write_report "
    + " ".join(f"plot_{name}" for name in FIGURE_NAMES)
)


rule figures:
    """Rebuild every figure and the report from the existing tables only, never refitting:

    snakemake figures --cores 2 --allowed-rules figures write_report plot_outcome_rates
        plot_question_model plot_loss_traces plot_slope_draws plot_khat_by_class
        plot_errors_by_class plot_minority_share plot_budget_curves plot_runtime
        [--configfile config/smoke.yaml]
        [--forceall]

    (`--allowed-rules` makes the tables in data/tables/ inputs that must already exist;
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


rule posterior_grid:
    """The corrected model's log posterior density over a (w0, w1) grid for one data set
    (weights and sigma at their true values), and that data set's summary."""
    input:
        data_file(REPORT_REGIME, REPORT_SEED),
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
        low=GRID_LOW,
        high=GRID_HIGH,
        points=GRID_POINTS,
        slope_prior_sd=SLOPE_PRIOR_SD,
    script:
        "../scripts/posterior_grid.py"


rule plot_outcome_rates:
    """Headline figure: outcome-class rates with 95% Wilson intervals per cell."""
    input:
        cells="data/tables/cells.parquet",
    output:
        png=report(
            "figures/outcome_rates.png",
            caption="../report/outcome_rates.rst",
            category="1. Outcomes",
        ),
        svg="figures/outcome_rates.svg",
    log:
        "logs/figures/outcome_rates.log",
    benchmark:
        "logs/benchmarks/figures/outcome_rates.tsv"
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        figure="outcome_rates",
    script:
        "../scripts/plot_figure.py"


rule plot_question_model:
    """The question's model next to its ablations and the corrected model."""
    input:
        fits="data/tables/fits.parquet",
        data_summary="data/tables/data_summary.parquet",
    output:
        png=report(
            "figures/question_model.png",
            caption="../report/question_model.rst",
            category="2. The question's model",
        ),
        svg="figures/question_model.svg",
    log:
        "logs/figures/question_model.log",
    benchmark:
        "logs/benchmarks/figures/question_model.tsv"
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        figure="question_model",
    script:
        "../scripts/plot_figure.py"


rule plot_loss_traces:
    """Loss trajectories coloured by the final outcome class."""
    input:
        loss_traces="data/tables/loss_traces.parquet",
    output:
        png=report(
            "figures/loss_traces.png",
            caption="../report/loss_traces.rst",
            category="3. Trajectories and draws",
        ),
        svg="figures/loss_traces.svg",
    log:
        "logs/figures/loss_traces.log",
    benchmark:
        "logs/benchmarks/figures/loss_traces.tsv"
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        figure="loss_traces",
    script:
        "../scripts/plot_figure.py"


rule plot_slope_draws:
    """Slope draws of representative fits over the log posterior density."""
    input:
        representative_draws="data/tables/representative_draws.parquet",
        posterior_grid="data/tables/posterior_grid.parquet",
        data_summary="data/tables/data_summary.parquet",
    output:
        png=report(
            "figures/slope_draws.png",
            caption="../report/slope_draws.rst",
            category="3. Trajectories and draws",
        ),
        svg="figures/slope_draws.svg",
    log:
        "logs/figures/slope_draws.log",
    benchmark:
        "logs/benchmarks/figures/slope_draws.tsv"
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        figure="slope_draws",
    script:
        "../scripts/plot_figure.py"


rule plot_khat_by_class:
    """PSIS k-hat by outcome class."""
    input:
        fits="data/tables/fits.parquet",
    output:
        png=report(
            "figures/khat_by_class.png",
            caption="../report/khat_by_class.rst",
            category="4. Diagnostics",
        ),
        svg="figures/khat_by_class.svg",
    log:
        "logs/figures/khat_by_class.log",
    benchmark:
        "logs/benchmarks/figures/khat_by_class.tsv"
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        figure="khat_by_class",
    script:
        "../scripts/plot_figure.py"


rule plot_errors_by_class:
    """Sigma, slope and weight errors by outcome class."""
    input:
        fits="data/tables/fits.parquet",
    output:
        png=report(
            "figures/errors_by_class.png",
            caption="../report/errors_by_class.rst",
            category="4. Diagnostics",
        ),
        svg="figures/errors_by_class.svg",
    log:
        "logs/figures/errors_by_class.log",
    benchmark:
        "logs/benchmarks/figures/errors_by_class.tsv"
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        figure="errors_by_class",
    script:
        "../scripts/plot_figure.py"


rule plot_minority_share:
    """Minority share of the draws in a basin, for single-mode and spanning fits."""
    input:
        fits="data/tables/fits.parquet",
    output:
        png=report(
            "figures/minority_share.png",
            caption="../report/minority_share.rst",
            category="4. Diagnostics",
        ),
        svg="figures/minority_share.svg",
    log:
        "logs/figures/minority_share.log",
    benchmark:
        "logs/benchmarks/figures/minority_share.tsv"
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        figure="minority_share",
    script:
        "../scripts/plot_figure.py"


rule plot_budget_curves:
    """Single-mode and collapsed shares against the iteration budget (checkpoints)."""
    input:
        fits="data/tables/fits.parquet",
    output:
        png=report(
            "figures/budget_curves.png",
            caption="../report/budget_curves.rst",
            category="2. Factors",
        ),
        svg="figures/budget_curves.svg",
    log:
        "logs/figures/budget_curves.log",
    benchmark:
        "logs/benchmarks/figures/budget_curves.tsv"
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        figure="budget_curves",
    script:
        "../scripts/plot_figure.py"


rule plot_runtime:
    """Fit time per method."""
    input:
        fits="data/tables/fits.parquet",
    output:
        png=report(
            "figures/runtime.png",
            caption="../report/runtime.rst",
            category="5. Runtime",
        ),
        svg="figures/runtime.svg",
    log:
        "logs/figures/runtime.log",
    benchmark:
        "logs/benchmarks/figures/runtime.tsv"
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        figure="runtime",
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
        figures_command=FIGURES_COMMAND,
    script:
        "../scripts/write_report.py"
