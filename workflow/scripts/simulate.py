from vimodes.runtime import script_logging

with script_logging(snakemake.log[0]):
    from vimodes.config import build_study
    from vimodes.simulate import simulate_dataset

    simulate_dataset(build_study(snakemake.config), snakemake.wildcards.regime,
                     int(snakemake.wildcards.seed), snakemake.output[0])
