rule simulate:
    """Draw one block of data sets of the question's generator (data_block_size seeds of one
    regime, one file per seed; the folder is named by its seed range): one process per block,
    not per data set."""
    output:
        directory("data/sim/{regime}/seeds-{first}-{last}"),
    log:
        "logs/simulate/{regime}/seeds-{first}-{last}.log",
    benchmark:
        "logs/benchmarks/simulate/{regime}/seeds-{first}-{last}.tsv"
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        regime=lambda wc: STUDY.config["data_regimes"][wc.regime],
        seed_base=STUDY.config["seed_base"],
    script:
        "../scripts/simulate.py"
