rule simulate:
    """Draw one data set of the question's generator (per regime and seed)."""
    output:
        "data/sim/{regime}/seed-{seed}.nc",
    log:
        "logs/simulate/{regime}/seed-{seed}.log",
    benchmark:
        "logs/benchmarks/simulate/{regime}/seed-{seed}.tsv"
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        regime=lambda wc: STUDY.config["data_regimes"][wc.regime],
        seed_base=STUDY.config["seed_base"],
    script:
        "../scripts/simulate.py"
