# The collapse mechanism in numbers (vimodes.mechanism): for the configured seeds of one data
# regime, the ELBO at the collapsed and at a single-mode solution, the saddle's gradient and
# curvature along slope_0 - slope_1, and each optimiser's escape time.

MECHANISM = STUDY.config["mechanism"]


rule mechanism:
    """One row per measured quantity and seed: data/tables/mechanism.{csv,parquet}.

    Not a localrule: two 10000-step fits and the full-data Monte Carlo take one to a few
    minutes of one core (JAX compilation included) at N = 100000.
    """
    input:
        data=data_blocks(MECHANISM["data_regime"], MECHANISM["seeds"]),
    output:
        csv="data/tables/mechanism.csv",
        parquet="data/tables/mechanism.parquet",
    log:
        "logs/report/mechanism.log",
    benchmark:
        "logs/benchmarks/report/mechanism.tsv"
    conda:
        "../envs/vimodes.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: attempt * (10 + 10 * len(MECHANISM["seeds"])),
    params:
        regime=MECHANISM["data_regime"],
        data_files=[
            data_file(MECHANISM["data_regime"], seed) for seed in MECHANISM["seeds"]
        ],
        data_regime=STUDY.config["data_regimes"][MECHANISM["data_regime"]],
        seed_base=STUDY.config["seed_base"],
        mechanism=MECHANISM,
        vi=STUDY.config["vi"],
        pymc_version=PYMC_VERSION,
    script:
        "../scripts/mechanism.py"
