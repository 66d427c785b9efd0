rule aggregate:
    """One tidy table with a row per fit (and per chain/path), the per-cell summary, and the
    paired contrasts between cells that differ in one factor (same seeds in every cell).
    """
    input:
        all_chunk_outputs("data/classified/{cell}/chunk-{chunk}.parquet"),
    output:
        fits_csv="data/tables/fits.csv",
        fits_parquet="data/tables/fits.parquet",
        cells_csv="data/tables/cells.csv",
        cells_parquet="data/tables/cells.parquet",
        by_class_csv="data/tables/metrics_by_class.csv",
        by_class_parquet="data/tables/metrics_by_class.parquet",
        contrasts_csv="data/tables/contrasts.csv",
        contrasts_parquet="data/tables/contrasts.parquet",
        regime_contrasts_csv="data/tables/regime_contrasts.csv",
        regime_contrasts_parquet="data/tables/regime_contrasts.parquet",
    log:
        "logs/aggregate.log",
    benchmark:
        "logs/benchmarks/aggregate.tsv"
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        regimes=STUDY.config["data_regimes"],
        inits=STUDY.config["inits"],
    script:
        "../scripts/aggregate.py"


rule summary:
    """A first report: the per-cell table of outcome counts and rates."""
    input:
        cells="data/tables/cells.parquet",
    output:
        "report/summary.md",
    log:
        "logs/summary.log",
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        config_hash=STUDY.config_hash(),
        study_name=STUDY.config["study_name"],
    script:
        "../scripts/summary.py"
