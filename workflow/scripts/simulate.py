from vimodes.runtime import script_logging

with script_logging(snakemake.log[0]):
    from vimodes.config import build_study
    from vimodes.simulate import simulate_block

    simulate_block(build_study(snakemake.config), snakemake.wildcards.regime, snakemake.output[0])
