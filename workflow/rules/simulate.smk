rule simulate:
    """Draw one block of data sets of the question's generator (data_block_size seeds of one
    regime, one file per seed): one process per block, not per data set."""
    output:
        directory("data/sim/{regime}/block-{block}"),
    log:
        "logs/simulate/{regime}/block-{block}.log",
    benchmark:
        "logs/benchmarks/simulate/{regime}/block-{block}.tsv"
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        regime=lambda wc: STUDY.config["data_regimes"][wc.regime],
        seed_base=STUDY.config["seed_base"],
        block_size=STUDY.config["data_block_size"],
    script:
        "../scripts/simulate.py"
